"""Pre-norm Transformer block, eqs. (7)-(9) of the HELIX paper.

    A = X + MHA(LN(X));  X' = A + FFN(LN(A)),  FFN = Linear(D, F) -> GELU -> Linear(F, D)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from helix.layers.lean import check_setting, is_lean
from helix.ops.attention import ATTENTION_IMPLS, attention
from helix.ops.backend import compute_dtype
from helix.ops.layer_norm import apply_norm_residual
from helix.ops.residual import add_bias_residual


class MultiHeadAttention(nn.Module):
    """Packed qkv projection (3D^2 + 3D) and output projection (D^2 + D): 4D^2 + 4D parameters."""

    def __init__(self, d_model: int, n_heads: int, impl: str = "sdpa"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.n_heads, self.impl = n_heads, impl
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor | None = None, bias: bool = True) -> torch.Tensor:
        """h (B, L, D) -> (B, L, D); keys past ``lengths[b]`` are masked (None: no mask at all). ``bias=False``
        leaves the output projection's bias to the caller (the block adds it with the residual)."""
        Bsz, L, Dm = h.shape
        qkv = self.qkv(h).view(Bsz, L, 3, self.n_heads, Dm // self.n_heads)
        # unbind, not qkv[i]: three selects' backward each zero-fills and adds a (B, L, 3, H, Dh) buffer; and
        # unbind before the (B, L, H, Dh) -> (B, H, L, Dh) transposes, so its backward stacks dq, dk, dv
        # straight into the projection's layout (unbinding a permuted view cost a second full copy)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        y = attention(q, k, v, self.impl, lengths)  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(Bsz, L, Dm)
        return self.out(y) if bias else F.linear(y, self.out.weight)


class FeedForward(nn.Sequential):
    """Linear(D, F) -> GELU -> Linear(F, D), its parameters and state-dict keys those of the
    ``nn.Sequential`` it extends. On ``pad_devices`` (CUDA) the products run with F rounded up to a
    multiple of 8: the parameter-matched widths are odd (F = 1543 for HELIX), and bf16 rows of 1543
    elements are not 16-byte aligned, so cuBLAS fell back to a pre-Hopper kernel for the products that
    read or write the (B, L, F) activation (2.3 ms per call at 300 s, B=8, on the H200). The padding is
    zero rows of the first weight and bias and zero columns of the second, and GELU(0) = 0: the result
    is the unpadded function's, and the gradients reach only the real parameters (``F.pad``'s backward
    slices them out)."""

    pad_devices: tuple[str, ...] = ("cuda",)

    def forward(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """``bias=False`` leaves the second product's bias to the caller (the block adds it with the residual)."""
        first, act, second = self
        b2 = second.bias if bias else None
        pad = -first.out_features % 8
        if not pad or x.device.type not in self.pad_devices:
            return F.linear(act(first(x)), second.weight, b2)
        w1 = F.pad(first.weight, (0, 0, 0, pad))
        b1 = F.pad(first.bias, (0, pad)) if first.bias is not None else None
        return F.linear(act(F.linear(x, w1, b1)), F.pad(second.weight, (0, pad)), b2)


class AttentionBlock(nn.Module):
    """(B, L, D) -> (B, L, D).

    ``lean``: backward recomputes everything but attention itself (selective checkpointing): the
    block keeps its input and SDPA's outputs, and remakes the norms, the qkv and output products and
    the FFN (whose (B, L, F) input and output are the block's widest activations: at 300 s, B=8 and
    F=1543, 1.5 GB; q, k, v another 0.37 GB). The recompute is two LayerNorms, four matmuls and a
    GELU, not the attention (which costs more than all of them at long lengths). It applies to inputs
    on ``lean_devices`` (CUDA): on a CPU it cost 3-10% of a HELIX step and memory is rarely what
    limits there (the BiMamba blocks' lean path is GPU-only too).
    """

    lean_devices: tuple[str, ...] = ("cuda",)

    def __init__(self, d_model: int, d_ffn: int, n_heads: int = 4, impl: str = "sdpa", lean: bool | str = False):
        super().__init__()
        check_setting(lean)
        self.lean = lean  # True, False or "auto" (large batches only: layers/lean.py)
        if d_ffn <= 0:
            raise ValueError(f"d_ffn must be positive, got {d_ffn}")
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, impl)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(nn.Linear(d_model, d_ffn), nn.GELU(), nn.Linear(d_ffn, d_model))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # the size rule last: inference and export never evaluate it (no shape guard in their graphs)
        if x.device.type in self.lean_devices and torch.is_grad_enabled() and x.requires_grad and is_lean(self.lean, x):
            return checkpoint(self._body, x, lengths, use_reentrant=False, context_fn=_keep_attention_outputs)
        return self._body(x, lengths)

    def _body(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        # the norms in the products' dtype (autocast would cast their fp32 output for the product anyway),
        # from one kernel where helix.ops.layer_norm applies
        # each residual stream comes back through its norm's autograd function (on the kernel path), whose
        # backward adds the residual path's gradient to dx in its own pass; the output products' biases are
        # added with the residual by one kernel on CUDA (helix.ops.residual: PyTorch's add of a bf16 product
        # to the fp32 stream ran unvectorised, 0.22 ms per add at 300 s, B=8)
        h, x = apply_norm_residual(self.norm1, x, compute_dtype(x))
        a = add_bias_residual(x, self.attn(h, lengths, bias=False), self.attn.out.bias)
        h, a = apply_norm_residual(self.norm2, a, compute_dtype(a))
        return add_bias_residual(a, self.ffn(h, bias=False), self.ffn[2].bias)


def _attention_saved(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing: keep what SDPA returns (its backward's own inputs are remade)."""
    if "_scaled_dot_product" in str(op):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _keep_attention_outputs():
    return create_selective_checkpoint_contexts(_attention_saved)
