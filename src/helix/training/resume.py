"""Where a run's weights and state come from and go to: the checkpoint payload ``last.pt`` holds,
the config check that lets ``--resume`` continue only the same run, restoring the optimiser,
schedule, scaler, RNG and loop counters, and ``--init`` weights for a new run.

``resume=True`` continues exactly: data order comes from (seed, epoch), augmentation from
(seed, step, rank), so nothing besides what :func:`training_payload` stores needs replaying.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

import torch

from helix.models.checkpoint import load_checkpoint
from helix.models.loading import model_payload
from helix.training.config import TrainConfig

HEAD_PREFIX = "head."
"""Parameter-name prefix of every registered model's classifier head (``model.head``)."""

# settings that do not change the optimisation, so a resumed run may use other values
RESUME_MAY_CHANGE = ("out_dir", "device", "precision", "compile", "cuda_graphs", "log_every_steps",
                     "checkpoint_every_steps", "eval_batch_size", "data.root", "data.num_workers", "data.cache",
                     "cpu_threads")
# optimiser settings a resumed run may change when asked to (``--allow-changes``): the model, the
# data and the schedule's length stay those of the run, so the steps already taken keep their meaning
RESUME_MAY_CHANGE_ON_REQUEST = ("optim.lr", "optim.min_lr", "optim.weight_decay", "optim.betas", "optim.grad_clip")


@dataclass
class TrainState:
    """Everything besides model/optimizer/scheduler state that a resumed run needs."""
    epoch: int = 0
    """Completed epochs (the epoch in progress is ``epoch + 1``, 1-based in the logs)."""
    batch_in_epoch: int = 0
    """Optimizer steps already done in the epoch in progress."""
    step: int = 0
    """Optimizer steps done overall."""
    epoch_sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0,
                                                      "data_seconds": 0.0})
    """The epoch in progress so far: summed loss and hits, examples, seconds, and the seconds of
    those spent waiting for the loader."""
    history: list = field(default_factory=list)


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


def check_resume_config(ckpt: dict, cfg: TrainConfig, allowed: tuple[str, ...]) -> list[str]:
    """Refuse to resume ``ckpt`` under a config that would not continue the same run; return the
    ``allowed`` changes being made (to log)."""
    # a run written before a config field existed ran with that field's default
    old = _with_defaults(ckpt.get("config", {}), TrainConfig().to_dict())
    changed = config_changes(old, cfg.to_dict(), allowed=allowed)
    if changed:
        hint = [c.split(":")[0] for c in changed if c.split(":")[0] in RESUME_MAY_CHANGE_ON_REQUEST]
        hint = f"; to change them on purpose add --allow-changes {','.join(hint)}" if len(hint) == len(changed) else ""
        raise ValueError(f"--resume with a different config would not continue the same run; changed: "
                         f"{', '.join(changed)} (only {', '.join(RESUME_MAY_CHANGE)} may change{hint})")
    return [c for c in config_changes(old, cfg.to_dict()) if c.split(":")[0] in allowed]


def training_payload(cfg: TrainConfig, state: TrainState, model: torch.nn.Module, class_names, clip_seconds,
                     multilabel: bool, optimizer=None, scheduler=None, scaler=None,
                     device: torch.device | None = None) -> dict:
    """A checkpoint's contents: the model (:func:`helix.models.loading.model_payload`), the resolved
    config, counters and last metrics; with ``optimizer`` also what resuming needs (optimizer,
    schedule, loss scaler, RNG states, the epoch's running sums and the history)."""
    payload = {
        **model_payload(cfg.model.name, len(class_names), cfg.model_kwargs(), model, class_names,
                        cfg.data.sample_rate, clip_seconds, multilabel=multilabel),
        "config": cfg.to_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "metrics": state.history[-1] if state.history else {},
    }
    if optimizer is not None:
        payload.update(
            optimizer_state=portable_optimizer_state(optimizer),
            scheduler_state=scheduler.state_dict(),
            scaler_state=scaler.state_dict() if scaler.is_enabled() else None,
            rng_state={"torch": torch.get_rng_state(),
                       "cuda": torch.cuda.get_rng_state_all() if device is not None and device.type == "cuda" else None},
            train_state={"batch_in_epoch": state.batch_in_epoch, "epoch_sums": dict(state.epoch_sums),
                         "history": list(state.history)},
        )
    return payload


def portable_optimizer_state(optimizer) -> dict:
    """The optimizer's state dict with each param group's settings as plain numbers: a captured
    step (``cuda_graphs``) keeps the learning rate in a device tensor and the groups capturable,
    which a run resumed eagerly, or on another device, must not inherit."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
        if group.get("capturable"):
            group["capturable"] = False
    return state


def restore_training_state(ckpt: dict, model: torch.nn.Module, optimizer, scheduler, scaler, device: torch.device,
                           changed: bool = False) -> TrainState:
    """Load weights, optimizer, schedule, scaler and RNG states from ``ckpt``; the loop's counters.
    ``changed``: settings from ``--allow-changes`` replace the checkpoint's (:func:`apply_optimizer_changes`)."""
    model.load_state_dict(ckpt["model_state"])
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer_state"])
    scheduler.load_state_dict(ckpt["scheduler_state"])
    if changed:
        apply_optimizer_changes(optimizer, scheduler, fresh)
    if ckpt.get("scaler_state") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler_state"])
    rng = ckpt.get("rng_state") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    t = ckpt["train_state"]
    return TrainState(epoch=ckpt["epoch"], batch_in_epoch=t["batch_in_epoch"], step=ckpt["step"],
                      epoch_sums={**TrainState().epoch_sums, **t["epoch_sums"]}, history=list(t["history"]))


def apply_optimizer_changes(optimizer, scheduler, fresh: list[dict]) -> None:
    """After loading the checkpoint's optimizer and schedule, put back the settings that
    ``--allow-changes`` let change: betas and weight decay from the new config (``fresh``, the
    param groups as built), and the schedule's peak (``base_lrs``) with the learning rate at the
    current step recomputed along the new cosine (``min_lr`` lives in the new schedule's function)."""
    for group, new in zip(optimizer.param_groups, fresh):
        group.update({k: new[k] for k in ("betas", "weight_decay", "initial_lr") if k in new})
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def init_weights(model: torch.nn.Module, path: str, cfg: TrainConfig, class_names) -> str:
    """Start ``model`` from ``path``'s weights (``helix.models.load_model``: no code is unpickled)
    and say what was done. The classifier head keeps its fresh initialisation when the
    checkpoint's classes differ; any other mismatch is a one-line ValueError."""
    from helix.models import load_model

    loaded = load_model(path)
    if loaded.sample_rate != cfg.data.sample_rate:
        raise ValueError(f"--init {path}: the model was trained at {loaded.sample_rate} Hz, this run is at "
                         f"{cfg.data.sample_rate} Hz; set data.sample_rate={loaded.sample_rate}")
    source, target = loaded.model.state_dict(), model.state_dict()
    same_classes = loaded.class_names == list(class_names)
    keep = [k for k in target if same_classes or not k.startswith(HEAD_PREFIX)]
    differ = sorted([k for k in keep if k not in source or source[k].shape != target[k].shape]
                    + [k for k in source if k not in target])
    if differ:
        raise ValueError(f"--init {path}: its network does not match model.name={cfg.model.name} with this "
                         f"run's options ({len(differ)} weights differ, e.g. {differ[0]}); use the same model "
                         "name and model options as the checkpoint's run")
    model.load_state_dict({k: source[k] for k in keep}, strict=False)
    if same_classes:
        return f"initialised from {path} (every weight, classes unchanged)"
    return (f"initialised from {path}; classifier head re-initialised: the checkpoint has "
            f"{len(loaded.class_names)} classes ({_names(loaded.class_names)}), the data "
            f"{len(class_names)} ({_names(class_names)})")


def _names(names, shown: int = 5) -> str:
    return ", ".join(list(names)[:shown]) + (", ..." if len(names) > shown else "")


def resume_command(out, optim, lr_factor: float = 0.1) -> str:
    """The command that continues the run in ``out`` from ``last.pt`` with the peak learning rate
    (``optim.lr`` of the run's :class:`~helix.training.config.OptimConfig`) scaled by ``lr_factor``."""
    lr = float(f"{optim.lr * lr_factor:.3g}")
    keys, sets = ["optim.lr"], [f"optim.lr={lr:g}"]
    if optim.min_lr > lr:  # the schedule's floor must stay below its peak
        keys.append("optim.min_lr")
        sets.append(f"optim.min_lr={lr:g}")
    return " ".join(["helix train --out", shlex.quote(str(out)), "--resume --allow-changes", ",".join(keys), *sets])


def nonfinite_message(loss: float, norm: float, where: str, last_path, command: str) -> str:
    """Why a run stopped on a NaN/inf loss or gradient norm at ``where``, what it kept, and the
    ``command`` that continues it."""
    if last_path.exists():
        ck = load_checkpoint(last_path)
        keep = f"the last good checkpoint {last_path} (epoch {ck['epoch']}, step {ck['step']}) is kept"
    else:
        keep = "no checkpoint had been written yet"
    return (f"non-finite training {'loss' if not math.isfinite(loss) else 'gradient norm'} "
            f"(loss={loss}, grad norm={norm}) at {where}; that update was skipped so the model is not trained "
            f"on garbage; {keep}. To continue with a 10x lower learning rate: {command} "
            f"(optim.grad_clip, optim.betas, optim.weight_decay and precision change the same way)")
