"""Per-sample lengths through the ops: each row of a padded batch equals that row run alone.

Reference ops on CPU; the Triton kernels (scan, conv, the lean fused block) through Triton's
interpreter on small shapes (tests/ops/conftest.py), compared with the reference with lengths:
outputs and every gradient.
"""

from __future__ import annotations

import pytest
import torch

from helix.ops.attention import attention
from helix.ops.backend import cpu_kernels_available, triton_available
from helix.ops.bimamba import bimamba_inner, bimamba_inner_reference
from helix.ops.causal_conv import causal_conv1d_silu, causal_conv1d_silu_reference
from helix.ops.selective_scan import (selective_scan, selective_scan_bidirectional,
                                      selective_scan_bidirectional_reference, selective_scan_reference)
from helix.ops.selective_scan.export import selective_scan_export

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs Triton")


def scan_inputs(Bsz=3, D=4, L=23, N=3, bidir=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    bc = (Bsz, 2, N, L) if bidir else (Bsz, N, L)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa: E731
    return dict(u=r(Bsz, D, L), delta=r(Bsz, D, L, scale=0.5) - 1.0, A=-torch.rand(D, N, generator=g).to(dtype) - 0.5,
                B=r(*bc), C=r(*bc), D=r(D), z=r(Bsz, D, L), delta_bias=r(D, scale=0.3))


def row(inputs, i, n):
    """Row i of a batch cut to its first n steps (per-channel parameters as they are)."""
    return {k: (v[i:i + 1, ..., :n] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}


@pytest.mark.parametrize("bidir", [False, True], ids=["causal", "bidirectional"])
def test_scan_reference_rows_equal_rows_alone_and_padding_is_inert(bidir):
    inputs = scan_inputs(D=4, bidir=bidir)
    lengths = torch.tensor([23, 9, 1])
    fn = selective_scan_bidirectional_reference if bidir else selective_scan_reference
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, delta_softplus=True, lengths=lengths)
    y.backward(torch.randn_like(y))
    for i, n in enumerate(lengths.tolist()):
        alone = fn(**row(inputs, i, n), delta_softplus=True)
        torch.testing.assert_close(y[i:i + 1, :, :n], alone)
        assert torch.all(y[i, :, n:] == 0)
        for k in ("u", "delta", "B", "C", "z"):
            assert torch.all(leaves[k].grad[i, ..., n:] == 0), f"gradient reached the padding of d{k}"
    # the padded values themselves cannot matter: garbage there changes nothing
    noisy = {k: (v.clone() if v.dim() > 1 and v.shape[0] == 3 else v) for k, v in inputs.items()}
    for k in ("u", "delta", "B", "C", "z"):
        noisy[k][1, ..., 9:] = 1e3
    torch.testing.assert_close(fn(**noisy, delta_softplus=True, lengths=lengths), y.detach())


def test_backward_direction_starts_at_each_clips_own_end():
    # the backward half of row 1 equals the plain reverse scan of its 9 valid steps
    inputs = scan_inputs(D=4, bidir=True)
    y = selective_scan_bidirectional_reference(**inputs, delta_softplus=True, lengths=torch.tensor([23, 9, 23]))
    r = row(inputs, 1, 9)
    half = slice(2, 4)
    rev = selective_scan_reference(r["u"][:, half].flip(-1), r["delta"][:, half].flip(-1), r["A"][half],
                                   r["B"][:, 1].flip(-1), r["C"][:, 1].flip(-1), r["D"][half],
                                   r["z"][:, half].flip(-1), r["delta_bias"][half], True).flip(-1)
    torch.testing.assert_close(y[1:2, half, :9], rev)


def test_export_loop_takes_lengths():
    inputs = scan_inputs()
    lengths = torch.tensor([23, 5, 12])
    ref = selective_scan_reference(**inputs, delta_softplus=True, lengths=lengths)
    torch.testing.assert_close(selective_scan_export(**inputs, delta_softplus=True, lengths=lengths), ref)


@pytest.mark.skipif(not cpu_kernels_available(), reason="needs numba")
@pytest.mark.parametrize("bidir", [False, True])
def test_numba_kernels_get_the_masked_problem(bidir):
    # the CPU kernels take no lengths: masked delta/inputs and outputs give the reference's result
    inputs = scan_inputs(bidir=bidir, dtype=torch.float32)
    lengths = torch.tensor([23, 5, 12])
    fn = selective_scan_bidirectional if bidir else selective_scan
    ref_fn = selective_scan_bidirectional_reference if bidir else selective_scan_reference
    ours = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    ref = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**ours, delta_softplus=True, backend="cpu", lengths=lengths)
    y_ref = ref_fn(**ref, delta_softplus=True, lengths=lengths)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    for k in ours:
        torch.testing.assert_close(ours[k].grad, ref[k].grad, atol=1e-4, rtol=1e-3, msg=f"d{k}")
    x, w, b = torch.randn(3, 6, 23), torch.randn(6, 4), torch.randn(6)
    out = causal_conv1d_silu(x, w, b, bidir, backend="cpu", lengths=lengths)
    torch.testing.assert_close(out, causal_conv1d_silu_reference(x, w, b, bidir, lengths), atol=1e-5, rtol=1e-5)
    assert torch.all(out[1, :, 5:] == 0)


@pytest.mark.parametrize("bidir", [False, True])
def test_conv_reference_never_reads_across_a_clips_end(bidir):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 20, generator=g, dtype=torch.float64)
    w, b = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    lengths = torch.tensor([20, 7, 2])
    x.requires_grad_(True)
    out = causal_conv1d_silu_reference(x, w, b, bidir, lengths)
    out.sum().backward()
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i:i + 1, :, :n], causal_conv1d_silu_reference(x[i:i + 1, :, :n], w, b, bidir))
        assert torch.all(out[i, :, n:] == 0) and torch.all(x.grad[i, :, n:] == 0)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_attention_masks_padded_keys(impl, monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 11, 4, generator=g) for _ in range(3))
    lengths = torch.tensor([11, 4])
    out = attention(q, k, v, impl, lengths)
    alone = attention(q[1:, :, :4], k[1:, :, :4], v[1:, :, :4], impl)
    torch.testing.assert_close(out[1:, :, :4], alone)
    torch.testing.assert_close(out[:1], attention(q[:1], k[:1], v[:1], impl))
    # no lengths: SDPA gets no mask at all (its FlashAttention path needs none)
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    attention(q, k, v, "sdpa")
    assert seen == [{}]


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([3, 3, 3]), r"\(B,\) = \(2,\)"),
    (torch.tensor([3.0, 2.0]), "integer"),
    ([3, 2], r"\(B,\)"),
])
def test_bad_lengths_at_the_op_boundary(bad, match):
    inputs = scan_inputs(Bsz=2)
    with pytest.raises(ValueError, match=f"lengths.*{match}"):
        selective_scan(**inputs, backend="reference", lengths=bad)


# ---- Triton kernels (interpreter on CPU, compiled on GPU) ----------------------------------------

def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-6)).item()


@needs_triton
@pytest.mark.parametrize("layout,N", [("rows", 4), ("columns", 4), ("columns", 32)])
@pytest.mark.parametrize("bidir", [False, True], ids=["causal", "bidirectional"])
def test_triton_scan_with_lengths_matches_reference(bidir, layout, N):
    from helix.ops.selective_scan.triton import ScanConfig, selective_scan_triton

    # block_t=16 over L=40: row 1 ends inside chunk 0 (chunks 1, 2 wholly past its end), row 2 mid-chunk 1
    inputs = scan_inputs(Bsz=3, D=4, L=40, N=N, bidir=bidir, dtype=torch.float32)
    lengths = torch.tensor([40, 9, 21])
    ours = {k: v.clone().to(DEVICE).requires_grad_() for k, v in inputs.items()}
    ref = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    config = ScanConfig(layout=layout) if DEVICE == "cuda" else ScanConfig(block_t=16, dg=2, layout=layout)
    y = selective_scan_triton(**ours, delta_softplus=True, bidirectional=bidir, lengths=lengths.to(DEVICE),
                              config=config)
    fn = selective_scan_bidirectional_reference if bidir else selective_scan_reference
    y_ref = fn(**ref, delta_softplus=True, lengths=lengths)
    grad = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(grad.float().to(DEVICE))
    y_ref.backward(grad)
    assert rel(y.cpu(), y_ref) < 2e-5 and torch.all(y[1, :, 9:] == 0)
    for k in ours:
        assert rel(ours[k].grad.cpu(), ref[k].grad) < 5e-5, f"d{k}: {rel(ours[k].grad.cpu(), ref[k].grad):.2e}"


@needs_triton
@pytest.mark.parametrize("bidir", [False, True], ids=["causal", "bidirectional"])
def test_triton_conv_with_lengths_matches_reference(bidir):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 30, generator=g)
    w, b = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    lengths = torch.tensor([30, 3, 17])
    ours = [t.clone().to(DEVICE).requires_grad_() for t in (x, w, b)]
    ref = [t.detach().double().requires_grad_() for t in (x, w, b)]
    out = causal_conv1d_silu(*ours, bidir, backend="triton", lengths=lengths.to(DEVICE))
    out_ref = causal_conv1d_silu_reference(*ref, bidir, lengths)
    grad = torch.randn(out_ref.shape, generator=g, dtype=torch.float64)
    out.backward(grad.float().to(DEVICE))
    out_ref.backward(grad)
    assert rel(out.cpu(), out_ref) < 1e-5
    for name, a, r in zip(("x", "w", "b"), ours, ref):
        assert rel(a.grad.cpu(), r.grad) < 1e-5, name
    assert torch.all(ours[0].grad[1, :, 3:] == 0)


@needs_triton
def test_lean_fused_block_with_lengths_matches_reference():
    g = torch.Generator().manual_seed(0)
    B, L, Dm, E, N, R, K = 2, 21, 8, 8, 4, 2, 4
    r = lambda *s, scale=0.3: torch.randn(*s, generator=g, dtype=torch.float64) * scale  # noqa: E731
    inputs = dict(h=r(B, L, Dm, scale=1.0), w_x=r(2 * E, Dm), w_z=r(2 * E, Dm), conv_w=r(2 * E, K),
                  conv_b=r(2 * E), w_xp=r(2 * R + 4 * N, 2 * E), w_dt=r(2 * E, 2 * R),
                  A=-torch.rand(2 * E, N, generator=g, dtype=torch.float64) - 0.5, D=r(2 * E),
                  dt_bias=r(2 * E), w_out=r(Dm, 2 * E))
    lengths = torch.tensor([21, 6])
    ref = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    ours = {k: v.float().to(DEVICE).requires_grad_() for k, v in inputs.items()}
    y_ref = bimamba_inner_reference(**ref, R=R, backend="reference", lengths=lengths)
    y = bimamba_inner(**ours, R=R, backend="triton", lean=True, lengths=lengths.to(DEVICE))
    grad = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    y_ref.backward(grad)
    y.backward(grad.float().to(DEVICE))
    assert rel(y.cpu(), y_ref) < 1e-4
    for k in ours:
        assert rel(ours[k].grad.cpu(), ref[k].grad) < 2e-4, k
    assert torch.all(ours["h"].grad[1, 6:] == 0)
