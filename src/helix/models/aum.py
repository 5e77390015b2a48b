"""Audio Mamba (AuM, Erol et al. 2024): bidirectional Mamba over 16x16 log-mel patches.

Patch embedding -> learned positional embeddings with a class token inserted in the MIDDLE of the
sequence -> a stack of bidirectional Mamba blocks (Vim style: one in_proj/out_proj shared by a
forward and a backward scan, the two directions averaged) -> LayerNorm of the class token -> linear.
Sizes follow ViM/AuM: tiny D=192, small D=384, base D=768, each 24 blocks, N=16.

Variable-length batches (``lengths`` (B,) samples): each clip gets the positional table sized for
its own patch count, its class token in the middle of its own valid tokens, and a backward scan that
starts at its own last token, so its logits equal those of the clip run alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from helix.frontends.checks import check_lengths, check_waveform
from helix.frontends.mel import STFT_MODES, MelFrontend
from helix.layers.mamba import SelectiveSSM
from helix.ops.lengths import reverse_within, valid_mask

AUM_SIZES = {"tiny": (192, 24), "small": (384, 24), "base": (768, 24)}


@dataclass
class AuMConfig:
    """Audio Mamba hyper-parameters."""

    num_classes: int = 2
    """Output classes."""
    d_model: int = 192
    """Embedding width."""
    depth: int = 24
    """Number of bidirectional Mamba blocks."""
    d_state: int = 16
    """SSM state size."""
    expand: int = 2
    """Mamba inner width = expand * d_model."""
    max_seconds: float = 10.0
    """Clip length the positional table is sized for; longer inputs interpolate it along time."""
    scan_backend: str = "auto"
    """Selective-scan backend, as in ModelConfig."""
    sample_rate: int = 16000
    mel_stft: str = "fft"
    """How the log-mel frontend computes its STFT: "fft" (``torch.stft``) or "conv" (the same DFT as
    a strided convolution, which tracing and ONNX export can follow; ``helix export`` builds with it)."""
    n_mels: int = 128
    patch: int = 16

    def __post_init__(self):
        for name in ("num_classes", "d_model", "depth", "d_state", "expand", "sample_rate"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.mel_stft not in STFT_MODES:
            raise ValueError(f"mel_stft must be one of {STFT_MODES}, got {self.mel_stft!r}")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class AuMBlock(nn.Module):
    """x + out_proj(mean(SSM_fwd(x, z), Flip(SSM_bwd(Flip(x, z))))) with pre-LayerNorm. (B, L, D)."""

    def __init__(self, d_model: int, d_state: int, expand: int, scan_backend: str):
        super().__init__()
        e = expand * d_model
        dt_rank = math.ceil(d_model / 16)
        self.norm = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.ssm_fwd = SelectiveSSM(e, d_state, 4, dt_rank, scan_backend=scan_backend)
        self.ssm_bwd = SelectiveSSM(e, d_state, 4, dt_rank, scan_backend=scan_backend)
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D); the backward scan reverses within each clip's ``lengths``."""
        xi, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        y_f = self.ssm_fwd(xi, z, lengths)
        y_b = reverse_within(self.ssm_bwd(reverse_within(xi, lengths, 1), reverse_within(z, lengths, 1), lengths),
                             lengths, 1)
        # averaging keeps the output scale of one direction (summing doubles it, as Vim found)
        return x + self.out_proj(0.5 * (y_f + y_b))


class AudioMamba(nn.Module):
    """Waveforms (B, T) -> logits (B, num_classes)."""

    def __init__(self, config: AuMConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.frontend = MelFrontend(d, sample_rate=config.sample_rate, n_mels=config.n_mels, patch=config.patch,
                                    stft=config.mel_stft)
        self.freq_patches = config.n_mels // config.patch
        self.max_time_patches = math.ceil(self.frontend.num_frames(int(config.max_seconds * config.sample_rate))
                                          / config.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, d, self.freq_patches, self.max_time_patches))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.layers = nn.ModuleList(AuMBlock(d, config.d_state, config.expand, config.scan_backend)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_classes)

    lengths_read_on_host = True
    """Variable-length batches size each clip's positional table on the host (``sizes.tolist()``),
    so such a step cannot be captured in a CUDA graph."""

    @property
    def min_samples(self) -> int:
        return self.frontend.min_samples

    def num_tokens(self, num_samples: int) -> int:
        return self.frontend.num_tokens(num_samples) + 1

    def _positions(self, time_patches: int) -> torch.Tensor:
        """The positional table (1, D, Fm, time_patches) for a clip of that many patch columns."""
        pos = self.pos_embed
        if time_patches != pos.shape[-1]:
            # other clip lengths: stretch the learned table along time (as AST/AuM do for new lengths)
            pos = F.interpolate(pos, size=(pos.shape[2], time_patches), mode="bilinear", align_corners=False)
        return pos

    def forward_features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) [+ lengths (B,) samples] -> the class token's features (B, D)."""
        what = "Audio Mamba mel frontend"
        check_waveform(wave, self.min_samples, what)
        lengths = check_lengths(lengths, wave, self.min_samples, what)
        grid = self.frontend.patch_grid(wave, lengths)  # (B, D, Fm, Ft)
        Ft = grid.shape[-1]
        if lengths is None:
            pos = self._positions(Ft)
        else:
            # each clip's own table (sized for its patch columns), zero-padded to the batch's columns
            cols = self.frontend.time_patches(lengths)  # (B,)
            sizes, which = torch.unique(cols, return_inverse=True)
            tables = torch.cat([F.pad(self._positions(n), (0, Ft - n)) for n in sizes.tolist()])
            pos = tables[which]  # (B, D, Fm, Ft)
        tokens = self.frontend.norm((grid + pos).permute(0, 3, 2, 1).flatten(1, 2))  # time-major (B, L, D)
        cls = (self.cls_token + self.cls_pos).expand(tokens.shape[0], -1, -1)
        if lengths is None:
            mid = tokens.shape[1] // 2
            x = torch.cat([tokens[:, :mid], cls, tokens[:, mid:]], dim=1)
            for layer in self.layers:
                x = layer(x)
            return self.norm(x[:, mid])
        tok = self.frontend.token_lengths(lengths)  # (B,) valid patch tokens
        mid = torch.div(tok, 2, rounding_mode="floor")  # (B,) class token index, mid-clip
        j = torch.arange(tokens.shape[1] + 1, device=tokens.device)[None, :]  # (1, L + 1)
        src = (j - (j > mid[:, None]).long()).clamp(max=tokens.shape[1] - 1)  # token at each new slot
        x = torch.gather(tokens, 1, src.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))
        x = torch.where((j == mid[:, None]).unsqueeze(-1), cls, x)
        x = x * valid_mask(tok + 1, x.shape[1]).unsqueeze(-1).to(x.dtype)  # padded tokens carry nothing
        for layer in self.layers:
            x = layer(x, tok + 1)
        return self.norm(x[torch.arange(x.shape[0], device=x.device), mid])

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) [+ lengths (B,) samples] -> logits (B, num_classes)."""
        return self.head(self.forward_features(wave, lengths))
