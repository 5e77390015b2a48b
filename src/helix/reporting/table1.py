"""Training-step benchmark: the paper's Table 1 as measurements (``helix bench``).

For each backbone and token count: time of one training step (forward, cross-entropy, backward,
AdamW step; bf16 autocast on CUDA, fp32 on CPU) on random audio, tokens per second, peak memory
(``torch.cuda.max_memory_allocated``; not measured on CPU), or "out of memory". Time is the mean of
``steps`` steps after ``warmup`` steps, synchronised. Token counts grow until every variant has run
out of memory (or ``max_tokens``): once a variant runs out, its longer runs are marked without
trying. The raw frontend makes 100 tokens per second of 16 kHz audio (Conv1d k = s = 160).
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from helix.models import create_model

SAMPLES_PER_TOKEN = 160  # raw frontend stride at 16 kHz

# label -> (registered model, config overrides); the paper's Table 1 rows
VARIANTS = {
    "Pure Mamba": ("pure_mamba_raw", {}),
    "HELIX (SDPA)": ("helix_raw", {"attention_impl": "sdpa"}),
    "HELIX (explicit attention)": ("helix_raw", {"attention_impl": "explicit"}),
    "Pure Attention (SDPA)": ("pure_attention_raw", {"attention_impl": "sdpa"}),
    "Pure Attention (explicit attention)": ("pure_attention_raw", {"attention_impl": "explicit"}),
    # fused BiMamba blocks that keep every activation instead of recomputing the cheap ones
    "Pure Mamba (blocks save all)": ("pure_mamba_raw", {"lean_blocks": False}),
    "HELIX (SDPA, blocks save all)": ("helix_raw", {"attention_impl": "sdpa", "lean_blocks": False}),
}
# every variant again with per-layer activation recomputation (ModelConfig.recompute)
RECOMPUTE_SUFFIX = " + recompute"


@dataclass
class BenchResult:
    variant: str
    tokens: int
    batch: int
    status: str  # "ok" | "out of memory" | "skipped (shorter run out of memory)" | "error: ..."
    step_ms: float | None = None
    tokens_per_s: float | None = None
    peak_gb: float | None = None
    params: int | None = None


@dataclass
class BenchSetup:
    device: str
    num_classes: int = 1313
    steps: int = 3
    warmup: int = 1
    scan_backend: str = "auto"
    extra: dict = field(default_factory=dict)


def resolve_variants(names: list[str] | None, recompute: bool = False) -> dict:
    variants = dict(VARIANTS)
    if recompute:
        variants.update({k + RECOMPUTE_SUFFIX: (m, {**o, "recompute": True}) for k, (m, o) in VARIANTS.items()})
    if not names:
        return variants
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; available: {list(variants)}")
    return {n: variants[n] for n in names}


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_step(variant: str, model_name: str, overrides: dict, tokens: int, batch: int,
                 setup: BenchSetup) -> BenchResult:
    """One configuration; out-of-memory is a result, not an exception."""
    device = torch.device(setup.device)
    cuda = device.type == "cuda"
    model = opt = wave = None
    try:
        torch.manual_seed(0)
        model = create_model(model_name, setup.num_classes, scan_backend=setup.scan_backend, **overrides).to(device)
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        wave = torch.randn(batch, tokens * SAMPLES_PER_TOKEN, device=device)
        labels = torch.randint(0, setup.num_classes, (batch,), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(wave), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(setup.warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(setup.steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t0) / setup.steps * 1e3
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None
        return BenchResult(variant, tokens, batch, "ok", ms, batch * tokens / (ms / 1e3), peak, params)
    except Exception as err:  # noqa: BLE001 - OOM comes as several exception types
        if _is_oom(err):
            return BenchResult(variant, tokens, batch, "out of memory")
        return BenchResult(variant, tokens, batch, f"error: {type(err).__name__}: {str(err)[:160]}")
    finally:
        del model, opt, wave
        _free(device)


def run_benchmark(setup: BenchSetup, tokens: list[int], batches: list[int], variants: dict,
                  extend: bool = False, max_tokens: int = 2_000_000, log=None) -> list[BenchResult]:
    """Every variant x batch x token count; with ``extend``, doubles the longest count until all OOM.

    ``log(line, result)`` is called after each measurement."""
    results = []
    for batch in batches:
        oom_at: dict[str, int] = {}
        counts = sorted(set(tokens))
        i = 0
        while i < len(counts):
            L = counts[i]
            for variant, (model_name, overrides) in variants.items():
                if variant in oom_at:
                    r = BenchResult(variant, L, batch, "skipped (shorter run out of memory)")
                else:
                    r = measure_step(variant, model_name, overrides, L, batch, setup)
                    if r.status != "ok":
                        oom_at[variant] = L
                results.append(r)
                if log is not None:
                    log(format_row(r), r)
            i += 1
            if extend and i == len(counts) and len(oom_at) < len(variants) and L * 2 <= max_tokens:
                counts.append(L * 2)
    return results


def format_row(r: BenchResult) -> str:
    if r.status != "ok":
        return f"{r.variant:40s} B={r.batch:<3d} L={r.tokens:<8d} {r.status}"
    mem = f"{r.peak_gb:6.2f} GB" if r.peak_gb is not None else "     n/a"
    return (f"{r.variant:40s} B={r.batch:<3d} L={r.tokens:<8d} {r.step_ms:9.1f} ms/step "
            f"{r.tokens_per_s:12,.0f} tok/s {mem}")


def environment(device: str) -> dict:
    """The run environment (:func:`helix.core.rundir.environment`) with the date and the Triton
    version, for the header of bench.md."""
    from helix.core.rundir import environment as run_environment

    env = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
           **run_environment(torch.device(device), world_size=1, precision="bf16" if device.startswith("cuda") else "fp32")}
    for key in ("command", "helix_overrides", "started", "hostname"):
        env.pop(key, None)
    if device.startswith("cuda"):
        try:  # the version without importing triton (only helix.ops imports it)
            from importlib.metadata import version

            env["triton"] = version("triton")
        except Exception:  # noqa: BLE001 - PackageNotFoundError and broken metadata alike
            env["triton"] = "not installed"
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def write_outputs(results: list[BenchResult], out_dir: str | Path, env: dict, command: str) -> dict[str, Path]:
    """bench.csv, bench.md (Table 1 layout: one row per variant, one column per length) and bench.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "bench.csv", "md": out / "bench.md", "png": out / "bench.png"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(results[0]).keys()) if results else ["variant"])
        w.writeheader()
        for r in results:
            w.writerow(asdict(r))
    lines = [f"# helix bench ({env.get('date')})", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "date"), "",
             f"Command: `{command}`", "",
             "One training step (forward, cross-entropy, backward, AdamW) on random audio; "
             "time is the mean of the timed steps; memory is peak allocated.", ""]
    for batch in sorted({r.batch for r in results}):
        rows = [r for r in results if r.batch == batch]
        lengths = sorted({r.tokens for r in rows})
        lines.append(f"## B = {batch}")
        lines.append("")
        lines.append("| variant | " + " | ".join(f"{L:,} tokens ({L / 100:g} s)" for L in lengths) + " |")
        lines.append("|---|" + "---|" * len(lengths))
        for variant in dict.fromkeys(r.variant for r in rows):
            cells = []
            for L in lengths:
                r = next((x for x in rows if x.variant == variant and x.tokens == L), None)
                cells.append(_cell(r))
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    paths["md"].write_text("\n".join(lines))
    plot_results(results, paths["png"])
    return paths


def _cell(r: BenchResult | None) -> str:
    if r is None:
        return ""
    if r.status == "ok":
        mem = f", {r.peak_gb:.1f} GB" if r.peak_gb is not None else ""
        return f"{r.step_ms:,.1f} ms{mem} ({r.tokens_per_s:,.0f} tok/s)"
    return "out of memory" if r.status.startswith(("out of memory", "skipped")) else r.status


def plot_results(results: list[BenchResult], path: Path) -> Path:
    """Log-log step time and peak memory against tokens, one line per variant and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = dict.fromkeys((r.variant, r.batch) for r in results)
    for variant, batch in groups:
        ok = sorted((r for r in results if r.variant == variant and r.batch == batch and r.status == "ok"),
                    key=lambda r: r.tokens)
        if not ok:
            continue
        label = f"{variant}, B={batch}"
        axes[0].plot([r.tokens for r in ok], [r.step_ms for r in ok], marker="o", label=label)
        if ok[0].peak_gb is not None:
            axes[1].plot([r.tokens for r in ok], [r.peak_gb for r in ok], marker="o", label=label)
    for ax, ylabel in zip(axes, ("training step (ms)", "peak memory (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
