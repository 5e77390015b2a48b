"""Training configuration: the dataclasses (one per section, a docstring per field, checks in
``__post_init__``). YAML presets, ``key=value`` overrides and ``HELIX_OVERRIDES`` are read by
:mod:`helix.training.config_io`; the defaults are the paper's protocol (section 3.4).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import yaml

from helix.models import check_model_options, model_defaults, scale_pattern


MODEL_SAMPLE_RATE = 16000
"""The rate the models are built for by default; ``data.sample_rate`` is passed to the model."""



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
    num_workers: int | None = None
    """DataLoader worker processes per rank (0 loads in the main process); null chooses from the
    CPU count (``helix.core.threads.default_loader_workers``: up to 8 per GPU, up to 2 on CPU)."""
    task_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for the dataset builder (e.g. ``num_segments`` for concatenated tasks)."""
    balanced_sampling: bool = False
    """Draw training clips with replacement, weighted by ``1 / class count`` (multi-label: summed
    over the clip's labels), so rare classes come up as often as common ones
    (``helix.data.sampling.balanced_sample_weights``). An epoch keeps its usual length. Combines
    with ``batching=bucket``: the drawn clips are then grouped into length buckets
    (``helix.data.batching.BalancedBucketBatchSampler``)."""
    batching: str = "fixed"
    """``fixed``: every clip is cropped or zero-padded to ``clip_seconds`` and batches are stacked
    (the paper's protocol; the default of the paper presets). ``bucket``: clips keep their own
    length (cropped only when longer than ``clip_seconds``, never padded), batches group clips of
    similar length (``helix.data.batching.BucketBatchSampler``, sharded over ranks, exact resume),
    each padded to one of ``num_buckets`` lengths, and the model gets every clip's length
    (``model(wave, lengths)``), so the padding changes nothing and costs little. For tasks whose
    items are single files (``helix.data.tasks.NATIVE_LENGTH_TASKS``: esc50, urbansound8k,
    speechcommands, folder, csv)."""
    num_buckets: int = 8
    """With ``batching=bucket``: how many padded lengths, placed at the quantiles of the training
    clips' lengths (more buckets pad less; fewer repeat shapes more often)."""
    cache: str = "none"
    """Decode-once cache for small corpora (``helix.data.cache``): ``none`` decodes and resamples
    every clip each time it is read; ``memory`` decodes every file once before training (a
    progress bar with clips/s and ETA) into one array in RAM that DataLoader workers share
    (refused above half the machine's RAM); ``disk`` writes that array once as a memmap under
    ``<root>/helix/cache`` and reuses it while the manifest, sample rate and files' sizes and mtimes
    are unchanged. Batches are the same (bit for bit, except crops of resampled files longer than
    the clip, which are cut after resampling); unreadable files fail as without a cache."""

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
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.batching not in ("fixed", "bucket"):
            raise ValueError(f"data.batching must be fixed or bucket, got {self.batching!r}")
        if self.num_buckets < 1:
            raise ValueError(f"data.num_buckets must be >= 1, got {self.num_buckets}")
        if self.cache not in ("none", "memory", "disk"):
            raise ValueError(f"data.cache must be none, memory or disk, got {self.cache!r}")


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
    freeze_backbone: bool = False
    """Train only the classifier head (a linear probe on the backbone's pooled features); mostly
    with ``init`` (fine-tuning from a checkpoint)."""

    def __post_init__(self):
        check_finite(self)
        if self.pool_first_k is not None and self.pool_first_k < 1:
            raise ValueError(f"model.pool_first_k must be >= 1 or null, got {self.pool_first_k}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"model.num_layers must be >= 1 or null, got {self.num_layers}")
        # a misspelled or mistyped model option fails here, when the config is loaded, not after the data
        check_model_options(self.name, self.create_kwargs(), prefix="model.overrides.")

    def create_kwargs(self) -> dict:
        """Keyword overrides for ``create_model``, pattern resolved (what a checkpoint stores)."""
        kwargs = dict(self.overrides)
        if self.pool_first_k is not None:
            kwargs["pool_first_k"] = self.pool_first_k
        if self.num_layers is not None and "pattern" not in kwargs:
            pattern = model_defaults(self.name).get("pattern")
            if pattern is None:
                raise ValueError(f"model.num_layers applies to pattern models; {self.name} has no layer pattern")
            kwargs["pattern"] = scale_pattern(pattern, self.num_layers)
        return kwargs


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
    class_weights: str | None = None
    """``balanced``: weigh the loss by inverse class frequency of the training set (cross-entropy
    ``weight``; for multi-label data BCE ``pos_weight`` = negatives / positives per class,
    ``helix.data.sampling.class_loss_weights``); null: every class alike."""
    backbone_lr_scale: float = 1.0
    """Learning rate of everything but the classifier head, as a share of ``lr`` (and of the whole
    schedule), e.g. 0.1 when fine-tuning from ``init``; 1 trains every parameter alike."""

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
        if self.class_weights not in (None, "balanced"):
            raise ValueError(f"optim.class_weights must be balanced or null, got {self.class_weights!r}")
        if not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"optim.backbone_lr_scale must be in (0, 1], got {self.backbone_lr_scale} "
                             "(model.freeze_backbone=true stops the backbone entirely)")
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
    cuda_graphs: str = "auto"
    """Replay each training step (forward, loss, backward, clipping, AdamW) and each evaluation
    batch from a CUDA graph per batch shape (``helix.core.graphs``), which removes the launch cost
    that dominates short clips (length buckets: one graph, and its memory pool, per bucket).
    ``auto``: on for CUDA runs of clips up to 30 s in bf16/fp32 (under torchrun once an NCCL
    all-reduce captured in a graph has replayed correctly on every rank; the step then averages the
    gradients itself, without a DDP wrapper), else off with the reason in the log; ``on``: the same,
    but a run that cannot be captured is a configuration error; ``off``: eager."""
    init: str | None = None
    """Checkpoint (``.pt``, ``.safetensors`` or a pretrained folder) whose weights start a new run
    (``--init``): read with ``helix.models.load_model``, never unpickling code. The architecture must
    match ``model``; the classifier head is re-initialised when the class names differ. A resumed
    run continues from its own ``last.pt`` instead."""
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
                from helix.training.config_io import config_from_dict

                setattr(self, name, config_from_dict(cls, value, prefix=f"{name}."))
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.checkpoint_every_steps < 0 or self.log_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 0 and log_every_steps >= 1")
        if self.cuda_graphs not in ("auto", "on", "off"):
            raise ValueError(f"cuda_graphs must be auto, on or off, got {self.cuda_graphs!r}")
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
        from helix.training.config_io import config_from_dict

        return config_from_dict(cls, data)
