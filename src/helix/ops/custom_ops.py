"""What the ``torch.library`` registrations of the kernels share (the ops: ``ops/*/library.py``).

Every fast kernel (Triton, numba) is registered as a pair of custom ops in the ``helix`` namespace,
``<op>`` and ``<op>_backward``, each with a fake (meta) implementation, and the forward op gets an
autograd formula that calls the backward op. ``torch.compile(fullgraph=True)`` and
``torch.export`` then see one opaque node per kernel call instead of tracing into Python launchers,
``.numpy()`` calls or thread-count bookkeeping. The pure-PyTorch references need none of this.

A fake implementation must describe its real output exactly (shape, strides, dtype), or a compiled
graph would be built on wrong metadata. The kernels pick layouts for speed (e.g. token-major outputs
for token-major inputs), so each op declares its layouts with the helpers below, the fake allocates
them and the real implementation passes its results through :func:`conform`, which copies only in
the rare case a kernel hands back another layout. Fake and real agree by construction.
"""

from __future__ import annotations

import torch

NAMESPACE = "helix"


class SavedCtx:
    """Stands in for autograd's ``ctx`` so a kernel's own ``autograd.Function.forward/backward``
    (static methods) can run unchanged inside an op: it records what they save and set."""

    def __init__(self, saved_tensors: tuple = (), **attrs):
        self.saved_tensors = saved_tensors
        self.__dict__.update(attrs)

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def contiguous_strides(shape) -> tuple:
    """Row-major strides of ``shape`` (works with symbolic sizes)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step = step * size
    return tuple(reversed(strides))


def token_major(x: torch.Tensor) -> bool:
    """Whether the CPU kernels lay a (B, C, L) result out token-major (as the transpose of a
    (B, L, C) buffer): they do when ``x`` has no unit stride along L (and L > 1)."""
    return x.stride(-1) != 1 and x.shape[-1] > 1


def bcl_strides(x: torch.Tensor, token_major_layout: bool) -> tuple:
    """Strides of a fresh (B, C, L) tensor shaped as ``x``: contiguous, or token-major."""
    Bsz, C, L = x.shape
    return (L * C, 1, C) if token_major_layout else (C * L, L, 1)


def transposed_strides(shape) -> tuple:
    """Strides of ``t.transpose(-1, -2)`` for a contiguous ``t`` of the transposed shape."""
    s = list(contiguous_strides((*shape[:-2], shape[-1], shape[-2])))
    s[-1], s[-2] = s[-2], s[-1]
    return tuple(s)


def fake(like: torch.Tensor, shape, strides=None, dtype=None) -> torch.Tensor:
    """A new tensor on ``like``'s device with the declared metadata (contiguous when ``strides`` is None)."""
    shape = tuple(shape)
    return like.new_empty_strided(shape, strides if strides is not None else contiguous_strides(shape),
                                  dtype=dtype if dtype is not None else like.dtype)


def conform(t: torch.Tensor, shape, strides=None, dtype=None) -> torch.Tensor:
    """``t`` if it already has the declared metadata, else a copy that has it."""
    shape = tuple(shape)
    strides = strides if strides is not None else contiguous_strides(shape)
    dtype = dtype if dtype is not None else t.dtype
    if tuple(t.shape) != shape:
        raise RuntimeError(f"helix custom op: a kernel returned shape {tuple(t.shape)}, declared {shape}")
    # strict, size-1 dims included: compilers may check every stride of an op's output
    if tuple(t.stride()) == tuple(strides) and t.dtype == dtype:
        return t
    out = t.new_empty_strided(shape, strides, dtype=dtype)
    out.copy_(t)
    return out


def empty_like_absent(like: torch.Tensor) -> torch.Tensor:
    """The placeholder an op returns for an absent optional gradient (ops cannot return None)."""
    return like.new_empty((0,))
