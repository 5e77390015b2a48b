"""numba CPU causal conv1d + SiLU vs the reference: outputs and every gradient, both directions."""

from __future__ import annotations

import pytest
import torch

from helix.ops.causal_conv.reference import causal_conv1d_silu_reference

pytest.importorskip("numba")
from helix.ops.causal_conv.cpu import causal_conv1d_silu_cpu  # noqa: E402

TOL = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-6)).item()


def check(x, weight, bias, bidirectional, dtype=torch.float32):
    ours = [t if t is None else t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = [t if t is None else t.double().clone().requires_grad_() for t in (x, weight, bias)]
    y = causal_conv1d_silu_cpu(*ours, bidirectional=bidirectional)
    y_ref = causal_conv1d_silu_reference(*ref, bidirectional=bidirectional)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(grad.to(y.dtype))
    y_ref.backward(grad.double())
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    assert rel(y, y_ref) < TOL[dtype], f"output: {rel(y, y_ref):.2e}"
    for name, a, b in zip(("x", "weight", "bias"), ours, ref):
        if a is None:
            continue
        assert a.grad.dtype == a.dtype, name
        assert rel(a.grad, b.grad) < TOL[dtype], f"d{name}: {rel(a.grad, b.grad):.2e}"


def inputs(Bsz, C, L, K=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Bsz, C, L, generator=g).to(dtype), torch.randn(C, K, generator=g) * 0.5,
            torch.randn(C, generator=g) * 0.2)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("L", [1, 2, 3, 4, 7, 63, 500])
def test_matches_reference_fp32(L, bidirectional):
    check(*inputs(2, 6, L), bidirectional)


@pytest.mark.parametrize("K", [1, 2, 5])
def test_other_kernel_widths(K):
    check(*inputs(2, 4, 37, K), True)


def test_no_bias():
    x, w, _ = inputs(2, 4, 40)
    check(x, w, None, False)


def test_odd_channel_count():
    """5 channels: the anti-causal half is [2, 5), as in the reference."""
    check(*inputs(2, 5, 40), True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_inputs(dtype):
    check(*inputs(2, 6, 130, dtype=dtype), True, dtype)


def test_channel_slice_of_a_larger_tensor():
    """x as the block passes it: a channel slice (non-contiguous across channels)."""
    x, w, b = inputs(2, 8, 50)
    wide = torch.randn(2, 16, 50)
    wide[:, 4:12] = x
    check(wide[:, 4:12], w, b, True)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("C,L,K", [(6, 1, 4), (6, 2, 4), (5, 63, 4), (8, 37, 1), (7, 37, 5), (9, 130, 4)])
def test_token_major_input(C, L, K, bidirectional):
    """x as the mixer passes it: the transpose of a contiguous (B, L, C) buffer, which the kernel
    reads in that layout (its own loops); outputs and gradients keep x's layout."""
    x, w, b = inputs(2, C, L, K)
    check(x.transpose(1, 2).contiguous().transpose(1, 2), w, b, bidirectional)
    with torch.no_grad():
        y = causal_conv1d_silu_cpu(x.transpose(1, 2).contiguous().transpose(1, 2), w, b, bidirectional)
    assert y.transpose(1, 2).is_contiguous() if L > 1 else y.is_contiguous()
    torch.testing.assert_close(y, causal_conv1d_silu_cpu(x, w, b, bidirectional), rtol=1e-5, atol=1e-6)
    wide = torch.randn(2, L, 2 * C)  # the x half of an in_proj output: channels contiguous, rows 2C apart
    wide[..., :C] = x.transpose(1, 2)
    check(wide[..., :C].transpose(1, 2), w, b, bidirectional)


def test_no_grad_matches_grad_path():
    x, w, b = inputs(2, 6, 90)
    with torch.no_grad():
        y0 = causal_conv1d_silu_cpu(x, w, b, bidirectional=True)
    y1 = causal_conv1d_silu_cpu(x, w.requires_grad_(), b, bidirectional=True)
    assert y0.grad_fn is None and y1.grad_fn is not None
    assert torch.equal(y0, y1.detach())


def test_auto_picks_the_kernel_for_cpu_tensors():
    from helix.ops.causal_conv import causal_conv1d_silu

    x, w, b = inputs(2, 6, 30)
    y = causal_conv1d_silu(x, w.requires_grad_(), b, bidirectional=True)
    assert type(y.grad_fn).__name__ == "_CausalConvCpuFnBackward"
    y64 = causal_conv1d_silu(x.double(), w.double(), b.double(), bidirectional=True)
    assert type(y64.grad_fn).__name__ != "_CausalConvCpuFnBackward"


def _graph_names(t):
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return {type(f).__name__ for f in seen}


def test_mamba_mixer_on_cpu_backend_uses_the_kernel_and_matches_the_reference(one_thread):
    """The mixer's conv + SiLU runs through the numba kernel on the "cpu" backend, same result."""
    from helix.layers.mamba import MambaMixer

    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=8, scan_backend="cpu")
    h = torch.randn(2, 23, 16, requires_grad=True)
    y = mixer(h)
    assert {"_CausalConvCpuFnBackward", "_ScanCpuFnBackward"} <= _graph_names(y)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in mixer.parameters()] + [h.grad.clone()]
    mixer.zero_grad()
    h.grad = None
    for m in mixer.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = "reference"
    y_ref = mixer(h)
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(grads, [p.grad for p in mixer.parameters()] + [h.grad]):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
