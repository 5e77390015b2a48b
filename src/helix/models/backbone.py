"""HelixClassifier: frontend -> layer pattern (BiMamba / attention) -> LayerNorm -> pool -> linear.

Variable-length batches: ``model(wave, lengths)`` with ``lengths`` (B,) int64 samples per clip
(None = all full). Token lengths come from the frontend and reach every layer; pooling counts valid
tokens only. Clip b's logits equal those of ``model(wave[b:b+1, :lengths[b]])`` run alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from helix.frontends import build_frontend
from helix.frontends.checks import check_lengths, check_waveform
from helix.layers.attention import AttentionBlock
from helix.layers.bimamba import BiMambaBlock
from helix.layers.lean import is_lean_batch
from helix.models.config import ModelConfig
from helix.models.params import solve_ffn_width
from helix.ops.layer_norm import apply_norm
from helix.ops.lengths import valid_mask


def build_layer(kind: str, cfg: ModelConfig, d_ffn: int) -> nn.Module:
    if kind == "M":
        return BiMambaBlock(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.resolved_dt_rank,
                            cfg.scan_backend, lean=cfg.lean_blocks)
    if kind == "A":
        return AttentionBlock(cfg.d_model, d_ffn, cfg.n_heads, cfg.attention_impl, lean=cfg.lean_blocks)
    raise ValueError(f"unknown layer type {kind!r} in pattern (expected 'M' or 'A')")


CHECKPOINT_FRONTEND = ("cuda",)
"""Devices on which a lean training step (``layers.lean.is_lean_batch``: large batches) of the raw frontend
keeps only the waveform for backward and runs the frontend again there (a reshape, one (B L, 160) x
(160, D) product and its norm) instead of saving its product's bf16 input and output (0.2 GB at 300 s, B=8):
that memory pays for a chunk-state layer (:func:`keep_activations`). On a CPU memory rarely limits."""

KEPT_STATE_LAYERS = 4
"""BiMamba layers before the last one that keep their scan's chunk states for backward
(:func:`keep_activations`). Four since session 20: the norms' fp16 xhat (``ops.layer_norm.triton.SAVE_XHAT``)
and the frontend's recompute (:data:`CHECKPOINT_FRONTEND`) freed the memory for two more (RESULTS.md
section 23)."""


def keep_activations(layers, pattern: str) -> None:
    """What each lean BiMamba layer saves instead of recomputing (``ops/bimamba/fused.py`` ``keep``).

    The last layer's backward runs first, while every layer's saved tensors are alive anyway: if it is a
    BiMamba layer it keeps everything ("all"), which adds nothing to the step's peak (its own recompute
    would allocate the same buffers then). The :data:`KEPT_STATE_LAYERS` BiMamba layers before it keep
    their chunk states ("states"; 0.49 GB each at 300 s, B=8), which spares their backward the forward's
    chunk sums and a carry, ~1.1 ms each. Measured on the H200 (benchmarks/RESULTS.md sections 22, 23)."""
    mixers = [i for i, kind in enumerate(pattern) if kind == "M"]
    if not mixers or mixers[-1] != len(pattern) - 1:
        return
    layers[mixers[-1]].keep_activations = "all"
    for i in mixers[-1 - KEPT_STATE_LAYERS:-1]:
        layers[i].keep_activations = "states"


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
            **({"n_fft": config.n_fft, "hop": config.hop, "n_mels": config.n_mels, "patch": config.patch,
                "stft": config.mel_stft}
               if config.frontend == "mel" else {}),
        )
        self.layers = nn.ModuleList(build_layer(k, config, self.d_ffn) for k in config.pattern)
        if not config.recompute:
            keep_activations(self.layers, config.pattern)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.num_classes)

    @property
    def min_samples(self) -> int:
        return self.frontend.min_samples

    def num_tokens(self, num_samples: int) -> int:
        return self.frontend.num_tokens(num_samples)

    def token_lengths(self, wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """Checked (B,) token counts for ``lengths`` (B,) samples; None when every clip is full."""
        lengths = check_lengths(lengths, wave, self.min_samples, f"{self.config.frontend} frontend")
        return None if lengths is None else self.frontend.token_lengths(lengths)

    def encode(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, return_lengths: bool = False):
        """(B, T) [+ lengths (B,) samples] -> per-token features after the final LayerNorm, (B, L, D),
        zero past each clip's tokens; with ``return_lengths`` also the (B,) token lengths (None when
        every clip is full)."""
        check_waveform(wave, self.min_samples, f"{self.config.frontend} frontend")
        tok = self.token_lengths(wave, lengths)
        sample_lengths = None if tok is None else lengths
        if self._checkpoints_frontend(wave):
            # no random ops inside: no RNG state to save and restore (nor to touch under graph capture)
            x = checkpoint(self.frontend, wave, sample_lengths, use_reentrant=False, preserve_rng_state=False)
        else:
            x = self.frontend(wave, sample_lengths)
        if self.config.pos_encoding == "sinusoidal":
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for layer in self.layers:
            if self.config.recompute and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, tok, use_reentrant=False)
            else:
                x = layer(x, tok)
        x = apply_norm(self.norm, x)
        if tok is not None:
            x = x * valid_mask(tok, x.shape[1]).unsqueeze(-1).to(x.dtype)
        return (x, tok) if return_lengths else x

    def _checkpoints_frontend(self, wave: torch.Tensor) -> bool:
        """Whether this training step recomputes the frontend in backward (:data:`CHECKPOINT_FRONTEND`)."""
        if self.config.frontend != "raw" or wave.device.type not in CHECKPOINT_FRONTEND:
            return False
        return (self.training and torch.is_grad_enabled()
                and is_lean_batch(self.config.lean_blocks, wave.shape[0] * self.num_tokens(wave.shape[1])))

    def forward_features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) [+ lengths] -> pooled embedding (B, D): mean over each clip's valid tokens, or over
        its first K (eq. 11; fewer when the clip is shorter)."""
        x, tok = self.encode(wave, lengths, return_lengths=True)
        return masked_mean(x, tok, self.config.pool_first_k)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) [+ lengths (B,) samples] -> logits (B, num_classes)."""
        return self.head(self.forward_features(wave, lengths))


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None, first_k: int | None = None) -> torch.Tensor:
    """Mean of x (B, L, D) over each row's first ``lengths[b]`` tokens (all when None), capped at
    ``first_k``: padded tokens never count."""
    if first_k:
        x = x[:, :first_k]
    if lengths is None:
        return x.mean(dim=1)
    keep = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    count = lengths.clamp(max=x.shape[1]).to(x.dtype).unsqueeze(-1)  # (B, 1)
    return (x * keep).sum(dim=1) / count
