"""The residual kernel (``ops/residual``) against its reference: the same sums, every gradient.

Without a GPU the kernel runs in Triton's interpreter (``conftest.py``); with one it is compiled.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from helix.ops.residual import MIN_ROWS, add_bias_residual, add_bias_residual_reference, kernel_applies  # noqa: E402
from helix.ops.residual import triton as kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_cast(got, g):
    """g cast to got's dtype: to nearest even compiled (as PyTorch), but Triton's interpreter truncates
    fp32 -> bf16 (within one bf16 step: 2^-7 relative)."""
    if DEVICE == "cuda" or got.dtype == g.dtype:
        assert torch.equal(got, g.to(got.dtype))
    else:
        torch.testing.assert_close(got.float(), g, rtol=2 ** -7, atol=0)


def _inputs(M, D, y_dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(M, D, generator=g) * 3).to(DEVICE)
    y = torch.randn(M, D, generator=g).to(DEVICE, y_dtype)
    b = torch.randn(D, generator=g).to(DEVICE)
    return x, y, b


@pytest.mark.parametrize("y_dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M,D,bias", [(37, 256, True), (50, 100, True), (3, 1, True), (5, 300, False)],
                         ids=["partial-block", "odd-width", "width-1", "no-bias"])
def test_matches_the_reference_exactly_with_every_gradient(M, D, bias, y_dtype):
    """Rows not a multiple of the 16 per program, D not a power of two, D = 1, no bias: the same fp32
    sums in the same order (bitwise), and the gradients autograd gives the reference."""
    x, y, b = _inputs(M, D, y_dtype)
    b = b if bias else None
    ours = [t.clone().requires_grad_() if t is not None else None for t in (x, y, b)]
    ref = [t.clone().requires_grad_() if t is not None else None for t in (x, y, b)]
    out = kernels.add_bias_residual_triton(*ours)
    want = add_bias_residual_reference(*ref)
    assert out.dtype == torch.float32 and out.shape == (M, D)
    assert torch.equal(out, want)
    g = torch.randn(M, D, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out.backward(g)
    want.backward(g)
    for name, a, r in zip(("x", "y", "bias"), ours, ref):
        if a is None:
            continue
        assert a.grad.dtype == r.grad.dtype, name
        if name == "y":
            assert_cast(a.grad, g)
        else:
            torch.testing.assert_close(a.grad, r.grad, rtol=1e-6, atol=1e-5, msg=name)


@pytest.mark.parametrize("bias", [True, False])
def test_backward_casts_and_sums_in_one_kernel_over_several_row_blocks_per_program(monkeypatch, bias):
    """y's gradient (g cast to bf16, exactly) and the bias's (g summed over rows) from ``_residual_bwd``,
    each program walking several 64-row blocks (3 programs here, the last one short); an fp32 y or a
    non-contiguous gradient takes PyTorch's ops."""
    monkeypatch.setattr(kernels, "BWD_PROGRAMS", 3)
    calls = []
    backward = kernels.add_bias_residual_backward
    monkeypatch.setattr(kernels, "add_bias_residual_backward", lambda *a: calls.append(a[0].shape) or backward(*a))
    x, y, b = _inputs(1000, 64)
    leaves = [t.clone().requires_grad_() for t in (x, y, b if bias else None) if t is not None]
    out = kernels.add_bias_residual_triton(*leaves, *([] if bias else [None]))
    g = torch.randn(1000, 64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    out.backward(g)
    assert calls == [(1000, 64)]
    assert torch.equal(leaves[0].grad, g)
    assert_cast(leaves[1].grad, g)
    if bias:
        torch.testing.assert_close(leaves[2].grad, g.sum(0), rtol=1e-5, atol=1e-4)
    x32 = x.clone().requires_grad_()
    kernels.add_bias_residual_triton(x32, y.float().requires_grad_(), b).backward(g)
    y2 = y.clone().requires_grad_()
    kernels.add_bias_residual_triton(x, y2, b).backward(g.t().contiguous().t())
    assert calls == [(1000, 64)] and torch.equal(y2.grad, g.bfloat16())


def test_keeps_leading_axes_and_handles_no_rows():
    x, y, b = _inputs(2 * 7, 32)
    out = kernels.add_bias_residual_triton(x.view(2, 7, 32), y.view(2, 7, 32), b)
    assert out.shape == (2, 7, 32) and torch.equal(out, add_bias_residual_reference(x, y, b).view(2, 7, 32))
    empty = torch.zeros(0, 32, device=DEVICE)
    assert kernels.add_bias_residual_triton(empty, empty.bfloat16(), b).shape == (0, 32)


def test_the_kernel_runs_only_where_it_was_measured_to_pay():
    """CUDA, an fp32 stream and bias, contiguous operands of one shape, and many rows; elsewhere the
    reference (which computes the same sums) runs."""
    meta = dict(device="meta")
    big = (MIN_ROWS, 256)
    x, y, b = torch.empty(big, **meta), torch.empty(big, dtype=torch.bfloat16, **meta), torch.empty(256, **meta)
    assert not kernel_applies(x, y, b)  # not CUDA
    cpu = [torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.bfloat16), torch.zeros(8)]
    assert torch.equal(add_bias_residual(*cpu), add_bias_residual_reference(*cpu))
    if torch.cuda.is_available():
        x, y, b = (torch.zeros(big, device="cuda"), torch.zeros(big, dtype=torch.bfloat16, device="cuda"),
                   torch.zeros(256, device="cuda"))
        assert kernel_applies(x, y, b) and kernel_applies(x, y, None)
        assert not kernel_applies(x[: MIN_ROWS - 1], y[: MIN_ROWS - 1], b)  # few rows
        assert not kernel_applies(x.double(), y, b)  # not an fp32 stream
        assert not kernel_applies(x, y, b.bfloat16())  # not an fp32 bias
        assert not kernel_applies(x, y.t().contiguous().t(), b)  # not contiguous
        assert not kernel_applies(x, y[:, :128], b[:128])  # shapes differ


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bimamba_block_output_takes_the_kernel_and_matches(monkeypatch):
    """A block at MIN_ROWS tokens under autocast launches the kernel once per forward, and its output and
    gradients are those of the reference sum."""
    from helix.layers.bimamba import BiMambaBlock
    from helix.ops import residual

    calls = []
    real = kernels.add_bias_residual_triton
    monkeypatch.setattr(kernels, "add_bias_residual_triton", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    block = BiMambaBlock(256, 32, 4, 2, 16).cuda()
    x = torch.randn(1, MIN_ROWS, 256, device="cuda", requires_grad=True)
    outs = []
    for use in (True, False):
        if not use:
            monkeypatch.setattr(residual, "kernel_applies", lambda *a: False)
        x.grad = None
        block.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = block(x)
        out.float().square().mean().backward()
        outs.append((out.detach(), x.grad.clone(), block.proj.bias.grad.clone()))
    assert len(calls) == 1
    for a, r in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
