"""The interpreter speed-ups in tests/ops/conftest.py compute what upstream computes.

Every kernel test runs through them on CPU, so a wrong fold would show there as well; these check
the patched reduce and scan directly against upstream's per-element versions, on a kernel that uses
``tl.flip`` (an xor-sum reduce inside a ``@triton.jit`` helper) and a tuple-valued custom combine.
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from helix.ops.selective_scan import chunk_state  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")


@triton.jit
def _argmax_combine(v1, i1, v2, i2):
    take = v2 > v1
    return tl.where(take, v2, v1), tl.where(take, i2, i1)


@triton.jit
def _add_mul(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _kernel(x_ptr, flip_ptr, max_ptr, arg_ptr, scan_a_ptr, scan_b_ptr, R: tl.constexpr, C: tl.constexpr):
    rows, cols = tl.arange(0, R)[:, None], tl.arange(0, C)[None, :]
    x = tl.load(x_ptr + rows * C + cols)
    tl.store(flip_ptr + rows * C + cols, tl.flip(x, 1))
    idx = tl.broadcast_to(cols, (R, C))
    best, arg = tl.reduce((x, idx), 1, _argmax_combine)
    tl.store(max_ptr + tl.arange(0, R), best)
    tl.store(arg_ptr + tl.arange(0, R), arg)
    a, b = tl.associative_scan((x * 0.5, x), 1, _add_mul, reverse=True)
    tl.store(scan_a_ptr + rows * C + cols, a)
    tl.store(scan_b_ptr + rows * C + cols, b)


def _run(R=4, C=8):
    x = torch.randn(R, C, generator=torch.Generator().manual_seed(0))
    outs = [torch.empty(R, C), torch.empty(R), torch.empty(R, dtype=torch.int32), torch.empty(R, C),
            torch.empty(R, C)]
    _kernel[(1,)](x, *outs, R=R, C=C)
    return x, outs


def test_patched_reduce_and_scan_equal_upstream(monkeypatch):
    from triton.runtime import interpreter

    x, ours = _run()
    flipped, best, arg, scan_a, _ = ours
    torch.testing.assert_close(flipped, x.flip(1), rtol=0, atol=0)
    torch.testing.assert_close(best, x.max(1).values, rtol=0, atol=0)
    assert torch.equal(arg.long(), x.argmax(1))
    torch.testing.assert_close(scan_a, (x * 0.5).flip(1).cumprod(1).flip(1))  # a reverse running product

    # the same kernel on upstream's per-element reduce and scan: identical values, bit for bit
    for cls, name in (("ReduceOps", "generic_reduce"), ("ScanOps", "generic_scan")):
        patched = getattr(interpreter, cls).__dict__[name]
        assert patched.__module__ != interpreter.__name__, f"{cls}.{name} is not the conftest's"
        monkeypatch.setattr(getattr(interpreter, cls), name, _original(interpreter, cls, name))
    _, theirs = _run()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def _original(interpreter, cls, name):
    """Upstream's method, compiled from triton's own source (the class attribute is the patch)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(inspect.getsource(interpreter))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    method = next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == name)
    code = textwrap.dedent(ast.unparse(method))
    namespace = dict(vars(interpreter))
    exec(compile(code, interpreter.__file__, "exec"), namespace)
    return namespace[name]


@triton.jit
def _scan_kernel(a_ptr, x_ptr, h_ptr, p_ptr, pin_ptr, flip_ptr, R: tl.constexpr, C: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    a, x = tl.load(a_ptr + offs), tl.load(x_ptr + offs)
    p, h = tl.associative_scan((a, x), 0, chunk_state._combine)
    tl.store(h_ptr + offs, h)
    tl.store(p_ptr + offs, p)
    tl.store(pin_ptr + offs, chunk_state._pin(x * a))
    tl.store(flip_ptr + offs, tl.flip(h, 0))


def _run_scans(R=32, C=16):
    g = torch.Generator().manual_seed(1)
    a, x = torch.rand(R, C, generator=g) * 0.5 + 0.5, torch.randn(R, C, generator=g)
    outs = [torch.empty(R, C) for _ in range(4)]
    _scan_kernel[(1,)](a, x, *outs, R=R, C=C)
    return a, x, outs


def test_the_kernels_combines_as_numpy_equal_the_interpreters_own(monkeypatch):
    """``_NUMPY_COMBINES`` / ``_NUMPY_REDUCES``: the scans' ``_combine`` and ``_right`` (``_pin``) and tl.flip's
    xor-sum give the same bits as the interpreter running the Triton functions, and they are taken."""
    import conftest

    taken = []
    numpy_scan = conftest._numpy_scan
    monkeypatch.setattr(conftest, "_numpy_scan", lambda fn, *a: taken.append(fn) or numpy_scan(fn, *a))
    a, x, fast = _run_scans()
    assert {conftest._NUMPY_COMBINES[k] for k in conftest._NUMPY_COMBINES} <= set(taken)
    h, want = fast[0], torch.zeros_like(x[0])
    for t in range(x.shape[0]):  # the recurrence itself, in float64
        want = a[t].double() * want + x[t].double()
        torch.testing.assert_close(h[t].double(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(fast[2], x * a) and torch.equal(fast[3], h.flip(0))
    monkeypatch.setattr(conftest, "_NUMPY_COMBINES", {})
    monkeypatch.setattr(conftest, "_NUMPY_REDUCES", {})
    _, _, slow = _run_scans()
    for ours, theirs in zip(fast, slow):
        assert torch.equal(ours, theirs)
