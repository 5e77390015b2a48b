"""The fused causal conv + SiLU kernel and the fused bidirectional block vs their references.

Runs compiled on a GPU, through Triton's interpreter on CPU (tests/ops/conftest.py).
"""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("triton")

from helix.layers.bimamba import BiMambaBlock  # noqa: E402
from helix.ops.causal_conv import causal_conv1d_silu, causal_conv1d_silu_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("K", [4, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "both-directions"])
def test_causal_conv_silu_matches_reference(K, bidirectional):
    torch.manual_seed(0)
    xz = torch.randn(2, 12, 300, dtype=torch.float64)  # the conv reads a channel slice of xz
    x, w, b = xz[:, :6], torch.randn(6, K, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    ours = [t.float().to(DEVICE).requires_grad_() for t in (x, w, b)]
    y_ref = causal_conv1d_silu_reference(*ref, bidirectional=bidirectional)
    y = causal_conv1d_silu(*ours, bidirectional=bidirectional, backend="triton")
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g.float().to(DEVICE))
    assert rel(y.cpu(), y_ref) < 1e-5
    for name, p, q in zip(("x", "weight", "bias"), ref, ours):
        assert rel(q.grad.cpu(), p.grad) < 1e-5, name


def _conv_grads_vs_reference(B, C, L, K, bidirectional, dtype, seed=0):
    """Forward and dx, dweight, dbias of the Triton conv vs the float64 reference on the same inputs.

    x is a channel slice of a wider tensor in ``dtype``, weight and bias fp32 (as in the model, where
    autocast hands the conv bf16 activations), dout non-contiguous (the backward makes it contiguous).
    """
    torch.manual_seed(seed)
    xz = torch.randn(B, 2 * C, L).to(dtype)  # rounded once: both paths see the same values
    w, b = torch.randn(C, K), torch.randn(C)
    g = torch.randn(B, L, C).to(dtype).transpose(1, 2)  # (B, C, L), stride 1 along C
    xz_ref, w_ref, b_ref = (t.double().requires_grad_() for t in (xz, w, b))
    xz_ours, w_ours, b_ours = (t.to(DEVICE).requires_grad_() for t in (xz, w, b))
    y_ref = causal_conv1d_silu_reference(xz_ref[:, :C], w_ref, b_ref, bidirectional=bidirectional)
    y = causal_conv1d_silu(xz_ours[:, :C], w_ours, b_ours, bidirectional=bidirectional, backend="triton")
    assert y.dtype == dtype and y.shape == (B, C, L)
    y_ref.backward(g.double())
    y.backward(g.to(DEVICE))
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: out and dx are rounded to bf16
    assert rel(y.cpu(), y_ref) < tol
    assert xz_ours.grad.dtype == dtype and not xz_ours.grad[:, C:].any()
    assert rel(xz_ours.grad.cpu(), xz_ref.grad) < tol, "x"
    # dweight, dbias: fp32 sums of products of the exact (rounded) inputs, in either dtype
    assert rel(w_ours.grad.cpu(), w_ref.grad) < 1e-5, "weight"
    assert rel(b_ours.grad.cpu(), b_ref.grad) < 1e-5, "bias"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "both-directions"])
@pytest.mark.parametrize("L", [1, 3, 7, 257, 1001, 4500])
def test_causal_conv_grads_odd_lengths(L, bidirectional, dtype):
    """K=4 at the default tiles; 4500 steps span three backward programs, the middle one unmasked."""
    _conv_grads_vs_reference(2, 6, L, 4, bidirectional, dtype)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "both-directions"])
@pytest.mark.parametrize("L", [1, 5, 34, 70])
def test_causal_conv_grads_small_tiles(monkeypatch, K, L, bidirectional):
    """Tiny backward tiles: many programs per row, interior (unmasked) and edge spans, every K;
    7 channels, so the anti-causal half [3, 7) is the larger one."""
    kernels = pytest.importorskip("helix.ops.causal_conv.triton")
    monkeypatch.setattr(kernels, "_DPRE_BT", 8)
    monkeypatch.setattr(kernels, "_DPRE_NT", 2)
    monkeypatch.setattr(kernels, "_DX_BT", 16)
    _conv_grads_vs_reference(2, 7, L, K, bidirectional, torch.float32, seed=K)


@pytest.mark.parametrize("L", [1, 100, 500, 30000])
def test_conv_tiles_fit_short_rows_and_cap_long_ones(L):
    """A short row is one program per channel with less than twice its steps in tiles (1 s raw audio
    is L = 100: the fixed 2,048-step programs did ~20x the work); a long row uses the capped tiles."""
    kernels = pytest.importorskip("helix.ops.causal_conv.triton")
    fwd_bt, dpre_bt, dpre_nt, dx_bt = kernels.conv_tiles(L)
    for covered in (fwd_bt, dpre_bt * dpre_nt, dx_bt):
        assert covered >= min(L, 16) and (covered < 2 * max(L, 16) or L >= 2048)
    if L >= 30000:
        assert (fwd_bt, dpre_bt, dpre_nt, dx_bt) == (kernels._BT, kernels._DPRE_BT, kernels._DPRE_NT, kernels._DX_BT)


@pytest.mark.parametrize("lean", [True, False], ids=["lean-recompute", "autograd-saves-all"])
def test_fused_bimamba_block_matches_reference_path(lean):
    """Same parameters, same input: the fused Triton path equals the two-mixer reference path."""
    torch.manual_seed(0)
    ref_block = BiMambaBlock(16, d_state=16, scan_backend="reference").double()
    fused = BiMambaBlock(16, d_state=16, scan_backend="triton", lean=lean).to(DEVICE)
    fused.load_state_dict({k: v.float() for k, v in ref_block.state_dict().items()})
    assert fused.use_fused(torch.empty(0, device=DEVICE)) and not ref_block.use_fused(torch.empty(0))
    x = torch.randn(2, 70, 16, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.float().to(DEVICE).requires_grad_()
    y_ref, y = ref_block(x_ref), fused(x_ours)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g.float().to(DEVICE))
    assert rel(y.cpu(), y_ref) < 1e-5
    assert rel(x_ours.grad.cpu(), x_ref.grad) < 1e-4
    grads = dict(fused.named_parameters())
    for name, p in ref_block.named_parameters():
        assert rel(grads[name].grad.cpu(), p.grad) < 1e-4, name


@functools.lru_cache(maxsize=None)  # lean and full are read by two tests; "auto" depends on a patched threshold
def _fixed_activation_bytes(lean: bool) -> int:
    return _saved_activation_bytes(lean)


def _saved_activation_bytes(lean, L=80):
    """Bytes of the (B, L, ...) activations one BiMamba block keeps for backward (B=2; L a multiple of 16,
    so the block runs unpadded: ``aligned_tokens``)."""
    torch.manual_seed(0)
    block = BiMambaBlock(16, d_state=16, scan_backend="triton", lean=lean).to(DEVICE)
    seen = {}

    def pack(t):
        if L in t.shape:  # activations, not weights
            seen[(t.data_ptr(), t.shape)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(torch.randn(2, L, 16, device=DEVICE, requires_grad=True))
    return sum(seen.values())


def test_lean_block_saves_a_fraction_of_the_activations():
    """The lean path keeps h, x_dbl and y; autograd over the same products keeps every activation."""
    lean, full = _fixed_activation_bytes(True), _fixed_activation_bytes(False)
    assert 0 < lean < 0.6 * full, (lean, full)


def test_auto_lean_block_is_lean_for_large_batches_only(monkeypatch):
    """lean_blocks "auto": a batch below the token threshold keeps everything, one above it is lean."""
    from helix.layers import lean as lean_rule

    lean, full = _fixed_activation_bytes(True), _fixed_activation_bytes(False)
    monkeypatch.setattr(lean_rule, "LEAN_AUTO_TOKENS", 2 * 80 + 1)  # the batch (2 x 80 tokens) is below
    assert _saved_activation_bytes("auto") == full
    monkeypatch.setattr(lean_rule, "LEAN_AUTO_TOKENS", 2 * 80)
    assert _saved_activation_bytes("auto") == lean
