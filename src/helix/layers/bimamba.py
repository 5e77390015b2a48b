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
from helix.ops.backend import compute_dtype, resolve_backend
from helix.ops.bimamba import bimamba_inner
from helix.ops.layer_norm import apply_norm_residual
from helix.ops.lengths import reverse_within
from helix.ops.residual import add_bias_residual


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
        # lean path: what to save instead of recomputing in backward, "none", "states" or "all"
        # (ops/bimamba/fused.py); the model chooses it per layer (HelixClassifier)
        self.keep_activations = "none"
        self.norm = nn.LayerNorm(d_model)
        self.fwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.bwd = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, scan_backend)
        self.proj = nn.Linear(2 * d_model, d_model)
        # the fused path's weight layout (not saved: it follows from the shapes)
        index, source, self.compose_shapes, self.compose_matrices = compose_index(self)
        self.register_buffer("compose_index", index, persistent=False)
        self.register_buffer("compose_source", source, persistent=False)

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
        dtype = compute_dtype(x)
        # (B, L, Dm) in the compute dtype from one kernel on CUDA (the products take it anyway)
        # the stream comes back through the norm's autograd function (on the kernel path): its backward adds
        # the residual path's gradient to dx in its own pass (RESULTS.md section 22)
        h, x = apply_norm_residual(self.norm, x, dtype)
        w = _composed_weights(self, dtype)
        out = bimamba_inner(h, **w, R=self.fwd.ssm.dt_rank, backend=self.fwd.ssm.scan_backend,
                            lean=is_lean(self.lean, x), lengths=lengths,
                            keep=self.keep_activations if torch.is_grad_enabled() else "none")
        # one kernel on CUDA for the stream, the output and its bias (PyTorch's broadcast add was 0.27 ms)
        return add_bias_residual(x, out.transpose(1, 2), self.proj.bias)


MATRICES = ("w_x", "w_z", "w_xp", "w_dt")
"""Composed weights the fused op takes in the compute dtype; the rest (:data:`VECTORS`) stay fp32."""
VECTORS = ("conv_w", "conv_b", "A", "D", "dt_bias")


def _direction_params(block: BiMambaBlock) -> list[torch.Tensor]:
    """The per-direction parameters the composed weights are made of, in a fixed order."""
    f, r = block.fwd.ssm, block.bwd.ssm
    return [block.fwd.in_proj.weight, block.bwd.in_proj.weight, f.conv1d.weight, r.conv1d.weight,
            f.conv1d.bias, r.conv1d.bias, f.x_proj.weight, r.x_proj.weight, f.dt_proj.weight, r.dt_proj.weight,
            f.A_log, r.A_log, f.D, r.D, f.dt_proj.bias, r.dt_proj.bias]


def _stack_directions(ps: list[torch.Tensor], E: int, N: int, R: int) -> dict[str, torch.Tensor]:
    """Both directions stacked along channels, block-diagonal where each direction has its own
    weights; ``A`` still as ``A_log`` and nothing cast (the layout only)."""
    in_f, in_r, cw_f, cw_r, cb_f, cb_r, xp_f, xp_r, dt_f, dt_r, al_f, al_r, d_f, d_r, db_f, db_r = ps
    return dict(
        w_x=torch.cat([in_f[:E], in_r[:E]]), w_z=torch.cat([in_f[E:], in_r[E:]]),
        w_xp=torch.cat([_block_diag(xp_f[:R], xp_r[:R]), _block_diag(xp_f[R:R + N], xp_r[R:R + N]),
                        _block_diag(xp_f[R + N:], xp_r[R + N:])]),
        w_dt=_block_diag(dt_f, dt_r),
        conv_w=torch.cat([cw_f, cw_r]).squeeze(1), conv_b=torch.cat([cb_f, cb_r]),
        A=torch.cat([al_f, al_r]), D=torch.cat([d_f, d_r]), dt_bias=torch.cat([db_f, db_r]))


def compose_index(block: BiMambaBlock) -> tuple[torch.Tensor, torch.Tensor, tuple, int]:
    """Where each element of the composed weights comes from (index into ``[0, *flat params]``,
    with 0 for the zeros of the block-diagonals); where each parameter element went (index into the
    composed elements, the inverse map: every parameter element sits at exactly one position); the
    composed shapes in :data:`MATRICES` + :data:`VECTORS` order; how many leading elements are
    matrices. Found by composing the parameters' own positions, so it is the layout of
    :func:`_stack_directions` by construction."""
    f = block.fwd.ssm
    positions, offset = [], 1
    for param in _direction_params(block):
        positions.append(torch.arange(offset, offset + param.numel(), dtype=torch.float64).view(param.shape))
        offset += param.numel()
    layout = _stack_directions(positions, f.d_inner, f.d_state, f.dt_rank)
    names = MATRICES + VECTORS
    index = torch.cat([layout[k].reshape(-1) for k in names]).long()
    shapes = tuple(tuple(layout[k].shape) for k in names)
    placed = index > 0
    if not torch.equal(torch.bincount(index[placed], minlength=offset)[1:], torch.ones(offset - 1, dtype=torch.long)):
        raise AssertionError("the composed layout must hold every parameter element exactly once")
    source = torch.empty(offset - 1, dtype=torch.long)
    source[index[placed] - 1] = torch.nonzero(placed).squeeze(1)
    # int32: both maps live on the device in every block (~0.76M elements each at the paper's width)
    return index.int(), source.int(), shapes, sum(layout[k].numel() for k in MATRICES)


class _ComposeWeights(torch.autograd.Function):
    """The per-direction parameters -> the fused op's stacked weights, in a few kernels each way.

    Composing with ``cat``, slices and block-diagonals costs ~35 small kernels per block forward and
    ~60 backward (each slice's backward fills a zero tensor and copies into it; RESULTS.md section
    11 counts them): a large share of a captured short step. Here forward is one gather from the
    concatenated parameters, one cast and ``A = -exp(A_log)``; backward gathers the composed
    gradients back through the inverse map ``source`` (every parameter element sits at exactly one
    position), and each parameter's gradient is a view of that one buffer. (An ``index_add_`` into
    the parameters was the first version: the block-diagonals' zeros all map to one slot, and its
    atomics on that one address took ~90 us per block on the H200, RESULTS.md section 12.)
    """

    @staticmethod
    def forward(ctx, index, source, shapes, n_matrices, dtype, *params):
        flat = torch.cat([params[0].new_zeros(1), *(p.reshape(-1) for p in params)])
        composed = flat.index_select(0, index)
        low = composed[:n_matrices].to(dtype)
        sizes = [torch.Size(s).numel() for s in shapes]
        parts = list(low.split(sizes[:len(MATRICES)])) + list(composed[n_matrices:].split(sizes[len(MATRICES):]))
        out = [part.view(shape) for part, shape in zip(parts, shapes)]
        a = len(MATRICES) + VECTORS.index("A")
        out[a] = -torch.exp(out[a])
        ctx.save_for_backward(source, out[a])
        ctx.param_shapes = [p.shape for p in params]
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        source, A = ctx.saved_tensors
        a = len(MATRICES) + VECTORS.index("A")
        grads = list(grads)
        grads[a] = grads[a] * A  # d(-exp(A_log)) / dA_log = A
        composed = torch.cat([g.reshape(-1).float() for g in grads])
        flat = composed.index_select(0, source)
        out, offset = [], 0
        for shape in ctx.param_shapes:
            out.append(flat[offset:offset + shape.numel()].view(shape))
            offset += shape.numel()
        return (None, None, None, None, None, *out)


def _composed_weights(block: BiMambaBlock, dtype: torch.dtype):
    """Both directions' weights stacked (and block-diagonal where each direction has its own), the
    matrices in ``dtype``; out_proj folded into the block projection."""
    params = _direction_params(block)
    if any(p.dtype != torch.float32 for p in params):  # a model cast as a whole: compose as written
        f = block.fwd.ssm
        w = _stack_directions(params, f.d_inner, f.d_state, f.dt_rank)
        w = {k: (v.to(dtype) if k in MATRICES else v.float()) for k, v in w.items()}
        w["A"] = -torch.exp(w["A"])
    else:
        composed = _ComposeWeights.apply(block.compose_index, block.compose_source, block.compose_shapes,
                                         block.compose_matrices, dtype, *params)
        w = dict(zip(MATRICES + VECTORS, composed))
    # proj([out_f(y_f); out_b(y_b)]) = [P_f W_f, P_b W_b] y + bias: one (Dm, 2E) product (P split
    # rather than sliced twice: the backward is one cat, not two zero-filled copies and an add)
    p_f, p_b = block.proj.weight.split(block.proj.weight.shape[0], dim=1)
    w["w_out"] = torch.cat([p_f @ block.fwd.out_proj.weight, p_b @ block.bwd.out_proj.weight], dim=1).to(dtype)
    return w
