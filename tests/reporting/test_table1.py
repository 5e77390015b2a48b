"""helix bench: the measurement loop, out-of-memory handling, outputs and CLI wiring (tiny CPU runs)."""

from __future__ import annotations

import csv

import pytest
import torch

import helix.reporting.table1 as bench
from helix.cli import build_parser, main
from helix.reporting.table1 import BenchResult, BenchSetup, resolve_variants, run_benchmark, write_outputs


def test_measure_step_on_cpu_reports_time_and_throughput():
    r = bench.measure_step("Pure Attention (SDPA)", "pure_attention_raw", {"attention_impl": "sdpa"},
                           tokens=3, batch=1, setup=BenchSetup("cpu", num_classes=5, steps=1, warmup=0))
    assert r.status == "ok", r.status
    assert r.step_ms > 0 and r.tokens_per_s == pytest.approx(3 / (r.step_ms / 1e3))
    assert r.peak_gb is None  # not measured on CPU
    assert r.params > 1_000_000


def test_out_of_memory_is_a_result_and_longer_runs_are_skipped(monkeypatch):
    calls = []

    def fake(variant, model_name, overrides, tokens, batch, setup):
        calls.append((variant, tokens))
        if variant == "big" and tokens >= 200:
            return BenchResult(variant, tokens, batch, "out of memory")
        return BenchResult(variant, tokens, batch, "ok", 1.0 * tokens, 1e3 * batch, 0.1 * tokens)

    monkeypatch.setattr(bench, "measure_step", fake)
    variants = {"big": ("m", {}), "small": ("m", {})}
    results = run_benchmark(BenchSetup("cpu"), [100, 200], [2], variants, extend=True, max_tokens=800,
                            log=lambda line, r: None)
    status = {(r.variant, r.tokens): r.status for r in results}
    assert status[("big", 200)] == "out of memory"
    assert status[("big", 400)].startswith("skipped") and ("big", 400) not in calls
    assert status[("small", 800)] == "ok" and ("small", 1600) not in status  # max_tokens bounds --extend


def test_oom_exception_is_caught(monkeypatch):
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    monkeypatch.setattr(bench, "create_model", boom)
    r = bench.measure_step("x", "pure_mamba_raw", {}, 10, 1, BenchSetup("cpu"))
    assert r.status == "out of memory"


def test_outputs_table_csv_and_plot(tmp_path):
    results = [BenchResult("Pure Mamba", 500, 8, "ok", 20.0, 2e5, 1.5, 6_700_000),
               BenchResult("Pure Mamba", 3000, 8, "ok", 90.0, 2.7e5, 6.0, 6_700_000),
               BenchResult("Pure Attention (explicit attention)", 500, 8, "ok", 10.0, 4e5, 2.0, 6_700_000),
               BenchResult("Pure Attention (explicit attention)", 3000, 8, "out of memory")]
    paths = write_outputs(results, tmp_path, {"date": "2026-11-23", "gpu": "test"}, "helix bench")
    md = paths["md"].read_text()
    assert "| Pure Mamba | 20.0 ms, 1.5 GB" in md and "out of memory" in md and "`helix bench`" in md
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 4 and rows[3]["status"] == "out of memory"
    assert paths["png"].stat().st_size > 1000


def test_variant_selection():
    assert "Pure Mamba + recompute" in resolve_variants(None, recompute=True)
    assert list(resolve_variants(["Pure Mamba"])) == ["Pure Mamba"]
    with pytest.raises(ValueError, match="unknown variant"):
        resolve_variants(["Pure Mamba 2"])


def test_cli_is_registered_and_validates(capsys):
    args = build_parser().parse_args(["bench", "--device", "cpu", "--tokens", "3", "--batch", "1"])
    assert args.func is not None and args.tokens == [3]
    assert main(["bench", "--device", "cpu", "--tokens", "0"]) == 1
    assert "positive" in capsys.readouterr().err


def test_environment_names_the_code_by_commit_and_source_digest(tmp_path):
    from helix.core.rundir import source_digest

    env = bench.environment("cpu")
    assert "git_commit" in env and env["source_sha256"] == source_digest()
    md = write_outputs([BenchResult("Pure Mamba", 500, 8, "ok", 20.0, 2e5, None, 6_700_000)], tmp_path, env,
                       "helix bench")["md"].read_text()
    assert f"source_sha256 {source_digest()}" in md
