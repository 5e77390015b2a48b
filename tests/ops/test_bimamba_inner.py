"""The fused BiMamba inner function (ops/bimamba/fused.py) vs its reference (ops/bimamba/reference.py).

Runs compiled on a GPU, through Triton's interpreter on CPU (tests/ops/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from helix.ops.bimamba import bimamba_inner, bimamba_inner_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B=2, L=37, Dm=8, E=16, N=4, R=2, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

    return dict(h=r(B, L, Dm, scale=1.0), w_x=r(2 * E, Dm), w_z=r(2 * E, Dm), conv_w=r(2 * E, K),
                conv_b=r(2 * E), w_xp=r(2 * R + 4 * N, 2 * E), w_dt=r(2 * E, 2 * R),
                A=-torch.rand(2 * E, N, generator=g, dtype=torch.float64) - 0.5, D=r(2 * E),
                dt_bias=r(2 * E), w_out=r(Dm, 2 * E)), R


@pytest.mark.parametrize("L,N,lean", [(1, 4, True), (37, 4, True), (70, 4, True), (70, 16, True), (48, 4, True),
                                       (37, 4, False), (1, 4, "all"), (48, 4, "all"), (37, 4, "states")])
def test_fused_inner_matches_reference_outputs_and_every_gradient(L, N, lean):
    """N = 16 takes the column-layout kernels, and the backward's one-pass chunk states. Every L but
    48 runs padded to a multiple of 16 tokens (``aligned_tokens``), lean or composed. ``"all"`` and
    ``"states"``: lean, with all the activations (the model's last block) or the scan's chunk states saved
    instead of recomputed (with N = 16, against the remaking backward, in the test below)."""
    inputs, R = _inputs(L=L, N=N)
    ref = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    ours = {k: v.float().to(DEVICE).requires_grad_() for k, v in inputs.items()}
    y_ref = bimamba_inner_reference(**ref, R=R, backend="reference")
    keep = lean if isinstance(lean, str) else "none"
    y = bimamba_inner(**ours, R=R, backend="triton", lean=bool(lean), keep=keep)
    assert y.shape == y_ref.shape == (2, 8, L)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g.float().to(DEVICE))
    # relative L2 with a 1e-4 per-element floor: at L=1 the reference dA is exactly 0 and the kernel's
    # a_t h_{t-1} = h_t - x_t leaves fp32 rounding (~1e-11) behind
    rel = lambda a, b: ((a.double().cpu() - b).norm() / (b.norm() + 1e-4 * b.numel() ** 0.5)).item()  # noqa: E731
    assert rel(y, y_ref) < 1e-5
    for name in inputs:
        assert rel(ours[name].grad, ref[name].grad) < 1e-4, name


@pytest.mark.parametrize("lean", [True, False])
def test_unaligned_clips_run_padded_with_lengths_for_the_conv_only(monkeypatch, lean):
    """L = 37 runs on 48 tokens: the conv is told each clip ends at 37 (so u is zero past it), and the
    scan runs unmasked over the padding (its lengths path costs more); the result is cut back to 37."""
    from helix.ops import bimamba
    from helix.ops.bimamba import reference
    from helix.ops.causal_conv import triton as conv
    from helix.ops.selective_scan import triton as scan

    assert [bimamba.aligned_tokens(n) for n in (1, 16, 37, 48, 500, 30000)] == [16, 16, 48, 48, 512, 30000]
    calls = []

    def spy(name, fn, at):
        def wrapped(*args, **kw):
            calls.append((name, args[0].shape[-1], at(args, kw)))
            return fn(*args, **kw)
        return wrapped

    monkeypatch.setattr(conv, "conv_forward", spy("conv", conv.conv_forward, lambda a, k: a[4]))
    monkeypatch.setattr(scan, "scan_forward", spy("scan", scan.scan_forward, lambda a, k: a[12]))
    monkeypatch.setattr(reference, "selective_scan_bidirectional",
                        spy("scan", reference.selective_scan_bidirectional, lambda a, k: k["lengths"]))
    monkeypatch.setattr(reference, "causal_conv1d_silu",
                        spy("conv", reference.causal_conv1d_silu, lambda a, k: k["lengths"]))
    inputs, R = _inputs(L=37)
    y = bimamba_inner(**{k: v.float().to(DEVICE) for k, v in inputs.items()}, R=R, backend="triton", lean=lean)
    assert y.shape == (2, 8, 37)
    conv_calls = [c for c in calls if c[0] == "conv"]
    scan_calls = [c for c in calls if c[0] == "scan"]
    assert conv_calls and scan_calls
    assert all(n == 48 and ends.tolist() == [37, 37] for _, n, ends in conv_calls), conv_calls
    assert all(n == 48 and ends is None for _, n, ends in scan_calls), scan_calls


def test_unknown_backend_is_a_clear_error():
    inputs, R = _inputs(L=5)
    with pytest.raises(ValueError, match="backend must be one of"):
        bimamba_inner(**inputs, R=R, backend="cuda")
    with pytest.raises(ValueError, match="keep must be 'none', 'states' or 'all', not 'yes'"):
        bimamba_inner(**{k: v.float().to(DEVICE) for k, v in inputs.items()}, R=R, backend="triton", keep="yes")


def test_lean_inner_saves_only_its_inputs_for_backward():
    """Backward remakes every activation (x_dbl, y too): nothing of the inner width or of x_dbl's
    shape is kept between forward and backward, only h and the weights."""
    inputs, R = _inputs(L=48)  # a multiple of 16: no padding (aligned_tokens)
    ours = {k: v.float().to(DEVICE).requires_grad_() for k, v in inputs.items()}
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = bimamba_inner(**ours, R=R, backend="triton", lean=True)
    inner = {(2, 2 * 16, 48), (2, 2 * R + 4 * 4, 48)}  # (B, 2E, L): u, z, delta, y; (B, 2R+4N, L): x_dbl
    assert not inner & set(saved), saved
    assert (2, 48, 8) in saved  # h
    y.sum().backward()
    assert ours["h"].grad is not None


@pytest.mark.parametrize("keep,remade", [("all", 0), ("states", 1)])
def test_keep_recomputes_nothing_and_a_second_backward_recomputes_all(monkeypatch, keep, remade):
    """With ``keep="all"`` the backward runs no conv forward, no chunk-state pass of the forward's states
    and no product remaking z or x_dbl: it runs the kernels' backward on what the forward kept; with
    ``"states"`` it remakes u (one conv) but not the chunk states. It takes those once (it writes ddelta,
    dz over delta, z): a second backward through the same graph (retain_graph) recomputes everything, and
    its gradients equal the first's."""
    from helix.ops.bimamba import fused
    from helix.ops.selective_scan import columns

    inputs, R = _inputs(L=40, N=16)  # 48 tokens: two chunks, the column-layout kernels
    ours = {k: v.float().to(DEVICE).requires_grad_() for k, v in inputs.items()}
    counts = {"conv": 0, "both_states": 0}
    conv_forward = fused.conv.conv_forward
    launch = fused.scan._launch

    def count_conv(*a, **k):
        counts["conv"] += 1
        return conv_forward(*a, **k)

    def count_launch(kernel, *a, **k):
        counts["both_states"] += kernel is columns._both_chunk_states
        return launch(kernel, *a, **k)

    monkeypatch.setattr(fused.conv, "conv_forward", count_conv)
    monkeypatch.setattr(fused.scan, "_launch", count_launch)
    y = bimamba_inner(**ours, R=R, backend="triton", lean=True, keep=keep)
    assert counts == {"conv": 1, "both_states": 0}
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y)
    y.backward(g, retain_graph=True)
    assert counts == {"conv": 1 + remade, "both_states": 0}  # only u remade, or nothing
    first = {k: v.grad.clone() for k, v in ours.items()}
    for v in ours.values():
        v.grad = None
    y.backward(g)
    assert counts == {"conv": 2 + remade, "both_states": 1}  # remade, as a lean block does
    for k, v in ours.items():
        # the kept H and the remade one differ in rounding only (two passes sum in other orders)
        torch.testing.assert_close(v.grad, first[k], rtol=1e-5, atol=1e-4, msg=k)


def test_backward_remakes_the_forward_output_over_dout():
    """scan_backward(y_out=dout) writes the forward's output over dout (each element after reading it),
    and the gradients are those of a separate buffer."""
    from helix.ops.selective_scan import triton as scan

    g = torch.Generator().manual_seed(1)
    Bsz, Dch, L, N = 2, 8, 45, 4
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)  # noqa: E731
    u, delta, z, dout = r(Bsz, Dch, L), r(Bsz, Dch, L) * 0.5, r(Bsz, Dch, L), r(Bsz, Dch, L)
    Bm, Cm = r(Bsz, 2, N, L), r(Bsz, 2, N, L)
    A = -torch.rand(Dch, N, generator=g).to(DEVICE) - 0.5
    D, bias = r(Dch), r(Dch)
    cfg = scan.ScanConfig(block_t=16, dg=2)
    out, H = scan.scan_forward(u, delta, A, Bm, Cm, D, z, bias, True, True, False, cfg)
    plain = scan.scan_backward(dout.clone(), u, delta, A, Bm, Cm, D, z, bias, H, True, True, False, cfg)
    buf = dout.clone()
    remade = scan.scan_backward(buf, u, delta, A, Bm, Cm, D, z, bias, H, True, True, False, cfg, y_out=buf)
    torch.testing.assert_close(buf, out, rtol=1e-5, atol=1e-5)
    for a, b in zip(plain, remade):
        torch.testing.assert_close(a, b)


def test_lean_inner_hands_its_output_and_dh_over_token_major():
    """W_out y comes back as (B, Dm, L) but stored token-major, and dh as h is laid out, so the block's
    bias, residual and LayerNorm backward read them contiguously (no strided copy of the stream)."""
    from helix.ops.bimamba import fused

    inputs, R = _inputs(L=48)
    ours = {k: v.float().to(DEVICE) for k, v in inputs.items()}
    y = bimamba_inner(**ours, R=R, backend="triton", lean=True)
    assert y.shape == (2, 8, 48) and y.transpose(1, 2).is_contiguous()
    ctx = type("Ctx", (), {"saved_tensors": (*ours.values(), None), "R": R, "cfg": fused.scan.LEAN_CONFIG,
                                "scan_lengths": True})()
    dh = fused.BiMambaInnerFn.backward(ctx, torch.randn_like(y))[0]
    assert dh.shape == ours["h"].shape and dh.is_contiguous()


def test_the_lean_block_stores_chunk_states_in_bf16_for_bf16_activations(monkeypatch):
    """The lean op (the long-clip path) runs the scan with ``LEAN_CONFIG``: bf16 chunk states for bf16
    activations (1 GB less at 300 s, B=8), fp32 for fp32 ones; the other paths keep ``DEFAULT_CONFIG``."""
    from helix.ops.bimamba import fused

    seen = []
    apply = fused.BiMambaInnerFn.apply
    monkeypatch.setattr(fused.BiMambaInnerFn, "apply", lambda *a: seen.append(a[12]) or apply(*a))
    inputs, R = _inputs(L=48)
    bimamba_inner(**{k: v.float().to(DEVICE) for k, v in inputs.items()}, R=R, backend="triton", lean=True)
    assert seen and seen[0] is fused.scan.LEAN_CONFIG
    assert seen[0].state_dtype(torch.bfloat16) == torch.bfloat16
    assert seen[0].state_dtype(torch.float32) == torch.float32
    assert fused.scan.DEFAULT_CONFIG.state_dtype(torch.bfloat16) == torch.float32
