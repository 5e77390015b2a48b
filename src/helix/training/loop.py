"""The training loop: ``Trainer(cfg).fit()`` -> summary dict. Readable in one sitting.

    helix train --config esc50 --fold 1                          # one GPU or CPU
    torchrun --standalone --nproc_per_node 2 -m helix.cli train --config speechcommands   # DDP

Per optimizer step: ``grad_accum_steps`` micro-batches, each augmented on the device (shift, gain,
noise, mixup), forward under autocast (bf16/fp16 on GPU, fp32 on CPU; parameters stay fp32),
backward (loss-scaled for fp16), unscale, clip the global norm, check the loss is finite, step
AdamW and the cosine schedule. After every epoch: validation and test evaluation, one JSONL record,
``best.pt`` when validation accuracy (mAP for multi-label data) improves, ``last.pt`` always (and every
``checkpoint_every_steps``). ``resume=True`` continues from ``last.pt`` exactly: data order comes
from (seed, epoch), augmentation from (seed, step, rank), so nothing else needs replaying;
``allow_changes`` names optimiser settings a resumed run may change (e.g. a lower ``optim.lr``
after a NaN stop). The run holds a lock on its folder from set-up to the end.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from helix.core.evaluate import evaluate
from helix.core.metrics import (METRIC_NAMES, PAPER_PROTOCOL_LABEL, best_val_index, summarize_history, task_metric,
                                top1_hits)
from helix.training.augment import augment_waveforms, step_generators
from helix.models.checkpoint import load_checkpoint, save_checkpoint
from helix.models.loading import model_payload
from helix.training.config import TrainConfig
from helix.training.config_io import ENV_OVERRIDES, env_overrides
from helix.core.distributed import all_reduce_sum, setup_distributed
from helix.training.loaders import (RunData, build_run_data, eval_loader, micro_batch_size, start_epoch,
                                   train_loader)
from helix.training.mixup import mixup_batch, mixup_loss
from helix.core.rundir import RunFolderLock, RunLogger, environment
from helix.training.schedule import build_optimizer, build_scheduler
from helix.core.threads import choose_cpu_threads, set_cpu_threads


HEAD_PREFIX = "head."
"""Parameter-name prefix of every registered model's classifier head (``model.head``)."""

# settings that do not change the optimisation, so a resumed run may use other values
RESUME_MAY_CHANGE = ("out_dir", "device", "precision", "compile", "log_every_steps", "checkpoint_every_steps",
                     "eval_batch_size", "data.root", "data.num_workers", "cpu_threads")
# optimiser settings a resumed run may change when asked to (``--allow-changes``): the model, the
# data and the schedule's length stay those of the run, so the steps already taken keep their meaning
RESUME_MAY_CHANGE_ON_REQUEST = ("optim.lr", "optim.min_lr", "optim.weight_decay", "optim.betas", "optim.grad_clip")


def config_changes(old: dict, new: dict, prefix: str = "", allowed: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for dotted keys whose values differ between two config dicts, minus
    :data:`RESUME_MAY_CHANGE` and ``allowed``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), prefix + key
        if isinstance(a, dict) and isinstance(b, dict) and key not in ("task_kwargs", "overrides"):
            out += config_changes(a, b, name + ".", allowed)
        elif name not in RESUME_MAY_CHANGE and name not in allowed and _plain(a) != _plain(b):
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def check_allowed_changes(keys) -> tuple[str, ...]:
    """Validate ``--allow-changes`` keys (bare ``lr`` means ``optim.lr``)."""
    out = []
    for key in keys:
        full = key if key.startswith("optim.") else f"optim.{key}"
        if full not in RESUME_MAY_CHANGE_ON_REQUEST:
            raise ValueError(f"--allow-changes takes {', '.join(RESUME_MAY_CHANGE_ON_REQUEST)}; got {key!r} "
                             f"(the model, data and schedule length of a run cannot change on resume)")
        out.append(full)
    return tuple(out)


def _with_defaults(config: dict, defaults: dict) -> dict:
    """``config`` with the keys it lacks taken from ``defaults`` (nested sections merged)."""
    out = dict(config)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key], dict) and isinstance(value, dict) and key not in ("task_kwargs", "overrides"):
            out[key] = _with_defaults(out[key], value)
    return out


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the run stopped without writing a checkpoint."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 (or fp16 on GPUs without bf16) on CUDA, fp32 on CPU."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise ValueError(f"precision={precision} needs a CUDA device; CPU training runs in fp32")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def tokens_per_clip(model: torch.nn.Module, num_samples: int, device: torch.device) -> int | None:
    """Sequence length L the backbone sees for one clip (for tokens/s); None if the model cannot say."""
    if hasattr(model, "num_tokens"):
        return int(model.num_tokens(num_samples))
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        return None
    with torch.no_grad():
        return int(frontend(torch.zeros(1, num_samples, device=device)).shape[1])


@dataclass
class TrainState:
    """Everything besides model/optimizer/scheduler state that a resumed run needs."""
    epoch: int = 0
    """Completed epochs (the epoch in progress is ``epoch + 1``, 1-based in the logs)."""
    batch_in_epoch: int = 0
    """Optimizer steps already done in the epoch in progress."""
    step: int = 0
    """Optimizer steps done overall."""
    epoch_sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0})
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: TrainConfig, data: RunData | None = None, resume: bool = False,
                 verbose: bool = True, print_summary: bool = True, allow_changes: tuple[str, ...] = ()):
        """``data`` replaces the datasets named in ``cfg.data`` (tests, notebooks); ``verbose``
        prints progress on rank 0, ``print_summary`` the end-of-run table; ``allow_changes``
        (with ``resume``) lists optimiser settings that may differ from the checkpoint's config."""
        self.cfg, self.data, self.resume, self.verbose = cfg, data, resume, verbose
        self.print_summary = print_summary
        self.allow_changes = check_allowed_changes(allow_changes)
        self.state = TrainState()
        self.logger: RunLogger | None = None
        self._lock: RunFolderLock | None = None
        self._threads_before: int | None = None
        self._resume_changes: list[str] = []
        self._best_state: dict | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg = self.cfg
        kind = "cuda" if resolve_device(cfg.device).type == "cuda" else "cpu"
        self.env = setup_distributed(kind)
        self.device = resolve_device(cfg.device, self.env.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.out = Path(cfg.out_dir)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        if self.env.is_main:
            # before anything is read or written: a second run into this folder stops here
            self._lock = RunFolderLock(self.out).acquire()
        ckpt = self._resume_checkpoint()

        torch.manual_seed(cfg.seed)  # identical init on every rank
        np.random.seed(cfg.seed)
        if self.data is None:
            self.data = build_run_data(cfg.data)
        self.num_classes = len(self.data.class_names)
        # multi-label data (label vectors): sigmoid outputs, BCE, selection on validation mAP
        self.multilabel = bool(getattr(self.data, "multilabel", False))
        self.metric = task_metric(self.multilabel)

        from helix.models import create_model

        self.raw_model = create_model(cfg.model.name, self.num_classes, **cfg.model_kwargs())
        if cfg.init and ckpt is None:  # a resumed run continues from its own weights
            self._init_weights(cfg.init)
        if cfg.model.freeze_backbone:
            # before the DDP wrapper, which registers the parameters that take gradients
            for name, p in self.raw_model.named_parameters():
                p.requires_grad_(name.startswith(HEAD_PREFIX))
            self._say("backbone frozen: training the classifier head only")
        self.raw_model = self.raw_model.to(self.device)
        self.num_params = sum(p.numel() for p in self.raw_model.parameters())
        self.clip_seconds = self.data.clip_seconds or cfg.data.clip_seconds
        if not self.clip_seconds:
            raise ValueError("data.clip_seconds is null and the datasets do not say their clip length; set it")
        if cfg.data.clip_seconds is None:
            self._say(f"clip length {self.clip_seconds:g} s (chosen from the data's durations; data.clip_seconds=S to change)")
        self.num_samples = int(round(self.clip_seconds * cfg.data.sample_rate))
        self.tokens = tokens_per_clip(self.raw_model, self.num_samples, self.device)
        model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        # evaluation bypasses the DDP wrapper: ranks may hold one batch more or less of the
        # evaluation set, and DDP's per-forward collectives would then wait forever
        self.eval_model = model
        if self.env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = model

        o = cfg.optim
        self.micro = micro_batch_size(o.batch_size, self.env.world_size, o.grad_accum_steps)
        pin = self.device.type == "cuda"
        self.train_loader = train_loader(self.data.train, self.micro, self.env, cfg.seed, cfg.data.num_workers, pin,
                                         sample_weights=self._balance("data.balanced_sampling", cfg.data.balanced_sampling))
        self.class_weights = self._balance("optim.class_weights", o.class_weights == "balanced", loss=True)
        eval_bs = cfg.eval_batch_size or self.micro
        self.val_loader = eval_loader(self.data.val, eval_bs, self.env, cfg.data.num_workers, pin)
        self.test_loader = eval_loader(self.data.test, eval_bs, self.env, cfg.data.num_workers, pin)
        per_rank = len(self.data.train) // self.env.world_size
        self.steps_per_epoch = per_rank // self.micro // o.grad_accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"training set too small for one step of global batch {o.batch_size}")
        self._setup_threads()

        self.optimizer = build_optimizer(self.raw_model, o.lr, o.weight_decay, o.betas, o.backbone_lr_scale, HEAD_PREFIX)
        total = self.steps_per_epoch * o.epochs
        self.scheduler = build_scheduler(self.optimizer, total, int(o.warmup_epochs * self.steps_per_epoch), o.min_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext())

        if ckpt is not None:
            self._load_training_state(ckpt)
        resumed = ckpt is not None
        self.logger = RunLogger(self.out, self.env.is_main, self.state.step if resumed else None,
                                self.state.epoch if resumed else None)
        self.logger.write_config(cfg)
        self.logger.write_env(environment(self.device, self.env.world_size, self.precision, env_overrides()))
        if env_overrides():
            self._say(f"{ENV_OVERRIDES}: {' '.join(env_overrides())} (applied after the command line)")
        if self._resume_changes:
            self.logger.log_event({"event": "resumed_with_changes", "step": self.state.step,
                                   "changes": self._resume_changes})
        self.show_bar = self.verbose and self.env.is_main and sys.stderr.isatty()

    def _resume_checkpoint(self) -> dict | None:
        if not self.resume:
            if self.last_path.exists():
                raise ValueError(f"{self.out} already holds a run ({self.last_path.name}); pass --resume to "
                                 f"continue it or choose another --out")
            return None
        if not self.last_path.exists():
            self._say(f"no checkpoint in {self.out}; starting a new run there")
            return None
        ckpt = load_checkpoint(self.last_path, map_location="cpu")
        # a run written before a config field existed ran with that field's default
        old = _with_defaults(ckpt.get("config", {}), TrainConfig().to_dict())
        changed = config_changes(old, self.cfg.to_dict(), allowed=self.allow_changes)
        if changed:
            hint = [c.split(":")[0] for c in changed if c.split(":")[0] in RESUME_MAY_CHANGE_ON_REQUEST]
            hint = f"; to change them on purpose add --allow-changes {','.join(hint)}" if len(hint) == len(changed) else ""
            raise ValueError(f"--resume with a different config would not continue the same run; changed: "
                             f"{', '.join(changed)} (only {', '.join(RESUME_MAY_CHANGE)} may change{hint})")
        self._resume_changes = [c for c in config_changes(old, self.cfg.to_dict())
                                if c.split(":")[0] in self.allow_changes]
        return ckpt

    def _balance(self, option: str, wanted: bool, loss: bool = False):
        """Class-imbalance remedies from the training labels (:mod:`helix.data.sampling`): per-item
        sampling weights (N,), or per-class loss weights (C,) on the device; None when not ``wanted``."""
        if not wanted:
            return None
        from helix.data.sampling import balanced_sample_weights, class_loss_weights

        try:
            if loss:
                weights = class_loss_weights(self.data.train, self.multilabel)
                return torch.as_tensor(weights, dtype=torch.float32, device=self.device)
            return balanced_sample_weights(self.data.train)
        except TypeError as err:  # a dataset without class labels (the synthetic tasks)
            raise ValueError(f"{option}: {err}") from None

    def _init_weights(self, path: str) -> None:
        """Start from ``path``'s weights (``helix.models.load_model``: no code is unpickled). The
        classifier head keeps its fresh initialisation when the checkpoint's classes differ."""
        from helix.models import load_model

        loaded = load_model(path)
        if loaded.sample_rate != self.cfg.data.sample_rate:
            raise ValueError(f"--init {path}: the model was trained at {loaded.sample_rate} Hz, this run is at "
                             f"{self.cfg.data.sample_rate} Hz; set data.sample_rate={loaded.sample_rate}")
        source, target = loaded.model.state_dict(), self.raw_model.state_dict()
        same_classes = loaded.class_names == list(self.data.class_names)
        keep = [k for k in target if same_classes or not k.startswith(HEAD_PREFIX)]
        differ = sorted([k for k in keep if k not in source or source[k].shape != target[k].shape]
                        + [k for k in source if k not in target])
        if differ:
            raise ValueError(f"--init {path}: its network does not match model.name={self.cfg.model.name} with this "
                             f"run's options ({len(differ)} weights differ, e.g. {differ[0]}); use the same model "
                             "name and model options as the checkpoint's run")
        self.raw_model.load_state_dict({k: source[k] for k in keep}, strict=False)
        if same_classes:
            self._say(f"initialised from {path} (every weight, classes unchanged)")
        else:
            self._say(f"initialised from {path}; classifier head re-initialised: the checkpoint has "
                      f"{len(loaded.class_names)} classes ({_names(loaded.class_names)}), the data "
                      f"{self.num_classes} ({_names(self.data.class_names)})")

    def _setup_threads(self) -> None:
        """Pick the intra-op thread count of a CPU run (restored when ``fit`` ends)."""
        if self.device.type != "cpu" and self.cfg.cpu_threads is None:
            return
        width = getattr(getattr(self.raw_model, "config", None), "d_model", 256)
        activation = self.micro * (self.tokens or self.num_samples // 160) * width
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads, why = choose_cpu_threads(self.cfg.cpu_threads, activation, self.cfg.data.num_workers, local_world)
        self._threads_before = set_cpu_threads(threads)
        self._say(f"CPU threads: {torch.get_num_threads()} ({why})")

    def _load_training_state(self, ckpt: dict) -> None:
        self.raw_model.load_state_dict(ckpt["model_state"])
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.scheduler.load_state_dict(ckpt["scheduler_state"])
        if self._resume_changes:
            self._apply_optimizer_changes(fresh)
        if ckpt.get("scaler_state") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler_state"])
        rng = ckpt.get("rng_state") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        t = ckpt["train_state"]
        self.state = TrainState(epoch=ckpt["epoch"], batch_in_epoch=t["batch_in_epoch"], step=ckpt["step"],
                                epoch_sums=dict(t["epoch_sums"]), history=list(t["history"]))
        self._say(f"resumed {self.out} at epoch {self.state.epoch + 1}, step {self.state.step}")

    def _apply_optimizer_changes(self, fresh: list[dict]) -> None:
        """After loading the checkpoint's optimizer and schedule, put back the settings that
        ``--allow-changes`` let change: betas and weight decay from the new config, and the
        schedule's peak (``base_lrs``) with the learning rate at the current step recomputed
        along the new cosine (``min_lr`` lives in the new schedule's function)."""
        for group, new in zip(self.optimizer.param_groups, fresh):
            group.update({k: new[k] for k in ("betas", "weight_decay", "initial_lr") if k in new})
        sched = self.scheduler
        sched.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        for group, base, fn in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(sched.last_epoch)
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self._say(f"resumed with changed settings: {', '.join(self._resume_changes)}")

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, training_state: bool) -> dict:
        cfg, st = self.cfg, self.state
        payload = {
            **model_payload(cfg.model.name, self.num_classes, cfg.model_kwargs(), self.raw_model,
                            self.data.class_names, cfg.data.sample_rate, self.clip_seconds,
                            multilabel=self.multilabel),
            "config": cfg.to_dict(),
            "epoch": st.epoch,
            "step": st.step,
            "metrics": st.history[-1] if st.history else {},
        }
        if training_state:
            payload.update(
                optimizer_state=self.optimizer.state_dict(),
                scheduler_state=self.scheduler.state_dict(),
                scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                rng_state={"torch": torch.get_rng_state(),
                           "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
                train_state={"batch_in_epoch": st.batch_in_epoch, "epoch_sums": dict(st.epoch_sums),
                             "history": list(st.history)},
            )
        return payload

    def _save(self, path: Path, training_state: bool = True) -> None:
        if self.env.is_main:
            save_checkpoint(path, self._payload(training_state))

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train to ``optim.epochs`` (or continue a resumed run) and return the run summary."""
        try:
            self.setup()
            cfg, st = self.cfg, self.state
            for epoch in range(st.epoch, cfg.optim.epochs):
                train = self._train_epoch(epoch)
                val = evaluate(self.eval_model, self.val_loader, self.device, self.autocast)
                test = evaluate(self.eval_model, self.test_loader, self.device, self.autocast)
                record = {"epoch": epoch + 1, "step": st.step, "lr": self.optimizer.param_groups[0]["lr"],
                          **train, "val_loss": val["loss"], "val_acc": val["acc"],
                          "test_loss": test["loss"], "test_acc": test["acc"]}
                if self.multilabel:
                    record.update(val_map=val["map"], val_macro_auc=val["macro_auc"],
                                  test_map=test["map"], test_macro_auc=test["macro_auc"])
                st.history.append(record)
                st.epoch, st.batch_in_epoch = epoch + 1, 0
                st.epoch_sums = TrainState().epoch_sums
                self.logger.log_epoch(record)
                if best_val_index(st.history, self.metric) == len(st.history) - 1:
                    self._save(self.best_path, training_state=False)
                    # every rank keeps the best weights for the end-of-run diagnosis
                    self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.raw_model.state_dict().items()}
                self._save(self.last_path)
                self._say(_epoch_line(record, cfg.optim.epochs, self.metric))  # stays on screen after the bar closes
            summary = self._summary()
            if not self.multilabel:
                summary.update(self._diagnose())
            self.logger.write_summary(summary)
            if self.verbose and self.print_summary and self.env.is_main:
                from helix.core.metrics import run_summary_table
                print(run_summary_table(summary))
            return summary
        finally:
            if self.logger is not None:
                self.logger.close()
            if self._lock is not None:
                self._lock.release()
            if self._threads_before is not None:
                set_cpu_threads(self._threads_before)

    def _train_epoch(self, epoch: int) -> dict:
        cfg, st, sums = self.cfg, self.state, self.state.epoch_sums
        accum = cfg.optim.grad_accum_steps
        start_epoch(self.train_loader, cfg.seed, epoch, self.env.rank, st.batch_in_epoch * accum * self.micro)
        batches = iter(self.train_loader)
        bar = tqdm(total=self.steps_per_epoch, initial=st.batch_in_epoch, disable=not self.show_bar,
                   desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="step", dynamic_ncols=True, leave=False)
        self.model.train()
        # Single-process bf16/fp32 runs read a step's numbers one step late: the update itself is
        # guarded on the device (fused AdamW's found_inf), so the host never waits for the GPU on the
        # critical path. DDP (the loss is all-reduced for the logs) and fp16 (the scaler) read at once.
        defer = not self.env.enabled and not self.scaler.is_enabled()
        pending = None
        self._mark = time.perf_counter()
        for batch in range(st.batch_in_epoch, self.steps_per_epoch):
            lr = self.optimizer.param_groups[0]["lr"]
            stats, count = self._optimizer_step(batches)
            st.step, st.batch_in_epoch = st.step + 1, batch + 1
            if pending is not None:
                self._account(*pending, bar)
            pending = (stats, count, lr, epoch, batch, st.step)
            save_now = cfg.checkpoint_every_steps and st.step % cfg.checkpoint_every_steps == 0 \
                and batch + 1 < self.steps_per_epoch
            if not defer or save_now:
                self._account(*pending, bar)
                pending = None
            if save_now:
                self._save(self.last_path)
        if pending is not None:
            self._account(*pending, bar)
        bar.close()
        loss_sum, correct, count = all_reduce_sum([sums["loss"], sums["correct"], sums["count"]], self.device)
        clips_per_s = count / max(sums["seconds"], 1e-9)
        return {"train_loss": loss_sum / count, "train_acc": correct / count, "epoch_seconds": sums["seconds"],
                "clips_per_s": clips_per_s,
                "tokens_per_s": clips_per_s * self.tokens if self.tokens else None}

    def _account(self, stats: torch.Tensor, count: int, lr: float, epoch: int, batch: int, step: int,
                 bar) -> None:
        """Read one finished step's (loss, grad norm, hits) on the host: stop on non-finite values,
        add to the epoch sums, log, and advance the progress bar."""
        cfg, sums = self.cfg, self.state.epoch_sums
        loss, norm, hits = stats.tolist()
        bad = not math.isfinite(loss) or (not self.scaler.is_enabled() and not math.isfinite(norm))
        if self.env.enabled:
            # the global mean loss for the logs, and a stop that every rank takes together
            loss_sum, n_bad = all_reduce_sum([0.0 if bad else loss, float(bad)], self.device)
            if not n_bad:
                loss = loss_sum / self.env.world_size
            bad = n_bad > 0
        if bad:
            self._stop_nonfinite(loss, norm, epoch, batch, step)
        now = time.perf_counter()
        seconds, self._mark = now - self._mark, now
        for k, v in (("loss", loss * count), ("correct", hits), ("count", count), ("seconds", seconds)):
            sums[k] += v
        if step % cfg.log_every_steps == 0:
            self.logger.log_step(step, {"loss": loss, "grad_norm": norm, "lr": lr})
        rate = count * self.env.world_size / max(seconds, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{sums['correct'] / max(sums['count'], 1):.3f}",
                        **{"tok/s" if self.tokens else "clips/s": f"{rate * (self.tokens or 1):.0f}"})
        bar.update(1)

    def _optimizer_step(self, batches) -> tuple[torch.Tensor, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches
        -> ((mean loss, gradient norm before clipping, hits) on the device, examples)."""
        cfg, accum = self.cfg, self.cfg.optim.grad_accum_steps
        losses, correct, count = [], torch.zeros((), device=self.device), 0
        for micro in range(accum):
            wave, labels = next(batches)
            wave = wave.to(self.device, non_blocking=True).float()       # (B, T)
            labels = labels.to(self.device, non_blocking=True)           # (B,) or (B, C) label vectors
            labels_b, lam = labels, 1.0
            if cfg.augment.enabled:
                host, dev = step_generators(cfg.seed, self.state.step * accum + micro, self.env.rank, self.device)
                wave = augment_waveforms(wave, cfg.augment, cfg.data.sample_rate, host, dev)
                wave, labels, labels_b, lam = mixup_batch(wave, labels, cfg.augment.mixup_alpha, host)
            # only the last micro-batch all-reduces gradients under DDP
            sync = self.model.no_sync() if self.env.enabled and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.autocast:
                    logits = self.model(wave)                            # (B, C)
                loss = mixup_loss(logits, labels, labels_b, lam, self.class_weights)
                self.scaler.scale(loss / accum).backward()
            losses.append(loss.detach())
            correct += top1_hits(logits.detach(), labels if lam >= 0.5 else labels_b)
            count += labels.shape[0]
        self.scaler.unscale_(self.optimizer)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        stats = torch.stack([torch.stack(losses).mean().float(), grad_norm.float(), correct.float()])
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # fp16: the scaler skips overflowing updates itself
            self.scaler.update()
        else:
            # a non-finite loss or gradient norm skips this update on the device, so the model is
            # never trained on garbage even before the host reads the numbers
            self.optimizer.found_inf = (~torch.isfinite(stats[:2]).all()).float()
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats, count

    def _stop_nonfinite(self, loss: float, norm: float, epoch: int, batch: int, step: int) -> None:
        if self.last_path.exists():
            ck = load_checkpoint(self.last_path)
            keep = f"the last good checkpoint {self.last_path} (epoch {ck['epoch']}, step {ck['step']}) is kept"
        else:
            keep = "no checkpoint had been written yet"
        msg = (f"non-finite training {'loss' if not math.isfinite(loss) else 'gradient norm'} "
               f"(loss={loss}, grad norm={norm}) at optimizer step {step} (epoch {epoch + 1}, batch "
               f"{batch + 1}/{self.steps_per_epoch}); that update was skipped so the model is not trained "
               f"on garbage; {keep}. To continue with a 10x lower learning rate: {self.resume_command()} "
               f"(optim.grad_clip, optim.betas, optim.weight_decay and precision change the same way)")
        self.logger.log_event({"event": "non_finite_loss", "step": step, "epoch": epoch + 1, "loss": loss,
                               "grad_norm": norm})
        raise NonFiniteLossError(msg)

    def resume_command(self, lr_factor: float = 0.1) -> str:
        """The command that continues this run from ``last.pt`` with the peak learning rate scaled."""
        o = self.cfg.optim
        lr = float(f"{o.lr * lr_factor:.3g}")
        keys, sets = ["optim.lr"], [f"optim.lr={lr:g}"]
        if o.min_lr > lr:  # the schedule's floor must stay below its peak
            keys.append("optim.min_lr")
            sets.append(f"optim.min_lr={lr:g}")
        return " ".join(["helix train --out", shlex.quote(str(self.out)), "--resume --allow-changes",
                         ",".join(keys), *sets])

    # ------------------------------------------------------------------ reporting
    def _summary(self) -> dict:
        cfg = self.cfg
        summary = summarize_history(self.state.history, self.metric)
        summary.update(
            model=cfg.model.name, dataset=cfg.data.name, fold=cfg.data.fold, num_classes=self.num_classes,
            multilabel=self.multilabel, chance_acc=None if self.multilabel else 1.0 / self.num_classes, params=self.num_params, tokens_per_clip=self.tokens,
            epochs_planned=cfg.optim.epochs, val_source=self.data.val_source, device=str(self.device),
            precision=self.precision, world_size=self.env.world_size, out_dir=str(self.out),
            train_seconds=sum(r["epoch_seconds"] for r in self.state.history),
            best_test_label=PAPER_PROTOCOL_LABEL,
        )
        return summary

    def _diagnose(self) -> dict:
        """Per-class test accuracy and F1 and the confusion matrix of the best-validation model
        (``per_class.csv``, ``confusion_matrix.png`` in the run folder); its summary entries."""
        import copy

        state = self._best_state
        if state is None:  # a resumed run whose best epoch came before the interruption
            if not self.best_path.exists():
                return {}
            state = load_checkpoint(self.best_path)["model_state"]
        model = copy.deepcopy(self.raw_model)
        model.load_state_dict(state)
        result = evaluate(model, self.test_loader, self.device, self.autocast, keep_outputs=True)
        if not self.env.is_main or result["count"] == 0:
            return {}
        from helix.core.diagnosis import write_diagnosis

        best = best_val_index(self.state.history, self.metric)
        epoch = self.state.history[best]["epoch"] if best is not None else "?"
        title = f"{self.cfg.model.name}, test set, best validation epoch {epoch}"
        d = write_diagnosis(self.out, result["targets"], result["scores"].argmax(1), self.data.class_names, title)
        self._say(f"per-class test accuracy and F1 at the best validation epoch: {d['csv']}; confusion matrix: {d['png']}")
        return {"test_macro_f1_at_best_val": d["macro_f1"], "test_balanced_acc_at_best_val": d["balanced_accuracy"]}

    def _say(self, text: str) -> None:
        if self.verbose and self.env.is_main:
            print(text, flush=True)


def _names(names, shown: int = 5) -> str:
    return ", ".join(list(names)[:shown]) + (", ..." if len(names) > shown else "")


def _epoch_line(r: dict, epochs: int, metric: str = "acc") -> str:
    rate = f"{r['tokens_per_s']:.0f} tok/s" if r.get("tokens_per_s") else f"{r['clips_per_s']:.1f} clips/s"
    scores = (f"val {r['val_acc']:.3f}  test {r['test_acc']:.3f}" if metric == "acc" else
              f"val {METRIC_NAMES[metric]} {r['val_' + metric]:.3f}  test {METRIC_NAMES[metric]} {r['test_' + metric]:.3f}")
    return (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  train {r['train_acc']:.3f}  "
            f"{scores}  lr {r['lr']:.2e}  {rate}  {r['epoch_seconds']:.1f}s")
