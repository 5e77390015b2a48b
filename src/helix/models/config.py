"""Model configuration: one dataclass describes every HELIX-family classifier."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from helix.frontends.mel import STFT_MODES
from helix.layers.lean import check_setting as check_lean_setting
from helix.names import FRONTENDS

LAYER_TYPES = {"M": "BiMamba block", "A": "attention block"}


@dataclass
class ModelConfig:
    """A waveform classifier: frontend -> layer pattern -> LayerNorm -> mean pool (first K) -> linear."""

    num_classes: int = 2
    """Number of output classes (from the prepared data, never hard-coded)."""
    frontend: str = "raw"
    """"raw" (Conv1d k=s=160 + LayerNorm) or "mel" (128-bin log-mel, 16x16 patches + LayerNorm)."""
    pattern: str = "MMMAMM"
    """One letter per layer: M = BiMamba block, A = attention block. "MMMMMM" Pure Mamba,
    "MMMAMM" HELIX (attention at index 3), "AAAAAA" Pure Attention; any length/placement works."""
    d_model: int = 256
    """Width D of every layer."""
    d_state: int = 32
    """SSM state size N."""
    d_conv: int = 4
    """Causal depthwise convolution width inside each Mamba mixer."""
    expand: int = 2
    """Mamba inner width = expand * d_model."""
    dt_rank: int | None = None
    """Rank of the delta projection; None = ceil(d_model / 16)."""
    n_heads: int = 4
    """Attention heads h."""
    d_ffn: int | None = None
    """Attention FFN width; None = solved by parameter matching, eq. (10)."""
    attention_impl: str = "sdpa"
    """"sdpa" (FlashAttention / memory-efficient kernels) or "explicit" (full L x L matrix)."""
    scan_backend: str = "auto"
    """Selective-scan backend: "auto" (Triton on CUDA, the numba kernels on CPU when numba is
    installed, else the reference), "reference", "triton", "cpu" (numba), or "export" (a traceable
    loop, set by ``helix export``)."""
    pool_first_k: int | None = None
    """Mean-pool only the first K tokens (eq. 11); None = all tokens."""
    pos_encoding: str = "none"
    """"none" as in the paper's equations, or "sinusoidal" added after the frontend."""
    recompute: bool = False
    """Recompute each layer's activations in backward (less memory, ~1.3x compute)."""
    lean_blocks: bool | str = "auto"
    """Blocks keep little for backward and recompute the rest: fused (GPU) BiMamba blocks save only
    their normalised input (x_dbl, the scan output and every inner activation are remade), and
    attention blocks (on CUDA) keep only their input and SDPA's outputs. False keeps everything;
    "auto" is lean for batches of at least 32,768 tokens (long audio, where memory binds) and keeps
    everything for smaller ones, where recomputing only costs time (``helix.layers.lean``)."""
    sample_rate: int = 16000
    """Input sample rate in Hz; waveforms must already be at this rate."""
    mel_stft: str = "fft"
    """How the log-mel frontend computes its STFT: "fft" (``torch.stft``) or "conv" (the same DFT as
    a strided convolution, which tracing and ONNX export can follow; ``helix export`` builds with it)."""
    n_mels: int = 128
    n_fft: int = 1024
    hop: int = 512
    patch: int = 16

    def __post_init__(self):
        for name in ("num_classes", "d_model", "d_state", "d_conv", "expand", "n_heads",
                     "sample_rate", "n_mels", "n_fft", "hop", "patch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dt_rank", "d_ffn", "pool_first_k"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be 'raw' or 'mel', got {self.frontend!r}")
        if not self.pattern or set(self.pattern) - set(LAYER_TYPES):
            raise ValueError(
                f"pattern must be a non-empty string of {sorted(LAYER_TYPES)} "
                f"(M = BiMamba, A = attention), got {self.pattern!r}"
            )
        if self.attention_impl not in ("sdpa", "explicit"):
            raise ValueError(f"attention_impl must be 'sdpa' or 'explicit', got {self.attention_impl!r}")
        if self.scan_backend not in ("auto", "reference", "triton", "cpu", "export"):
            raise ValueError(
                f"scan_backend must be 'auto', 'reference', 'triton', 'cpu' or 'export', got {self.scan_backend!r}"
            )
        check_lean_setting(self.lean_blocks)
        if self.mel_stft not in STFT_MODES:
            raise ValueError(f"mel_stft must be one of {STFT_MODES}, got {self.mel_stft!r}")
        if self.pos_encoding not in ("none", "sinusoidal"):
            raise ValueError(f"pos_encoding must be 'none' or 'sinusoidal', got {self.pos_encoding!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
