"""Kernel tests without a GPU run through Triton's interpreter (TRITON_INTERPRET=1).

The variable must be set before ``@triton.jit`` runs, i.e. before helix's Triton module is imported;
the dispatcher imports it lazily, so setting it here (conftests load before test modules) suffices.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The scans' combine functions written in NumPy: the same float32 operations, in the same order, as the
# interpreter performs for the Triton function (one rounding per multiply and per add, no FMA), without
# its per-operation type checks and broadcasts (an interpreted BiMamba block: 37.9 -> 24.0 s,
# benchmarks/bench_interpreter_block.py). Any other combine, or other dtypes, take the interpreter's own operations.
_NUMPY_COMBINES = {
    "helix.ops.selective_scan.chunk_state._combine": lambda a_l, x_l, a_r, x_r: (a_l * a_r, a_r * x_l + x_r),
    "helix.ops.selective_scan.chunk_state._right": lambda l, r: r,
}


# integer reduces exact in any order: tl.flip's xor-sum
_NUMPY_REDUCES = {"triton.language.standard._xor_combine": np.bitwise_xor}


def _qualified(fn) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', '')}"


def _numpy_scan(fn, data, axis):
    """The inclusive left fold of ``fn`` along ``axis`` on NumPy arrays."""
    outs = [np.empty_like(d) for d in data]
    acc = None
    for k in range(data[0].shape[axis]):
        cur = tuple(np.take(d, k, axis=axis) for d in data)
        acc = cur if acc is None else fn(*acc, *cur)
        acc = acc if isinstance(acc, tuple) else (acc,)
        for out, a in zip(outs, acc):
            index = [slice(None)] * out.ndim
            index[axis] = k
            out[tuple(index)] = a
    return outs


def _vectorised_generic_scan(self, input):
    """The interpreter's generic scan, vectorised over the non-scanned axes.

    Upstream calls the combine function once per element (minutes for our tile sizes); this calls it
    once per position along the axis on whole slices: the same left fold, combine(acc, current).
    The kernels' own combines run as NumPy (``_NUMPY_COMBINES``) on float32 tiles.
    """
    axis = self.axis
    data = [arg.handle.data for arg in input]
    numpy_fn = _NUMPY_COMBINES.get(_qualified(self.combine_fn.fn))
    if numpy_fn is not None and all(d.dtype == np.float32 for d in data):
        return [self.to_tensor(out, arg.dtype) for out, arg in zip(_numpy_scan(numpy_fn, data, axis), input)]
    outs = [np.empty_like(d) for d in data]

    def wrap(i):
        return tuple(self.to_tensor(np.ascontiguousarray(np.take(d, i, axis=axis)), arg.dtype)
                     for d, arg in zip(data, input))

    acc = wrap(0)
    for k in range(data[0].shape[axis]):
        if k:
            ret = self.combine_fn.fn(*acc, *wrap(k))
            acc = ret if isinstance(ret, tuple) else (ret,)
        for out, a in zip(outs, acc):
            index = [slice(None)] * out.ndim
            index[axis] = k
            out[tuple(index)] = a.handle.data.reshape(out[tuple(index)].shape)
    return [self.to_tensor(out, arg.dtype) for out, arg in zip(outs, input)]


def _vectorised_generic_reduce(self, input):
    """The interpreter's generic reduce (``tl.flip`` goes through one: an xor-sum), vectorised the
    same way: combine(acc, slice k) for k along the axis on whole slices, where upstream calls the
    combine function once per element (``tl.flip`` in the scan backward took minutes per test).
    The xor-sum itself runs as NumPy (``_NUMPY_REDUCES``)."""
    import triton.language as tl

    original_axis = self.axis
    input, axis = self.unravel(input, self.axis)
    data = [arg.handle.data for arg in input]

    def wrap(i):
        return tuple(self.to_tensor(np.ascontiguousarray(np.take(d, i, axis=axis)), arg.dtype)
                     for d, arg in zip(data, input))

    ufunc = _NUMPY_REDUCES.get(_qualified(self.combine_fn.fn))
    if ufunc is not None and len(data) == 1 and np.issubdtype(data[0].dtype, np.integer):
        acc = (ufunc.reduce(data[0], axis=axis),)
    else:
        acc = wrap(0)
        for k in range(1, data[0].shape[axis]):
            ret = self.combine_fn.fn(*acc, *wrap(k))
            acc = ret if isinstance(ret, tuple) else (ret,)
    out_shape = data[0].shape[:axis] + data[0].shape[axis + 1:]
    ret = []
    for a, arg, d in zip(acc, input, data):
        out = np.asarray(a.handle.data if isinstance(a, tl.core.tensor) else a, dtype=d.dtype).reshape(out_shape)
        if self.keep_dims:
            out = np.expand_dims(out, axis) if original_axis is not None else out.reshape((1,) * d.ndim)
        elif original_axis is None:
            out = out.item()
        ret.append(self.to_tensor(out, arg.dtype))
    return ret


def _patch_interpreter_scan() -> None:
    try:
        from triton.runtime import interpreter
    except ImportError:  # no triton: the kernel tests skip themselves
        return
    interpreter.ScanOps.generic_scan = _vectorised_generic_scan
    interpreter.ReduceOps.generic_reduce = _vectorised_generic_reduce
    _patch_device_calls_once(interpreter)


def _patch_device_calls_once(interpreter) -> None:
    """Upstream re-patches ``triton.language`` on every call of a ``@triton.jit`` helper inside a
    kernel (a third of a scan backward's time), although the launch has already patched the same
    modules for the whole grid and restores them after it. Here a helper call skips that when the
    modules it sees are among those patched since the launch began; anything else goes the upstream
    way (and is patched from then on)."""
    import inspect

    import triton.language as tl

    def langs(fn):
        return frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))

    active = []  # per running launch, innermost last: the language modules patched since it began
    launch, helper = interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__

    def launch_call(self, *args, **kwargs):
        active.append(set(langs(self.fn)))
        try:
            return launch(self, *args, **kwargs)
        finally:
            active.pop()

    def helper_call(self, *args, **kwargs):
        if not active or not langs(self.fn) <= active[-1]:
            if active:  # patched from now until the launch ends (upstream never restores these)
                active[-1] |= langs(self.fn)
            return helper(self, *args, **kwargs)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    interpreter.GridExecutor.__call__ = launch_call
    interpreter.InterpretedFunction.__call__ = helper_call


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter_scan()


@pytest.fixture(autouse=True)
def _interpreted_launches_keep_their_channels(request, monkeypatch):
    """On the interpreter the shipped scan configs do not split small launches into more programs
    (``fill=0``): it runs programs one after another, so a split only repeats each program's loads and
    setup (an interpreted BiMamba block: 24.0 -> 17.1 s without it, same bits;
    benchmarks/bench_interpreter_block.py). Tests of the splitting itself pass ``fill`` explicitly;
    ``@pytest.mark.shipped_fill`` keeps the shipped value."""
    if os.environ.get("TRITON_INTERPRET") == "1" and not request.node.get_closest_marker("shipped_fill"):
        try:
            from helix.ops.selective_scan import triton as kernels
        except ImportError:  # no triton: the kernel tests skip themselves
            return
        for cfg in (kernels.DEFAULT_CONFIG, kernels.LEAN_CONFIG):
            monkeypatch.setattr(cfg, "fill", 0)
