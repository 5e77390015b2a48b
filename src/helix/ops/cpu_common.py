"""What the numba CPU kernels share: a vectorisable fp32 exp and the thread and dtype plumbing.

numba's wheels bring no vector maths library, so a plain ``exp`` in a loop stays scalar and
dominates the kernels' time; :func:`exp_fast` builds 2^k from the exponent bits and 2^f from a
polynomial, which LLVM vectorises.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

# njit options for kernels whose loops must vectorise. error_model="numpy": numba's default ("python")
# guards every division with a zero test that raises, and that branch keeps LLVM from vectorising a
# loop with a division in it (the SiLU 1 / (1 + e^-v)); numpy's model returns inf/nan instead.
# numba keys its on-disk cache on the kernel's own file: after changing these (or exp_fast), clear
# the __pycache__ of the kernels that use them.
VECTOR_JIT = dict(fastmath=True, error_model="numpy", cache=True)

_LOG2E = np.float32(1.4426950408889634)
_HALF, _F1 = np.float32(0.5), np.float32(1.0)
_EXP_LO, _EXP_HI = np.float32(-126.0), np.float32(127.0)
_P1, _P2, _P3 = np.float32(0.6931471805599453), np.float32(0.2402265069591007), np.float32(0.05550410866482158)
_P4, _P5 = np.float32(0.009618129107628477), np.float32(0.0013333558146428443)
_P6, _P7 = np.float32(0.00015403530393381606), np.float32(1.525273380405984e-05)


@intrinsic
def _bits_as_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as an fp32 (an LLVM bitcast, so it vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0],
                               ir.FloatType())

    return types.float32(bits), codegen


@njit(fastmath=True, cache=True, inline="always")
def exp_fast(x):
    """exp for fp32 that LLVM vectorises: 2^k by building the exponent bits, 2^f by a polynomial.

    Inputs are clamped to e^[-126 ln2, 127 ln2]: the smallest result is 2^-126 (not 0), far below
    anything that reaches the state or a gradient at fp32 precision.
    """
    t = x * _LOG2E
    t = _EXP_LO if t < _EXP_LO else (_EXP_HI if t > _EXP_HI else t)
    k = np.floor(t + _HALF)
    f = t - k
    p = _P7 * f + _P6
    p = p * f + _P5
    p = p * f + _P4
    p = p * f + _P3
    p = p * f + _P2
    p = p * f + _P1
    p = p * f + _F1
    return p * _bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@contextlib.contextmanager
def torch_threads():
    """Run numba's parallel loops on torch's thread count (``--threads``, torch.set_num_threads).

    numba's OpenMP layer can share torch's OpenMP runtime, and launching its pool sets the runtime's
    thread count to numba's maximum: torch's count is put back, so a kernel call never changes it.
    """
    before = torch.get_num_threads()
    n = max(1, min(before, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def f32(x: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous fp32 copy (or x itself when it already is one)."""
    return x.detach().to(torch.float32).contiguous()


def f32_view(x: torch.Tensor) -> torch.Tensor:
    """fp32 without a copy when x already is: the kernels read (B, D, L) arrays of any strides."""
    return x.detach().to(torch.float32)
