"""HelixClassifier: frontend -> layer pattern (BiMamba / attention) -> LayerNorm -> pool -> linear."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from helix.frontends import build_frontend
from helix.layers.attention import AttentionBlock
from helix.layers.bimamba import BiMambaBlock
from helix.models.config import ModelConfig
from helix.models.params import solve_ffn_width


def build_layer(kind: str, cfg: ModelConfig, d_ffn: int) -> nn.Module:
    if kind == "M":
        return BiMambaBlock(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.resolved_dt_rank,
                            cfg.scan_backend, lean=cfg.lean_blocks)
    if kind == "A":
        return AttentionBlock(cfg.d_model, d_ffn, cfg.n_heads, cfg.attention_impl)
    raise ValueError(f"unknown layer type {kind!r} in pattern (expected 'M' or 'A')")


def sinusoidal_positions(L: int, d: int, device, dtype) -> torch.Tensor:
    pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(L, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe.to(dtype)


class HelixClassifier(nn.Module):
    """Waveforms (B, T) at ``config.sample_rate`` -> logits (B, num_classes)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.d_ffn = config.d_ffn or solve_ffn_width(
            config.d_model, config.d_state, config.d_conv, config.expand, config.resolved_dt_rank
        )
        self.frontend = build_frontend(
            config.frontend, config.d_model, config.sample_rate,
            **({"n_fft": config.n_fft, "hop": config.hop, "n_mels": config.n_mels, "patch": config.patch}
               if config.frontend == "mel" else {}),
        )
        self.layers = nn.ModuleList(build_layer(k, config, self.d_ffn) for k in config.pattern)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.num_classes)

    @property
    def min_samples(self) -> int:
        return self.frontend.min_samples

    def num_tokens(self, num_samples: int) -> int:
        return self.frontend.num_tokens(num_samples)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) -> per-token features after the final LayerNorm, (B, L, D)."""
        x = self.frontend(wave)
        if self.config.pos_encoding == "sinusoidal":
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for layer in self.layers:
            if self.config.recompute and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.norm(x)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) -> pooled embedding (B, D): mean over all tokens or the first K (eq. 11)."""
        x = self.encode(wave)
        k = self.config.pool_first_k
        return (x[:, :k] if k else x).mean(dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(wave))
