"""The training loop: ``Trainer(cfg).fit()`` -> summary dict. Readable in one sitting.

    helix train --config esc50 --fold 1                          # one GPU or CPU
    torchrun --standalone --nproc_per_node 2 -m helix.cli train --config speechcommands   # DDP

Each optimizer step (:mod:`helix.training.step`: augment, autocast forward, backward, clip, AdamW,
schedule) is checked for a finite loss here. After every epoch: validation and test evaluation, one
JSONL record, ``best.pt`` when validation accuracy (mAP for multi-label data) improves, ``last.pt``
always (and every ``checkpoint_every_steps``). ``resume=True`` continues from ``last.pt`` exactly
(:mod:`helix.training.resume`); ``allow_changes`` names optimiser settings a resumed run may
change (e.g. a lower ``optim.lr`` after a NaN stop). The run holds a lock on its folder throughout.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from helix.core.evaluate import evaluate
from helix.core.metrics import METRIC_NAMES, PAPER_PROTOCOL_LABEL, best_val_index, summarize_history, task_metric
from helix.models.checkpoint import load_checkpoint, save_checkpoint
from helix.training.config import TrainConfig
from helix.training.config_io import ENV_OVERRIDES, env_overrides
from helix.core.distributed import all_reduce_sum, broadcast_module, setup_distributed
from helix.training.loaders import (RunData, TimedBatches, build_run_data, eval_loader, micro_batch_size, start_epoch,
                                   train_loader)
from helix.training.resume import (HEAD_PREFIX, TrainState, check_allowed_changes, check_resume_config, init_weights,
                                   nonfinite_message, restore_training_state, resume_command, training_payload)
from helix.core.rundir import RunFolderLock, RunLogger, environment
from helix.training.schedule import build_optimizer, build_scheduler, current_lr
from helix.training.step import GraphedSteps, StepParts, optimizer_step
from helix.core.threads import choose_cpu_threads, default_loader_workers, set_cpu_threads
from helix.utils.interrupts import check_interrupt, interrupts_deferred


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


class StepStats:
    """A step's (loss, grad norm, hits) on their way to the host.

    On CUDA a non-blocking copy into pinned memory, with an event, is queued right after the step, so
    reading the values waits for that step only. ``.tolist()`` on the device tensor queues its copy
    behind whatever was launched since: read one step late, that is the next step, and the GPU then
    idled while the host prepared the batch after it (a captured 5 s Pure Mamba raw step, B=32, on the
    H200: 19.2 ms before, 17.6 ms after; benchmarks/RESULTS.md section 19)."""

    def __init__(self, stats: torch.Tensor):
        self.event = None
        if stats.device.type == "cuda":
            self.values = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            self.values.copy_(stats, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.values = stats

    def tolist(self) -> list:
        if self.event is not None:
            self.event.synchronize()
        return self.values.tolist()


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
        self._early_epoch: tuple | None = None  # (epoch, its batch iterator started during evaluation)

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
            self._say(init_weights(self.raw_model, cfg.init, cfg, self.data.class_names))
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
        self.graph_decision = self._graph_decision()
        # captured DDP steps average the gradients themselves (one all-reduce inside the graph):
        # DDP's per-bucket hooks are not capturable as they stand
        self.grads_averaged_in_step = self.env.enabled and self.graph_decision.enabled
        if self.grads_averaged_in_step:
            broadcast_module(self.raw_model)  # rank 0's weights everywhere, as DDP's constructor does
        elif self.env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = model

        o = cfg.optim
        self.num_workers = cfg.data.num_workers
        if self.num_workers is None:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            self.num_workers, why = default_loader_workers(self.device.type, local_world)
            self._say(why)
        self.micro = micro_batch_size(o.batch_size, self.env.world_size, o.grad_accum_steps)
        pin = self.device.type == "cuda"
        bucket = cfg.data.batching == "bucket"
        self.train_loader = train_loader(self.data.train, self.micro, self.env, cfg.seed, self.num_workers, pin,
                                         sample_weights=self._balance("data.balanced_sampling", cfg.data.balanced_sampling),
                                         num_buckets=cfg.data.num_buckets if bucket else None)
        self.class_weights = self._balance("optim.class_weights", o.class_weights == "balanced", loss=True)
        eval_bs = cfg.eval_batch_size or self.micro
        self.val_loader = eval_loader(self.data.val, eval_bs, self.env, self.num_workers, pin, bucket)
        self.test_loader = eval_loader(self.data.test, eval_bs, self.env, self.num_workers, pin, bucket)
        # batches per rank and epoch: the same on every rank, and in every epoch
        self.steps_per_epoch = len(self.train_loader) // o.grad_accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"training set too small for one step of global batch {o.batch_size}")
        self._setup_threads()

        self.optimizer = build_optimizer(self.raw_model, o.lr, o.weight_decay, o.betas, o.backbone_lr_scale, HEAD_PREFIX)
        total = self.steps_per_epoch * o.epochs
        self.scheduler = build_scheduler(self.optimizer, total, int(o.warmup_epochs * self.steps_per_epoch), o.min_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext())
        self.step_parts = StepParts(cfg, self.model, self.raw_model, self.optimizer, self.scheduler, self.scaler,
                                    self.autocast, self.device, self.env.rank, self.env.enabled, self.class_weights,
                                    average_grads=self.grads_averaged_in_step)

        if ckpt is not None:
            self._load_training_state(ckpt)
        self._setup_graphs()
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

    def _graph_decision(self):
        """Eager or CUDA-graph-captured steps (``cuda_graphs``), with the reason for the log. Under
        DDP, capture only once an NCCL all-reduce captured in a graph has replayed right here."""
        from helix.core.distributed import nccl_capture_problem
        from helix.core.graphs import resolve_cuda_graphs

        cfg = self.cfg
        bucket = cfg.data.batching == "bucket"
        unsupported = ("fp16 loss scaling reads its overflow flag on the host" if self.precision == "fp16" else
                       "compile: torch.compile manages its own graphs" if cfg.compile else
                       f"{cfg.model.name} reads clip lengths on the host" if bucket
                       and getattr(self.raw_model, "lengths_read_on_host", False) else None)
        # fixed crops repeat one shape; length buckets repeat num_buckets shapes (a graph each)
        decide = functools.partial(resolve_cuda_graphs, cfg.cuda_graphs, self.device, shapes_repeat=True,
                                   world_size=self.env.world_size, clip_seconds=self.clip_seconds,
                                   unsupported=unsupported)
        decision = decide(nccl_capture_verified=True)
        if decision.enabled and self.env.enabled:
            problem = nccl_capture_problem(self.device)
            if problem:
                decision = decide(nccl_capture_verified=False, nccl_problem=problem)
        return decision

    def _setup_graphs(self) -> None:
        """The step function the decision picked, said in the log."""
        from helix.core.graphs import CapturedStep

        decision = self.graph_decision
        self.graphs = decision.enabled
        self.step_fn = (GraphedSteps(self.step_parts) if decision.enabled
                        else functools.partial(optimizer_step, self.step_parts))
        self.eval_forward = CapturedStep(self._eval_logits, warmup=1) if decision.enabled else None
        if self.device.type == "cuda":
            self._say(decision.reason)

    def _release_graphs(self) -> None:
        """Free the captured graphs when ``fit`` ends, before anyone destroys the process group (a
        live graph with NCCL kernels in it would keep that waiting)."""
        for captured in (getattr(getattr(self, "step_fn", None), "run", None), getattr(self, "eval_forward", None)):
            if hasattr(captured, "release"):
                captured.release()

    def _eval_logits(self, wave: torch.Tensor) -> torch.Tensor:
        """Evaluation forward of a fixed-length batch (what ``eval_forward`` captures)."""
        with self.autocast:
            return self.eval_model(wave).float()

    def _evaluate(self, loader) -> dict:
        return evaluate(self.eval_model, loader, self.device, self.autocast, forward=self.eval_forward)

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
        self._resume_changes = check_resume_config(ckpt, self.cfg, self.allow_changes)
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

    def _setup_threads(self) -> None:
        """Pick the intra-op thread count of a CPU run (restored when ``fit`` ends)."""
        if self.device.type != "cpu" and self.cfg.cpu_threads is None:
            return
        width = getattr(getattr(self.raw_model, "config", None), "d_model", 256)
        activation = self.micro * (self.tokens or self.num_samples // 160) * width
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads, why = choose_cpu_threads(self.cfg.cpu_threads, activation, self.num_workers, local_world)
        self._threads_before = set_cpu_threads(threads)
        self._say(f"CPU threads: {torch.get_num_threads()} ({why})")

    def _load_training_state(self, ckpt: dict) -> None:
        self.state = restore_training_state(ckpt, self.raw_model, self.optimizer, self.scheduler, self.scaler,
                                            self.device, changed=bool(self._resume_changes))
        if self._resume_changes:
            self._say(f"resumed with changed settings: {', '.join(self._resume_changes)}")
        self._say(f"resumed {self.out} at epoch {self.state.epoch + 1}, step {self.state.step}")

    def _save(self, path: Path, training_state: bool = True) -> None:
        if self.env.is_main:
            extra = (dict(optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, device=self.device)
                     if training_state else {})
            with interrupts_deferred():  # Ctrl-C: the checkpoint is written whole, then the run stops
                payload = training_payload(self.cfg, self.state, self.raw_model, self.data.class_names,
                                           self.clip_seconds, self.multilabel, **extra)
                save_checkpoint(path, payload)

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train to ``optim.epochs`` (or continue a resumed run) and return the run summary."""
        try:
            self.setup()
            cfg, st, hinted = self.cfg, self.state, False
            for epoch in range(st.epoch, cfg.optim.epochs):
                train = self._train_epoch(epoch)
                self._start_epoch_early(epoch + 1)
                val = self._evaluate(self.val_loader)
                test = self._evaluate(self.test_loader)
                record = {"epoch": epoch + 1, "step": st.step, "lr": current_lr(self.scheduler),
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
                if not hinted and record["data_wait_frac"] >= LOADER_BOUND_FRAC:
                    hinted = True
                    self._say(loader_hint(record["data_wait_frac"], self.num_workers, cfg.data.cache))
            summary = self._summary()
            if not self.multilabel:
                summary.update(self._diagnose())
            self.logger.write_summary(summary)
            if self.verbose and self.print_summary and self.env.is_main:
                from helix.core.metrics import run_summary_table
                print(run_summary_table(summary))
            return summary
        finally:
            self._release_graphs()
            if self.logger is not None:
                self.logger.close()
            if self._lock is not None:
                self._lock.release()
            if self._threads_before is not None:
                set_cpu_threads(self._threads_before)

    def _start_epoch_early(self, epoch: int) -> None:
        """Start the loader workers on ``epoch``'s first batches now, while the finished epoch is
        evaluated and saved: with persistent workers a new epoch's iterator otherwise starts cold,
        and the loop waits for its first batch (most of a short epoch's loader wait; RESULTS.md
        section 12). Same shuffle and worker seeds as starting it at the epoch's first step."""
        self._early_epoch = None
        if epoch < self.cfg.optim.epochs and self.num_workers > 0:
            start_epoch(self.train_loader, self.cfg.seed, epoch, self.env.rank, 0)
            self._early_epoch = (epoch, iter(self.train_loader))

    def _train_epoch(self, epoch: int) -> dict:
        cfg, st, sums = self.cfg, self.state, self.state.epoch_sums
        accum = cfg.optim.grad_accum_steps
        early, self._early_epoch = self._early_epoch, None
        if early is not None and early[0] == epoch and st.batch_in_epoch == 0:
            batches = TimedBatches(early[1])
        else:
            start_epoch(self.train_loader, cfg.seed, epoch, self.env.rank, st.batch_in_epoch * accum * self.micro)
            batches = TimedBatches(iter(self.train_loader))
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
            check_interrupt()  # a Ctrl-C lost in a finalizer still stops the run here
            lr = current_lr(self.scheduler)
            stats, count = self.step_fn(batches, st.step)
            stats = StepStats(stats)
            st.step, st.batch_in_epoch = st.step + 1, batch + 1
            if pending is not None:
                self._account(*pending, bar)
            pending = (stats, count, lr, epoch, batch, st.step, batches.take())
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
                "data_wait_frac": min(1.0, sums["data_seconds"] / max(sums["seconds"], 1e-9)),
                "tokens_per_s": clips_per_s * self.tokens if self.tokens else None}

    def _account(self, stats: StepStats, count: int, lr: float, epoch: int, batch: int, step: int,
                 data_seconds: float, bar) -> None:
        """Read one finished step's (loss, grad norm, hits) on the host: stop on non-finite values,
        add to the epoch sums (with the step's ``data_seconds`` waiting for the loader), log, and
        advance the progress bar."""
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
        for k, v in (("loss", loss * count), ("correct", hits), ("count", count), ("seconds", seconds),
                     ("data_seconds", data_seconds)):
            sums[k] += v
        if step % cfg.log_every_steps == 0:
            self.logger.log_step(step, {"loss": loss, "grad_norm": norm, "lr": lr})
        rate = count * self.env.world_size / max(seconds, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{sums['correct'] / max(sums['count'], 1):.3f}",
                        **{"tok/s" if self.tokens else "clips/s": f"{rate * (self.tokens or 1):.0f}"},
                        data=f"{sums['data_seconds'] / max(sums['seconds'], 1e-9):.0%}")
        bar.update(1)

    def _stop_nonfinite(self, loss: float, norm: float, epoch: int, batch: int, step: int) -> None:
        where = f"optimizer step {step} (epoch {epoch + 1}, batch {batch + 1}/{self.steps_per_epoch})"
        msg = nonfinite_message(loss, norm, where, self.last_path, self.resume_command())
        self.logger.log_event({"event": "non_finite_loss", "step": step, "epoch": epoch + 1, "loss": loss,
                               "grad_norm": norm})
        raise NonFiniteLossError(msg)

    def resume_command(self, lr_factor: float = 0.1) -> str:
        """The command that continues this run from ``last.pt`` with the peak learning rate scaled."""
        return resume_command(self.out, self.cfg.optim, lr_factor)

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


LOADER_BOUND_FRAC = 0.3
"""An epoch that waited this share of its time for the loader gets :func:`loader_hint` (once per
``fit``: a resumed run may be told again)."""


def loader_hint(frac: float, workers: int, cache: str) -> str:
    """What to change when the loader, not the model, sets the pace."""
    moves = [f"more loader workers (data.num_workers={workers} now)"]
    if cache == "none":
        moves.append("data.cache=memory (decode each file once, for corpora that fit in RAM)")
    return f"the loader kept training waiting {frac:.0%} of this epoch; try " + " or ".join(moves)


def _epoch_line(r: dict, epochs: int, metric: str = "acc") -> str:
    # the share of the epoch spent waiting for the loader (absent from runs made before it was logged)
    wait = f"  data {r['data_wait_frac']:.0%}" if r.get("data_wait_frac") is not None else ""
    rate = f"{r['tokens_per_s']:.0f} tok/s" if r.get("tokens_per_s") else f"{r['clips_per_s']:.1f} clips/s"
    scores = (f"val {r['val_acc']:.3f}  test {r['test_acc']:.3f}" if metric == "acc" else
              f"val {METRIC_NAMES[metric]} {r['val_' + metric]:.3f}  test {METRIC_NAMES[metric]} {r['test_' + metric]:.3f}")
    return (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  train {r['train_acc']:.3f}  "
            f"{scores}  lr {r['lr']:.2e}  {rate}  {r['epoch_seconds']:.1f}s{wait}")
