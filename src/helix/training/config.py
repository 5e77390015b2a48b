"""Training configuration: dataclasses, YAML presets and ``key=value`` overrides.

A run is fully described by one :class:`TrainConfig`. YAML presets (``helix/configs/``) are serialised
configs (only the fields that differ from the defaults need to appear); the command line applies
``key=value`` overrides on top, with dotted keys (``optim.lr=1e-3``) or, when the name is unique,
bare ones (``lr=1e-3``). The environment variable ``HELIX_OVERRIDES`` (whitespace-separated
``key=value`` items, shell quoting allowed) is applied last, so a documented command can be run
verbatim on a tiny schedule. The defaults are the paper's protocol (section 3.4).

    cfg = load_config("esc50", overrides=["epochs=10", "model.name=helix_mel"])
    HELIX_OVERRIDES="optim.epochs=1 model.num_layers=2" helix train --config esc50 --fold 1
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


ENV_OVERRIDES = "HELIX_OVERRIDES"
"""Environment variable whose ``key=value`` items :func:`load_config` applies after the command line's."""
MODEL_SAMPLE_RATE = 16000
"""The rate the models are built for by default; ``data.sample_rate`` is passed to the model."""

PACKAGE_PRESETS = Path(__file__).resolve().parents[1] / "configs"
"""The presets shipped inside the package (``helix/configs/*.yaml``, package data of the wheel)."""


def preset_dirs() -> tuple[Path, ...]:
    """Where preset names are looked up: ``./configs`` in the working directory first (a user's own
    presets there shadow the shipped ones of the same name), then the package's presets."""
    return Path.cwd() / "configs", PACKAGE_PRESETS


def check_finite(section) -> None:
    """Refuse NaN/inf in any float field of a config dataclass (``x <= 0`` is False for NaN, so the
    range checks alone would let it through)."""
    prefix = {DataConfig: "data.", ModelSpec: "model.", OptimConfig: "optim.", AugmentConfig: "augment."}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"{prefix.get(type(section), '')}{f.name} must be a finite number, got {value!r}")


@dataclass
class DataConfig:
    name: str = "esc50"
    """Dataset name given to ``helix.data.tasks.build_task``, or a synthetic task
    (``synthetic_order``, ``synthetic_concat_order``, see ``helix.data.synthetic``)."""
    root: str = "data"
    """Folder holding the prepared dataset (ignored by synthetic tasks)."""
    clip_seconds: float | None = 5.0
    """Length every waveform is cropped or padded to, in seconds; null lets the task choose (your
    own folder/CSV data: the 90th-percentile duration, ``helix.data.tasks.suggest_clip_seconds``)."""
    sample_rate: int = 16000
    """Waveform sample rate in Hz: audio is resampled to it, and the model is built for it (its
    ``sample_rate``, stored in the checkpoint), so training and inference agree."""
    num_folds: int | None = None
    """Number of predefined folds (ESC-50: 5, UrbanSound8K: 10); None for single-split datasets."""
    fold: int | None = None
    """Test fold (1-based) for a fold dataset; None with ``num_folds`` set runs every fold in turn."""
    val_fraction: float = 0.1
    """Share of the training data held out for model selection when the dataset has no official
    validation split."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 loads in the main process)."""
    task_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for the dataset builder (e.g. ``num_segments`` for concatenated tasks)."""

    def __post_init__(self):
        check_finite(self)
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise ValueError(f"data.clip_seconds must be positive, got {self.clip_seconds}")
        if self.sample_rate <= 0:
            raise ValueError(f"data.sample_rate must be positive, got {self.sample_rate}")
        if self.num_folds is not None and self.num_folds < 2:
            raise ValueError(f"data.num_folds must be >= 2 or null, got {self.num_folds}")
        if self.fold is not None:
            if self.num_folds is None:
                raise ValueError("data.fold is set but data.num_folds is null; set both for a fold dataset")
            if not 1 <= self.fold <= self.num_folds:
                raise ValueError(f"data.fold must be in 1..{self.num_folds}, got {self.fold}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class ModelSpec:
    name: str = "helix_raw"
    """Registry name for ``helix.models.create_model`` (see ``helix.models.list_models()``)."""
    pool_first_k: int | None = None
    """Mean-pool only the first K tokens (paper section 3.3; K=100 on Concat Speech Commands);
    None pools all tokens."""
    num_layers: int | None = None
    """Rescale the backbone's layer pattern to this depth, keeping its shape (Pure Mamba "MMMM",
    HELIX "MMAM" with attention mid-stack, Pure Attention "AAAA" at 4); None keeps the paper's 6.
    Ignored when ``overrides`` sets ``pattern``."""
    overrides: dict = field(default_factory=dict)
    """Further ``ModelConfig`` fields (d_model, pattern, d_state, scan_backend, ...)."""

    def __post_init__(self):
        check_finite(self)
        if self.pool_first_k is not None and self.pool_first_k < 1:
            raise ValueError(f"model.pool_first_k must be >= 1 or null, got {self.pool_first_k}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"model.num_layers must be >= 1 or null, got {self.num_layers}")

    def create_kwargs(self) -> dict:
        """Keyword overrides for ``create_model``, pattern resolved (what a checkpoint stores)."""
        kwargs = dict(self.overrides)
        if self.pool_first_k is not None:
            kwargs["pool_first_k"] = self.pool_first_k
        if self.num_layers is not None and "pattern" not in kwargs:
            from helix.models import model_defaults

            pattern = model_defaults(self.name).get("pattern")
            if pattern is None:
                raise ValueError(f"model.num_layers applies to pattern models; {self.name} has no layer pattern")
            kwargs["pattern"] = scale_pattern(pattern, self.num_layers)
        return kwargs


def scale_pattern(pattern: str, depth: int) -> str:
    """Same layer mix at another depth: each attention layer keeps its relative position
    (``scale_pattern("MMMAMM", 4) == "MMAM"``); all-M and all-A stay pure."""
    if set(pattern) == {"A"}:
        return "A" * depth
    out = ["M"] * depth
    for i, kind in enumerate(pattern):
        if kind == "A":
            out[min(i * depth // len(pattern), depth - 1)] = "A"
    return "".join(out)


@dataclass
class OptimConfig:
    epochs: int = 100
    """Training epochs."""
    batch_size: int = 32
    """Global batch per optimizer step, summed over ranks and accumulation steps, so a config means
    the same optimisation on any number of GPUs."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (per-rank micro-batch = batch_size / (world * accum))."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine schedule."""
    warmup_epochs: float = 0.0
    """Linear warm-up length in epochs before the cosine decay (the paper uses none)."""
    weight_decay: float = 0.05
    """AdamW decoupled weight decay (not applied to biases and norm gains)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""

    def __post_init__(self):
        self.betas = tuple(self.betas)
        check_finite(self)
        if self.epochs < 1:
            raise ValueError(f"optim.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("optim.batch_size and optim.grad_accum_steps must be >= 1")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= optim.min_lr <= optim.lr and lr > 0, got lr={self.lr} min_lr={self.min_lr}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise ValueError(f"optim.warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("optim.weight_decay and optim.grad_clip must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class AugmentConfig:
    enabled: bool = True
    """Master switch for every training augmentation below (evaluation is never augmented)."""
    time_shift_s: float = 0.5
    """Random circular time shift, uniform in +-time_shift_s seconds."""
    gain_min: float = 0.8
    """Lower bound of the random amplitude scale."""
    gain_max: float = 1.2
    """Upper bound of the random amplitude scale."""
    noise_std: float = 0.005
    """Standard deviation of additive Gaussian noise."""
    mixup_alpha: float = 0.3
    """Beta(alpha, alpha) parameter of mixup; 0 disables mixup."""

    def __post_init__(self):
        check_finite(self)
        if self.time_shift_s < 0 or self.noise_std < 0 or self.mixup_alpha < 0:
            raise ValueError("augment.time_shift_s, noise_std and mixup_alpha must be >= 0")
        if not 0 < self.gain_min <= self.gain_max:
            raise ValueError(f"need 0 < augment.gain_min <= gain_max, got {self.gain_min}, {self.gain_max}")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """What to train on."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """Which network to build."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer, schedule and batch geometry."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Waveform augmentation and mixup (training only)."""
    out_dir: str = "runs/default"
    """Run folder: config, environment, metrics, TensorBoard events and checkpoints."""
    seed: int = 0
    """Seeds model init, data order, validation split and augmentation."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: str = "auto"
    """``auto`` (bf16 on GPUs that support it, else fp16; fp32 on CPU), ``fp32``, ``bf16`` or
    ``fp16`` (with dynamic loss scaling). Parameters always stay fp32."""
    checkpoint_every_steps: int = 0
    """Also write ``last.pt`` every N optimizer steps (0: only at the end of each epoch)."""
    log_every_steps: int = 10
    """Write the training loss to ``steps.jsonl`` and TensorBoard every N optimizer steps."""
    eval_batch_size: int | None = None
    """Per-rank evaluation batch size (None: the per-rank training micro-batch)."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (GPU runs; adds start-up time)."""
    cpu_threads: int | None = None
    """PyTorch intra-op threads for a CPU run (``--threads``). None picks them: the
    ``OMP_NUM_THREADS`` environment variable if set, else 1 for small models (tiny ops lose more to
    thread synchronisation than they gain), else the cores this process may use, less the
    DataLoader workers and the cores other processes keep busy. GPU runs keep PyTorch's default."""

    def __post_init__(self):
        for name, cls in (("data", DataConfig), ("model", ModelSpec), ("optim", OptimConfig),
                          ("augment", AugmentConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _from_dict(cls, value, prefix=f"{name}."))
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.checkpoint_every_steps < 0 or self.log_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 0 and log_every_steps >= 1")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1 or null, got {self.cpu_threads}")
        rate = self.model.overrides.get("sample_rate", self.data.sample_rate)
        if rate != self.data.sample_rate:
            raise ValueError(f"model.overrides.sample_rate={rate} differs from data.sample_rate="
                             f"{self.data.sample_rate}; the sample rate is one setting: set data.sample_rate only")

    def model_kwargs(self) -> dict:
        """``create_model`` keyword overrides: the model spec's, with the data's sample rate."""
        return {**self.model.create_kwargs(), "sample_rate": self.data.sample_rate}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        data = self.to_dict()
        data["optim"]["betas"] = list(data["optim"]["betas"])
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return _from_dict(cls, data)


def _from_dict(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        close = [c for k in unknown for c in difflib.get_close_matches(k, known, n=1, cutoff=0.6)]
        hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
        raise ValueError(f"unknown config field(s) {[prefix + k for k in unknown]}; {hint}known: {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to the annotated type, or explain why not."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: cannot interpret {value!r} as {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value  # YAML reads "1e-3" as a string
            if hint is int:
                if float(number) != int(float(number)):
                    raise ValueError
                return int(float(number))
            return float(number)
        except (TypeError, ValueError, OverflowError):  # int("inf") overflows
            raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if args and origin is tuple and len(args) == len(value):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        return list(value) if origin is list else tuple(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def resolve_preset(name_or_path: str) -> Path:
    """A YAML path, or a preset name looked up in ``./configs`` then the package's presets."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    for folder in preset_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no preset named {name_or_path!r}; available: {', '.join(list_presets()) or 'none found'} "
        f"(searched {', '.join(str(d) for d in preset_dirs())})"
    )


def list_presets() -> list[str]:
    names = set()
    for folder in preset_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings to a nested config dict (values parsed as YAML, then typed)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        path = _resolve_key(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"override {item!r}: the value is not valid YAML ({problem})") from None
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if isinstance(node.get(path[-1]), dict) and isinstance(value, dict):
            node[path[-1]] = {**node[path[-1]], **value}
        else:
            node[path[-1]] = value
    return data


def _resolve_key(key: str) -> list[str]:
    """``optim.lr`` -> [optim, lr]; a bare ``lr`` is found in whichever section defines it.
    Keys below a dict field (``model.overrides.d_model``) pass through unchecked."""
    fields = _field_paths(TrainConfig)
    if key in fields:
        return key.split(".")
    matches = [p for p in fields if p.split(".")[-1] == key]
    if len(matches) == 1:
        return matches[0].split(".")
    if len(matches) > 1:
        raise ValueError(f"override key {key!r} is ambiguous: use one of {matches}")
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in fields and (fields[head] is dict or typing.get_origin(fields[head]) is dict):
            return parts
    close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown config key {key!r}; {hint}known keys: {', '.join(sorted(fields))}")


def _field_paths(cls, prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_field_paths(hint, f"{prefix}{name}."))
        else:
            out[prefix + name] = hint
    return out


def env_overrides() -> list[str]:
    """The ``key=value`` items of ``$HELIX_OVERRIDES`` (split like a shell command line)."""
    text = os.environ.get(ENV_OVERRIDES, "")
    try:
        return shlex.split(text)
    except ValueError as err:
        raise ValueError(f"{ENV_OVERRIDES}={text!r} cannot be split into key=value items: {err}") from None


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; malformed YAML is a ValueError naming the file and line."""
    with open(path) as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{where}: malformed YAML: {problem}") from None


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the preset/YAML file (if any), then ``key=value`` overrides, then those of
    ``$HELIX_OVERRIDES``."""
    data: dict = {}
    source = "config"
    if name_or_path:
        path = resolve_preset(name_or_path)
        source = str(path)
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides or [])
    env = env_overrides()
    if env:
        try:
            data = apply_overrides(data, env)
        except ValueError as err:
            raise ValueError(f"{ENV_OVERRIDES}: {err}") from None
    try:
        return TrainConfig.from_dict(data)
    except TypeError as err:  # a list where a number belongs, etc.
        raise ValueError(f"invalid {source}: {err}") from None
    except ValueError as err:
        if name_or_path and str(err).startswith(("unknown config field", "config section")):
            # overrides never bring unknown fields (their keys are checked first): the file did
            raise ValueError(f"{source}: {err}") from None
        raise
