"""Bidirectional Mamba block, eqs. (3)-(6) of the HELIX paper.

    H = LayerNorm(X);  Yf = Mamba_fwd(H);  Yb = Flip(Mamba_bwd(Flip(H)));  X' = X + W_proj [Yf; Yb]

Two paths compute the same function with the same parameters:
- the reference path (CPU, ``scan_backend="reference"``) runs the two mixers as written above;
- the fused path (Triton on CUDA) stacks both directions along channels, channels first (B, C, L):
  one in_proj matmul, one conv+SiLU kernel in which the backward half is anti-causal, block-diagonal
  x_proj/dt_proj matmuls, one bidirectional scan launch whose backward half reads time backwards,
  and out_proj folded into the block projection. No flipped copies and no (B, L, C) transposes of
  the inner width are made.

With ``lengths`` (B,) the backward direction reverses within each clip (it starts at the clip's own
last valid token) and no valid token reads a padded one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from helix.layers.lean import check_setting, is_lean
from helix.layers.mamba import MambaMixer
from helix.ops.backend import resolve_backend
from helix.ops.bimamba import bimamba_inner
from helix.ops.lengths import reverse_within


def _block_diag(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[[a, 0], [0, b]] for 2-D a, b (differentiable; weights of both directions in one matmul)."""
    top = torch.cat([a, a.new_zeros(a.shape[0], b.shape[1])], dim=1)
    bottom = torch.cat([b.new_zeros(b.shape[0], a.shape[1]), b], dim=1)
    return torch.cat([top, bottom], dim=0)


class BiMambaBlock(nn.Module):
    """(B, L, D) -> (B, L, D); two independent mixers, concatenated and projected (2D -> D)."""

    def __init__(self, d_model: int, d_state: int = 32, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, scan_backend: str = "auto", lean: bool | str = True):
        super().__init__()
        check_setting(lean)
        # fused path: recompute the inner activations in backward (ops/bimamba/fused.py); "auto": for
        # large batches only (layers/lean.py)
        self.lean = lean
        self.norm = nn.LayerNorm(d_model)
        self.fwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.bwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.proj = nn.Linear(2 * d_model, d_model)

    def use_fused(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` takes the stacked-direction path (the Triton kernels)."""
        return resolve_backend(self.fwd.ssm.scan_backend, x) == "triton"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D); ``lengths`` (B,) valid tokens per clip, None = all full."""
        if self.use_fused(x):
            return self.forward_fused(x, lengths)
        h = self.norm(x)
        y_fwd = self.fwd(h, lengths)
        y_bwd = reverse_within(self.bwd(reverse_within(h, lengths, 1), lengths), lengths, 1)
        return x + self.proj(torch.cat([y_fwd, y_bwd], dim=-1))

    def forward_fused(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Both directions stacked along channels (:mod:`helix.ops.bimamba`); same result as the
        two-mixer path. ``lean`` saves only h, x_dbl and y and recomputes the rest in backward;
        otherwise autograd composes the ops and keeps everything."""
        dtype = _compute_dtype(x)
        h = self.norm(x).to(dtype)  # (B, L, Dm), one cast here instead of one per product
        w = _composed_weights(self, dtype)
        out = bimamba_inner(h, **w, R=self.fwd.ssm.dt_rank, backend=self.fwd.ssm.scan_backend,
                            lean=is_lean(self.lean, x), lengths=lengths)
        return x + (out.transpose(1, 2) + self.proj.bias)


def _composed_weights(block: BiMambaBlock, dtype: torch.dtype):
    """Both directions' weights stacked (and block-diagonal where each direction has its own)."""
    f, r = block.fwd.ssm, block.bwd.ssm
    E, N, R = f.d_inner, f.d_state, f.dt_rank
    w_f, w_r = block.fwd.in_proj.weight, block.bwd.in_proj.weight
    wx_f, wx_r = f.x_proj.weight, r.x_proj.weight
    dm = block.proj.weight.shape[0]
    p = block.proj.weight
    # proj([out_f(y_f); out_b(y_b)]) = [P_f W_f, P_b W_b] y + bias: one (Dm, 2E) product
    return dict(
        w_x=torch.cat([w_f[:E], w_r[:E]]).to(dtype), w_z=torch.cat([w_f[E:], w_r[E:]]).to(dtype),
        conv_w=torch.cat([f.conv1d.weight, r.conv1d.weight]).squeeze(1).float(),
        conv_b=torch.cat([f.conv1d.bias, r.conv1d.bias]).float(),
        w_xp=torch.cat([_block_diag(wx_f[:R], wx_r[:R]), _block_diag(wx_f[R:R + N], wx_r[R:R + N]),
                        _block_diag(wx_f[R + N:], wx_r[R + N:])]).to(dtype),
        w_dt=_block_diag(f.dt_proj.weight, r.dt_proj.weight).to(dtype),
        A=-torch.exp(torch.cat([f.A_log, r.A_log]).float()), D=torch.cat([f.D, r.D]).float(),
        dt_bias=torch.cat([f.dt_proj.bias, r.dt_proj.bias]).float(),
        w_out=torch.cat([p[:, :dm] @ block.fwd.out_proj.weight, p[:, dm:] @ block.bwd.out_proj.weight],
                        dim=1).to(dtype))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's own dtype."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype
