"""Bidirectional Mamba block, eqs. (3)-(6) of the HELIX paper.

    H = LayerNorm(X);  Yf = Mamba_fwd(H);  Yb = Flip(Mamba_bwd(Flip(H)));  X' = X + W_proj [Yf; Yb]

Two paths compute the same function with the same parameters:
- the reference path (CPU, ``scan_backend="reference"``) runs the two mixers as written above;
- the fused path (Triton on CUDA) stacks both directions along channels, channels first (B, C, L):
  one in_proj matmul, one conv+SiLU kernel in which the backward half is anti-causal, block-diagonal
  x_proj/dt_proj matmuls, one bidirectional scan launch whose backward half reads time backwards,
  and out_proj folded into the block projection. No flipped copies and no (B, L, C) transposes of
  the inner width are made.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from helix.layers.mamba import MambaMixer
from helix.ops.selective_scan import selective_scan_bidirectional, triton_available
from helix.ops.selective_scan.causal_conv import causal_conv1d_silu


def _block_diag(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[[a, 0], [0, b]] for 2-D a, b (differentiable; weights of both directions in one matmul)."""
    top = torch.cat([a, a.new_zeros(a.shape[0], b.shape[1])], dim=1)
    bottom = torch.cat([b.new_zeros(b.shape[0], a.shape[1]), b], dim=1)
    return torch.cat([top, bottom], dim=0)


class BiMambaBlock(nn.Module):
    """(B, L, D) -> (B, L, D); two independent mixers, concatenated and projected (2D -> D)."""

    def __init__(self, d_model: int, d_state: int = 32, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, scan_backend: str = "auto"):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.bwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.proj = nn.Linear(2 * d_model, d_model)

    def use_fused(self, x: torch.Tensor) -> bool:
        backend = self.fwd.ssm.scan_backend
        if backend in ("reference", "export"):
            return False
        return backend == "triton" or (x.is_cuda and triton_available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fused(x):
            return self.forward_fused(x)
        h = self.norm(x)
        y_fwd = self.fwd(h)
        y_bwd = self.bwd(h.flip(1)).flip(1)
        return x + self.proj(torch.cat([y_fwd, y_bwd], dim=-1))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Both directions stacked along channels; same result as the reference path.

        Every product is a batched matmul with the weight broadcast over the batch, so activations
        stay channels-first (B, C, L) and contiguous end to end: a plain ``matmul`` would fold the
        batch into the rows and hand back a transposed (B, L, C) result, which costs a strided copy
        of the full inner width per use and per gradient (~15 ms per block at 300 s, B=8).
        """
        f, r = self.fwd.ssm, self.bwd.ssm
        E, N, R = f.d_inner, f.d_state, f.dt_rank
        backend = f.scan_backend
        dtype = _compute_dtype(x)
        h = self.norm(x).to(dtype)  # (B, L, Dm), one cast here instead of one per product
        h_t = h.transpose(1, 2)  # (B, Dm, L) view: cuBLAS reads it as a transposed operand
        w_f, w_r = self.fwd.in_proj.weight, self.bwd.in_proj.weight  # (2E, Dm): rows [x; z]
        # x and z as two products rather than slices of one: a slice's backward would zero-fill a
        # (B, 4E, L) gradient per block
        x_in = _bmm(torch.cat([w_f[:E], w_r[:E]]), h_t, dtype)  # (B, 2E, L): x_f, x_b
        z = _bmm(torch.cat([w_f[E:], w_r[E:]]), h_t, dtype)  # (B, 2E, L): z_f, z_b
        conv_w = torch.cat([f.conv1d.weight, r.conv1d.weight]).squeeze(1)  # (2E, K)
        conv_b = torch.cat([f.conv1d.bias, r.conv1d.bias])
        u = causal_conv1d_silu(x_in, conv_w, conv_b, bidirectional=True, backend=backend)  # (B, 2E, L)
        wx_f, wx_r = f.x_proj.weight, r.x_proj.weight  # (R + 2N, E)
        w_x = torch.cat([_block_diag(wx_f[:R], wx_r[:R]), _block_diag(wx_f[R:R + N], wx_r[R:R + N]),
                         _block_diag(wx_f[R + N:], wx_r[R + N:])])  # (2R + 4N, 2E)
        x_dbl = _bmm(w_x, u, dtype)  # (B, 2R + 4N, L): dt_f, dt_b, B_f, B_b, C_f, C_b
        delta = _bmm(_block_diag(f.dt_proj.weight, r.dt_proj.weight), x_dbl[:, :2 * R], dtype)  # (B, 2E, L)
        Bm = x_dbl[:, 2 * R:2 * R + 2 * N].unflatten(1, (2, N))  # (B, 2, N, L)
        Cm = x_dbl[:, 2 * R + 2 * N:].unflatten(1, (2, N))
        A = -torch.exp(torch.cat([f.A_log, r.A_log]).float())  # (2E, N), fp32 under autocast
        y = selective_scan_bidirectional(
            u, delta, A, Bm, Cm, torch.cat([f.D, r.D]).float(), z=z,
            delta_bias=torch.cat([f.dt_proj.bias, r.dt_proj.bias]).float(), delta_softplus=True,
            backend=backend)  # (B, 2E, L)
        # proj([out_f(y_f); out_b(y_b)]) = [P_f W_f, P_b W_b] y + bias: one (Dm, 2E) product
        dm = x.shape[-1]
        p = self.proj.weight
        w_out = torch.cat([p[:, :dm] @ self.fwd.out_proj.weight, p[:, dm:] @ self.bwd.out_proj.weight], dim=1)
        out = _bmm(w_out, y, dtype)  # (B, Dm, L)
        return x + (out.transpose(1, 2) + self.proj.bias)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's own dtype."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _bmm(w: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w (M, K) times every x[b] (K, L) -> (B, M, L) contiguous; w is broadcast, never copied B times."""
    return torch.bmm(w.to(dtype).expand(x.shape[0], -1, -1), x.to(dtype))
