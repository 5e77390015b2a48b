"""The LayerNorm kernels (``ops/layer_norm``) against their reference: outputs and every gradient.

Without a GPU the kernels run in Triton's interpreter (``conftest.py``); with one they are compiled.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from helix.ops.layer_norm import MAX_D, MIN_ROWS, apply_norm, layer_norm, sizes_apply  # noqa: E402
from helix.ops.layer_norm import layer_norm_reference  # noqa: E402
from helix.ops.layer_norm import triton as kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(M, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(M, D, generator=g) * 3 + 1).to(DEVICE)
    w = (torch.randn(D, generator=g) * 0.5 + 1).to(DEVICE)
    b = (torch.randn(D, generator=g) * 0.2).to(DEVICE)
    return x, w, b


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("M,D", [(1, 256), (37, 256), (50, 100), (3, 1), (16, 64)])
def test_matches_the_reference_with_every_gradient(M, D, out_dtype):
    """Odd row counts (a partial last block of 16 rows), D not a power of two, D = 1 (the output is the
    bias); gradients against the float64 reference."""
    x, w, b = _inputs(M, D)
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.double().clone().requires_grad_() for t in (x, w, b)]
    y = kernels.layer_norm_triton(*ours, 1e-5, out_dtype)
    y_ref = layer_norm_reference(*ref, 1e-5, torch.float64)
    assert y.dtype == out_dtype and y.shape == (M, D)
    tol = 1e-5 if out_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    dy = torch.randn(M, D, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    y.backward(dy.to(out_dtype))
    y_ref.backward(dy.double().to(out_dtype).double())
    # from the fp16 xhat (SAVE_XHAT), as wholes: dx ~4e-5 and dweight ~2e-4 off (both ~1e-7 from x)
    xhat_tol = {"x": 1e-4, "weight": 1e-3, "bias": 1e-6} if kernels.saves_xhat(x, out_dtype) else None
    for name, a, r in zip(("x", "weight", "bias"), ours, ref):
        assert a.grad.dtype == torch.float32, name
        if xhat_tol:
            assert (a.grad.double() - r.grad).norm() <= xhat_tol[name] * r.grad.norm() + 1e-4, name
        else:
            torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("save_xhat", [True, False], ids=["xhat", "x"])
def test_a_bf16_norm_saves_fp16_xhat_instead_of_the_fp32_input(monkeypatch, save_xhat):
    """Half the bytes for backward (the fp16 xhat and the per-row rstd rather than the fp32 x, mean and
    rstd); the gradients within fp16's precision of those from x, which match the reference to ~1e-7."""
    monkeypatch.setattr(kernels, "SAVE_XHAT", save_xhat)
    x, w, b = _inputs(600, 256, seed=3)
    saved = []

    def pack(t):
        if t.dim() == 2:
            saved.append((t.dtype, t.numel() * t.element_size()))
        return t

    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.double().clone().requires_grad_() for t in (x, w, b)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = kernels.layer_norm_triton(*ours, 1e-5, torch.bfloat16)
    assert saved == ([(torch.float16, x.numel() * 2)] if save_xhat else [(torch.float32, x.numel() * 4)])
    dy = torch.randn(600, 256, generator=torch.Generator().manual_seed(1)).to(DEVICE).bfloat16()
    y.backward(dy)
    layer_norm_reference(*ref, 1e-5, torch.float64).backward(dy.double())
    for name, a, r in zip(("x", "weight", "bias"), ours, ref):
        err = ((a.grad.double() - r.grad).norm() / r.grad.norm()).item()
        assert err < ({"x": 1e-4, "weight": 1e-3, "bias": 1e-6}[name] if save_xhat else 1e-6), (name, err)


@pytest.mark.parametrize("M,D", [(37, 256), (50, 100)])
def test_norm_with_the_residual_path_adds_both_gradients_in_one_pass(monkeypatch, M, D):
    """(LayerNorm(x), x) for a pre-norm block ``x + f(LayerNorm(x))``: x comes back as itself, and its
    gradient is the LayerNorm's plus the residual path's, added inside the backward kernel (``HAS_RES``,
    no separate add), as autograd gives the reference; with only one of the outputs used, that one's (and
    no kernel at all for the residual path alone)."""
    launches = []
    bwd = kernels._ln_bwd

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                launches.append(kw["HAS_RES"])
                return bwd[grid](*args, **kw)
            return launch

    monkeypatch.setattr(kernels, "_ln_bwd", Spy())
    x, w, b = _inputs(M, D, seed=4)
    g = torch.Generator().manual_seed(5)
    dy, dres = (torch.randn(M, D, generator=g).to(DEVICE) for _ in range(2))
    for used in ("both", "norm", "residual"):
        ours = [t.clone().requires_grad_() for t in (x, w, b)]
        ref = [t.double().clone().requires_grad_() for t in (x, w, b)]
        y, x_out = kernels.layer_norm_residual_triton(*ours, 1e-5, torch.float32)
        assert torch.equal(x_out, x) and x_out.data_ptr() == ours[0].data_ptr()
        y_ref = layer_norm_reference(*ref, 1e-5, torch.float64)
        loss = {"both": (y * dy).sum() + (x_out * dres).sum(), "norm": (y * dy).sum(),
                "residual": (x_out * dres).sum()}[used]
        ref_loss = {"both": (y_ref * dy.double()).sum() + (ref[0] * dres.double()).sum(),
                    "norm": (y_ref * dy.double()).sum(), "residual": (ref[0] * dres.double()).sum()}[used]
        launches.clear()
        loss.backward()
        ref_loss.backward()
        assert launches == {"both": [True], "norm": [False], "residual": []}[used], (used, launches)
        for name, a, r in zip(("x", "weight", "bias"), ours, ref):
            if r.grad is None:  # the norm unused: no gradient for its parameters either
                assert a.grad is None, f"{used}: {name}"
            else:
                torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-4, msg=f"{used}: {name}")


def test_the_backward_sums_weight_gradients_over_every_program(monkeypatch):
    """Few backward programs, each walking several 16-row blocks with a ragged tail: every row's
    contribution to dweight and dbias is counted once."""
    monkeypatch.setattr(kernels, "BWD_PROGRAMS", 3)
    x, w, b = _inputs(kernels._rows(48) * 7 + 5, 48, seed=2)  # 8 row blocks: 3, 3 and 2 per program
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.double().clone().requires_grad_() for t in (x, w, b)]
    kernels.layer_norm_triton(*ours, 1e-5, torch.float32).sum().backward()
    layer_norm_reference(*ref, 1e-5, torch.float64).sum().backward()
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-4)


def test_keeps_leading_axes_and_handles_no_rows():
    x, w, b = _inputs(2 * 3 * 5, 32)
    y = kernels.layer_norm_triton(x.view(2, 3, 5, 32), w, b, 1e-5, torch.float32)
    assert y.shape == (2, 3, 5, 32)
    torch.testing.assert_close(y.reshape(30, 32), layer_norm_reference(x, w, b, 1e-5, torch.float32),
                               rtol=1e-5, atol=1e-5)
    empty = torch.zeros(0, 32, device=DEVICE, requires_grad=True)
    kernels.layer_norm_triton(empty, w, b, 1e-5, torch.bfloat16).sum().backward()
    assert empty.grad.shape == (0, 32)


def test_norms_run_as_their_module_where_the_kernels_do_not_apply():
    """Off CUDA, or below ``MIN_ROWS`` rows, ``apply_norm`` is the ``nn.LayerNorm`` module itself (cast
    if asked) and ``layer_norm`` its reference: CPU runs and short clips compute what they did."""
    x, w, b = _inputs(5, 16)
    norm = torch.nn.LayerNorm(16).to(DEVICE)
    assert torch.equal(apply_norm(norm, x), norm(x))
    assert torch.equal(apply_norm(norm, x, torch.bfloat16), norm(x).to(torch.bfloat16))
    assert torch.equal(layer_norm(x, w, b, 1e-5, torch.bfloat16), layer_norm_reference(x, w, b, 1e-5, torch.bfloat16))


def test_the_kernels_take_many_rows_of_the_measured_width_only():
    """At least ``MIN_ROWS`` rows (host cost of an eager launch) of at most ``MAX_D`` (the width
    measured on the H200); everything else keeps PyTorch's kernel."""
    assert sizes_apply((8, 30000, 256)) and sizes_apply((2, MIN_ROWS // 2, 64))
    assert not sizes_apply((2, MIN_ROWS // 2 - 1, 256))  # 5 s at B=32: 16,000 rows
    assert not sizes_apply((8, 30000, MAX_D + 1)) and not sizes_apply((MIN_ROWS, 0)) and not sizes_apply(())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_norms_of_many_rows_take_the_kernels_and_match_the_module(monkeypatch):
    """At ``MIN_ROWS`` rows on CUDA the kernels run (counted: the fallback, the module itself, would match
    too) and give the module's output under autocast (fp32) and its gradients."""
    norm = torch.nn.LayerNorm(256).cuda()
    x = torch.randn(2, MIN_ROWS // 2, 256, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        want = norm(x)
    want.sum().backward()
    grads = [t.grad.clone() for t in (x, norm.weight, norm.bias)]
    for t in (x, norm.weight, norm.bias):
        t.grad = None
    calls = []
    triton_path = kernels.layer_norm_triton
    monkeypatch.setattr(kernels, "layer_norm_triton", lambda *a: calls.append(1) or triton_path(*a))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = apply_norm(norm, x)
    assert calls and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    for g, t in zip(grads, (x, norm.weight, norm.bias)):
        torch.testing.assert_close(t.grad, g, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("block", ["bimamba", "attention"])
def test_gpu_blocks_pass_their_stream_through_the_norm_with_the_same_result(monkeypatch, block):
    """The BiMamba and attention blocks take their residual stream back from ``apply_norm_residual``: at
    ``MIN_ROWS`` rows on CUDA the norm's backward then adds the residual gradient (counted); output and
    every gradient equal the blocks' with the stream passed as it is (the kernels' own LayerNorm, x's two
    gradients added by autograd)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from helix.layers.attention import AttentionBlock
    from helix.layers.bimamba import BiMambaBlock
    from helix.ops import layer_norm as ln

    torch.manual_seed(0)
    layer = (BiMambaBlock(64, d_state=16, lean="auto") if block == "bimamba"
             else AttentionBlock(64, 128, n_heads=4, lean="auto")).cuda()  # 32,768 tokens: both lean
    x = torch.randn(2, MIN_ROWS // 2, 64, device="cuda") * 0.5
    g = torch.randn_like(x)
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(ln, "apply_norm_residual", lambda norm, t, dt=None: (ln.apply_norm(norm, t, dt), t))
            monkeypatch.setattr(f"helix.layers.{block}.apply_norm_residual", ln.apply_norm_residual)
        calls = []
        spy = kernels.LayerNormResidualFn.apply
        monkeypatch.setattr(kernels.LayerNormResidualFn, "apply", lambda *a: calls.append(1) or spy(*a))
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        # the attention block in fp32 through SDPA's math backend: cuDNN's bf16 backward is not deterministic
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if block == "bimamba" else sdpa_kernel(SDPBackend.MATH)
        with ctx:
            out = layer(xi)
            out.backward(g)
        assert bool(calls) == fused
        results.append([out.detach(), xi.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
