"""Triton selective scan vs the reference: outputs and every gradient, per dtype, both directions.

Without a GPU the kernels run through Triton's interpreter on small sizes (see conftest.py); with one,
the same tests run compiled, and the ``gpu`` tests add the full grid and long sequences.
Errors are relative L2 norms against the reference evaluated in float64 on the same input values.
"""

from __future__ import annotations

import pytest
import torch

import helix.ops.backend as backend
from helix.ops.selective_scan import (selective_scan, selective_scan_bidirectional,
                                      selective_scan_bidirectional_reference, selective_scan_reference)

pytest.importorskip("triton")
from helix.ops.selective_scan.triton import ScanConfig, selective_scan_triton  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
# the interpreter's cost is per program and per op: on CPU, one program per (batch, chunk) of 64
# steps; on GPU, the default launch shape
CONFIG = None if CUDA else ScanConfig(block_t=64, dg=4)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# relative L2 error allowed, output / gradients: fp32 is rounding only; half types are dominated by
# rounding the (B, D, L) outputs and gradients to 8 or 11 bits
TOL = {torch.float32: (2e-5, 5e-5), torch.bfloat16: (1e-2, 2e-2), torch.float16: (2e-3, 4e-3)}


def make_inputs(Bsz, D, L, N, dtype, device=DEVICE, groups=None, seed=0):
    """Inputs in the ranges a trained Mamba sees: softplus steps ~0.05-1, A from -0.5 to -N."""
    g = torch.Generator().manual_seed(seed)
    shape_bc = (Bsz, N, L) if groups is None else (Bsz, groups, N, L)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g) * scale + shift

    A = -torch.exp(torch.rand(D, N, generator=g) * torch.log(torch.tensor(2.0 * N)) + torch.log(torch.tensor(0.5)))
    tensors = dict(u=rnd(Bsz, D, L), delta=rnd(Bsz, D, L, scale=0.5, shift=-1.0), A=A, B=rnd(*shape_bc),
                   C=rnd(*shape_bc), D=rnd(D), z=rnd(Bsz, D, L), delta_bias=rnd(D, scale=0.3))
    low = ("u", "delta", "B", "C", "z")  # activations take the dtype; parameters stay fp32
    return {k: (v.to(dtype) if k in low else v).to(device) for k, v in tensors.items()}


def rel(a, b):
    """Relative L2 error. The 1e-4 per-element floor keeps an all-zero reference finite: at L=1, dA is
    exactly 0 but the kernel's a_t h_{t-1} = h_t - x_t leaves fp32 rounding (~1e-9) behind."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-4 * b.numel() ** 0.5)).item()


def run_both(inputs, kernel, reference, drop=()):
    """Output and gradients of ``kernel`` (as given) and ``reference`` (float64 copies)."""
    ins = {k: (None if k in drop else v) for k, v in inputs.items()}
    ours = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in ins.items()}
    ref = {k: (v.double().clone().requires_grad_() if v is not None else None) for k, v in ins.items()}
    y = kernel(**ours)
    y_ref = reference(**ref)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device)
    y.backward(grad.to(y.dtype))
    y_ref.backward(grad.double())
    assert y.dtype == inputs["u"].dtype and y.shape == y_ref.shape
    grads = {k: (ours[k].grad, ref[k].grad) for k in NAMES if ours[k] is not None}
    return (y, y_ref), grads


def check(inputs, kernel, reference, dtype, drop=(), scale=1.0):
    (y, y_ref), grads = run_both(inputs, kernel, reference, drop)
    tol_out, tol_grad = (t * scale for t in TOL[dtype])
    assert torch.isfinite(y).all()
    assert rel(y, y_ref) < tol_out, f"output: {rel(y, y_ref):.2e}"
    for name, (g, g_ref) in grads.items():
        assert g is not None and torch.isfinite(g).all(), name
        assert g.dtype == inputs[name].dtype, name
        assert rel(g, g_ref) < tol_grad, f"d{name}: {rel(g, g_ref):.2e}"


def flip(x):
    return None if x is None else x.flip(-1)


def kernel_fn(reverse=False, config=CONFIG):
    def f(**kw):
        return selective_scan_triton(**kw, delta_softplus=True, reverse=reverse, config=config)
    return f


def reference_fn(reverse=False, softplus=True):
    def f(u, delta, A, B, C, D=None, z=None, delta_bias=None):
        if not reverse:
            return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, softplus)
        return flip(selective_scan_reference(flip(u), flip(delta), A, flip(B), flip(C), D, flip(z),
                                             delta_bias, softplus))
    return f


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("N", [16, 32])
@pytest.mark.parametrize("L", [1, 7, 63, 64, 65, 500])
def test_matches_reference_fp32(L, N, reverse):
    inputs = make_inputs(2, 4, L, N, torch.float32)
    check(inputs, kernel_fn(reverse), reference_fn(reverse), torch.float32)


def test_long_odd_length_fp32():
    inputs = make_inputs(1, 2, 2049, 16, torch.float32)
    check(inputs, kernel_fn(), reference_fn(), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    inputs = make_inputs(2, 4, 130, 16, dtype)
    check(inputs, kernel_fn(True), reference_fn(True), dtype)


@pytest.mark.parametrize("config", [ScanConfig(block_t=16, dg=2), ScanConfig(block_t=16, dg=4, num_warps=1),
                                    ScanConfig(block_t=16, dg=1)],
                         ids=["small-chunks", "4-channels", "1-channel"])
def test_many_chunk_boundaries(config):
    """Chunks of 16 over L=49: three carries, a partial last chunk, both directions."""
    inputs = make_inputs(2, 4, 49, 16, torch.float32)
    check(inputs, kernel_fn(False, config), reference_fn(False), torch.float32)
    check(inputs, kernel_fn(True, config), reference_fn(True), torch.float32)


@pytest.mark.parametrize("config", [ScanConfig(block_t=16, dg=4, bwd_dg=1), ScanConfig(block_t=16, dg=1, bwd_dg=4),
                                    ScanConfig(block_t=16, dg=4, fill=10 ** 6)],
                         ids=["bwd-1-channel", "bwd-4-channels", "fill"])
def test_backward_launch_shape_of_its_own(config):
    """_bwd_scan with its own channels per program, and ``fill`` shrinking them: same results."""
    inputs = make_inputs(2, 4, 49, 16, torch.float32)
    check(inputs, kernel_fn(True, config), reference_fn(True), torch.float32)


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("L,N,block_t", [(7, 32, 8), (65, 32, 16), (130, 16, 32), (2049, 32, 32)],
                         ids=["one-chunk", "chunks-of-16", "16-states", "long"])
def test_both_layouts_match_reference(L, N, block_t, reverse, layout):
    """The forward-side kernels with one state column per thread (the default) or several steps and
    states per thread: every gradient, partial last chunks."""
    if L > 500 and not CUDA:
        pytest.skip("long sequences run compiled only")
    cfg = ScanConfig(block_t=block_t, dg=2 if not CUDA else 128, layout=layout)
    inputs = make_inputs(2, 4, L, N, torch.float32)
    check(inputs, kernel_fn(reverse, cfg), reference_fn(reverse), torch.float32)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_both_layouts_bidirectional_in_half_precision(layout):
    E, L, N = 4, 75, 32
    inputs = make_inputs(2, 2 * E, L, N, torch.bfloat16, groups=2)
    cfg = ScanConfig(block_t=16, dg=2, layout=layout)

    def kernel(**kw):
        return selective_scan_triton(**kw, delta_softplus=True, bidirectional=True, config=cfg)

    def reference(**kw):
        return selective_scan_bidirectional_reference(**kw, delta_softplus=True)

    check(inputs, kernel, reference, torch.bfloat16)


def test_layout_names_are_checked_and_unsupported_tiles_fall_back_to_rows():
    with pytest.raises(ValueError, match="layout"):
        ScanConfig(layout="diagonal")
    assert ScanConfig().layout == "columns"
    assert not ScanConfig(block_t=4).columns(16) and not ScanConfig(block_t=12).columns(16)
    assert ScanConfig(block_t=32).columns(32) and not ScanConfig(block_t=32).columns(64)
    assert not ScanConfig(block_t=32, layout="rows").columns(32)
    # tiles that would repeat lanes keep rows (compiled, 4 states summed wrongly over time)
    assert ScanConfig(block_t=32).columns(16) and not ScanConfig(block_t=32).columns(8)
    assert not ScanConfig(block_t=8).columns(16) and ScanConfig(block_t=8).columns(32)


def test_bfloat16_chunk_states_are_opt_in_and_stay_within_bfloat16_tolerance():
    """``states="bfloat16"`` halves the chunk-state buffers for bf16 activations; fp32 and fp16
    activations keep fp32 states, and the default keeps fp32 everywhere."""
    with pytest.raises(ValueError, match="states"):
        ScanConfig(states="half")
    assert ScanConfig().state_dtype(torch.bfloat16) == torch.float32
    opt_in = ScanConfig(block_t=16, dg=2, states="bfloat16") if not CUDA else ScanConfig(states="bfloat16")
    assert opt_in.state_dtype(torch.bfloat16) == torch.bfloat16
    assert opt_in.state_dtype(torch.float16) == torch.float32 and opt_in.state_dtype(torch.float32) == torch.float32
    inputs = make_inputs(2, 4, 130, 32, torch.bfloat16)
    for reverse in (False, True):
        check(inputs, kernel_fn(reverse, opt_in), reference_fn(reverse), torch.bfloat16)
    from helix.ops.selective_scan import triton as kernels

    x = {k: v.detach() for k, v in inputs.items()}
    Bm, Cm, _ = kernels.scan_groups(x["u"], x["B"], x["C"], False, None)
    _, H = kernels.scan_forward(x["u"], x["delta"], x["A"], kernels.aligned_rows(Bm, opt_in),
                                kernels.aligned_rows(Cm, opt_in), x["D"], x["z"], x["delta_bias"], True, False,
                                False, opt_in)
    assert H.dtype == torch.bfloat16


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_the_layout_chooses_the_forward_kernels_it_names(layout, monkeypatch):
    """Both layouts are correct (above), so only this shows which kernels a config really launches."""
    from helix.ops.selective_scan import triton as kernels

    launched = []
    real = kernels._launch

    def record(kernel, grid, *args, **kwargs):
        launched.append((kernel.fn.__name__, kwargs.get("COLUMNS")))
        return real(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(kernels, "_launch", record)
    cfg = ScanConfig(block_t=16, dg=2, layout=layout)
    with torch.no_grad():
        selective_scan_triton(**make_inputs(1, 2, 40, 32, torch.float32), delta_softplus=True, config=cfg)
    columns = layout == "columns"
    assert ("_fwd_chunk_state", columns) in launched
    assert ("_fwd_scan_columns" if columns else "_fwd_scan", None) in launched


def test_aligned_rows_copies_rows_whose_padding_would_leave_the_storage():
    """The column tiles read unit-stride rows up to the next multiple of 16 steps: a row pitch that is
    a multiple of 16 is enough unless the storage ends right after the last row's L elements."""
    from helix.ops.selective_scan.triton import aligned_rows

    L, pitch = 40, 48
    padded = torch.zeros(2 * pitch).as_strided((1, 1, 2, L), (2 * pitch, 2 * pitch, pitch, 1))
    assert aligned_rows(padded, None).data_ptr() == padded.data_ptr()  # 48 >= 48: read in place
    tight = torch.zeros(pitch + L).as_strided((1, 1, 2, L), (2 * pitch, 2 * pitch, pitch, 1))
    copied = aligned_rows(tight, None)
    assert copied.data_ptr() != tight.data_ptr() and torch.equal(copied, tight)
    assert copied.stride(2) % 16 == 0 and copied.untyped_storage().nbytes() >= 2 * 48 * 4


def test_fill_shrinks_channels_per_program_only_for_short_launches():
    from helix.ops.selective_scan.triton import _channels_per_program
    assert _channels_per_program(512, 128) == 128
    assert _channels_per_program(512, 128, programs_per_channel=2 * 4 * 32, fill=4096) == 32  # 16 x 256 >= 4096
    assert _channels_per_program(512, 128, programs_per_channel=2 * 938 * 8, fill=4096) == 128  # long: unchanged
    assert _channels_per_program(6, 128, programs_per_channel=1, fill=10 ** 6) == 1


def test_carry_over_many_chunk_blocks():
    """38 chunks of 8: the chunk carries are combined 16 chunks at a time, with a partial last block."""
    inputs = make_inputs(1, 2, 300, 16, torch.float32)
    config = ScanConfig(block_t=8, dg=2)
    check(inputs, kernel_fn(False, config), reference_fn(False), torch.float32)
    check(inputs, kernel_fn(True, config), reference_fn(True), torch.float32)


def test_optional_terms_absent():
    """No z, no D, no bias, no softplus: the plain recurrence."""
    inputs = make_inputs(2, 4, 70, 16, torch.float32)
    inputs["delta"] = inputs["delta"].abs()  # without softplus, keep steps positive

    def kernel(**kw):
        return selective_scan_triton(**kw, delta_softplus=False, config=CONFIG)

    check(inputs, kernel, reference_fn(softplus=False), torch.float32, drop=("z", "D", "delta_bias"))


def test_non_contiguous_views():
    """Strided inputs as the mixer passes them (B, C transposed views of (B, L, N))."""
    inputs = make_inputs(2, 4, 67, 16, torch.float32)
    for k in ("B", "C"):
        inputs[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    for k in ("u", "z"):
        inputs[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    check(inputs, kernel_fn(), reference_fn(), torch.float32)


def test_bidirectional_single_launch_matches_flipped_reference():
    E, L, N = 4, 75, 16
    inputs = make_inputs(2, 2 * E, L, N, torch.float32, groups=2)

    def kernel(**kw):
        return selective_scan_bidirectional(**kw, delta_softplus=True, backend="triton")

    def reference(**kw):
        return selective_scan_bidirectional_reference(**kw, delta_softplus=True)

    check(inputs, kernel, reference, torch.float32)
    # and the second half really is the time-reversed scan of its own inputs
    with torch.no_grad():
        y = kernel(**inputs)
        half = {k: (v[:, E:] if k in ("u", "delta", "z") else v[E:] if k in ("A", "D", "delta_bias")
                    else v[:, 1]) for k, v in inputs.items()}
        y_rev = reference_fn(True)(**{k: v.double() for k, v in half.items()})
    assert rel(y[:, E:], y_rev) < TOL[torch.float32][0]


def test_dispatcher_choices(monkeypatch):
    inputs = make_inputs(1, 2, 9, 16, torch.float32, device="cpu")
    y_ref = selective_scan_reference(**inputs)
    torch.testing.assert_close(selective_scan(**inputs, backend="reference"), y_ref)
    # CPU -> the numba kernel (or the reference without numba): equal up to fp32 rounding
    torch.testing.assert_close(selective_scan(**inputs, backend="auto"), y_ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="cuda")
    # as if Triton were not installed (the one resolver in helix.ops.backend decides)
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="Triton"):
        selective_scan(**inputs, backend="triton")
    torch.testing.assert_close(selective_scan(**inputs, backend="auto"), y_ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- GPU: the full grid, large sizes


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("N", [16, 32])
@pytest.mark.parametrize("L", [1, 7, 63, 64, 65, 500, 2049])
def test_gpu_grid(L, N, dtype, reverse):
    inputs = make_inputs(2, 64, L, N, dtype)
    check(inputs, kernel_fn(reverse), reference_fn(reverse), dtype)


@gpu
@pytest.mark.gpu
def test_gpu_large_bf16_bidirectional():
    inputs = make_inputs(4, 2 * 256, 3000, 32, torch.bfloat16, groups=2)
    check(inputs, lambda **kw: selective_scan_bidirectional(**kw, delta_softplus=True),
          lambda **kw: selective_scan_bidirectional_reference(**kw, delta_softplus=True), torch.bfloat16)


def _chunkwise(y, y_ref, width):
    """Worst relative error over windows of ``width`` steps: a local failure cannot average out."""
    return max(rel(y[..., i:i + width], y_ref[..., i:i + width]) for i in range(0, y.shape[-1], width))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("L,Bsz,D", [(30_000, 2, 32), (300_000, 1, 8)])
def test_gpu_long_sequences_chunk_by_chunk(L, Bsz, D):
    inputs = make_inputs(Bsz, D, L, 16, torch.float32)
    (y, y_ref), grads = run_both(inputs, kernel_fn(True), reference_fn(True))
    assert _chunkwise(y, y_ref, 2048) < 1e-4
    for name in ("u", "delta", "z", "B", "C"):
        g, g_ref = grads[name]
        assert _chunkwise(g, g_ref, 2048) < 2e-4, name
    for name in ("A", "D", "delta_bias"):
        assert rel(*grads[name]) < 1e-4, name


@gpu
@pytest.mark.gpu
def test_gpu_offsets_past_int32():
    """B*D*L = 2.3e9 > 2^31 elements: the last channels (offsets past 2^31) must be right."""
    Bsz, D, L, N = 1, 7_680, 300_000, 16
    torch.manual_seed(0)
    kw = dict(device="cuda", dtype=torch.bfloat16)  # drawn on the GPU: 2.3e9 values per tensor
    inputs = dict(u=torch.randn(Bsz, D, L, **kw), delta=torch.randn(Bsz, D, L, **kw) * 0.5 - 1.0,
                  A=-torch.rand(D, N, device="cuda") * N - 0.5, B=torch.randn(Bsz, N, L, **kw),
                  C=torch.randn(Bsz, N, L, **kw), D=torch.randn(D, device="cuda"),
                  z=torch.randn(Bsz, D, L, **kw), delta_bias=torch.randn(D, device="cuda") * 0.3)
    y = selective_scan_triton(**inputs, delta_softplus=True)
    tail = {k: (v[:, -4:] if k in ("u", "delta", "z") else v[-4:] if k in ("A", "D", "delta_bias") else v)
            for k, v in inputs.items()}
    y_ref = selective_scan_reference(**{k: v.float() for k, v in tail.items()}, delta_softplus=True)
    assert _chunkwise(y[:, -4:], y_ref, 8192) < TOL[torch.bfloat16][0]


@pytest.mark.parametrize("n,dtype", [(40, torch.float32), (4100, torch.float32), (40, torch.bfloat16)],
                         ids=["32-per-step", "64-per-step", "bf16-16-per-step"])
def test_chunk_carries_are_computed_in_place(n, dtype):
    """The carry pass overwrites the chunk-local sums with the state after each chunk (one state buffer
    at a time, not two): ascending E_c = exp(A Sigma_c) E_{c-1} + S_c with chunk c at row c + 1 and
    row 0 zero; descending from the top, chunk c at row c and row n_chunks zero. 40 chunks are a full
    step of 32 and a part (bfloat16 states: two steps of 16 and a part); from 4,096 chunks on a step
    takes 64 (65 steps here, the last partial)."""
    from helix.ops.selective_scan import triton as scan

    g = torch.Generator().manual_seed(3)
    Bsz, D = (2, 4) if n < 1000 else (1, 2)  # the long case is slow in the interpreter
    A = -torch.rand(D, 16, generator=g).to(DEVICE) - 0.2
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-5)
    for descending in (False, True):
        S = torch.rand(Bsz, D, n + 1, 16, generator=g).to(DEVICE, dtype)
        Sig = torch.rand(Bsz, D, n, generator=g).to(DEVICE)
        local = (S[:, :, :n] if descending else S[:, :, 1:]).float()
        want = local.clone()
        for c in (range(n - 2, -1, -1) if descending else range(1, n)):
            prev = c + 1 if descending else c - 1
            want[:, :, c] += torch.exp(Sig[:, :, c, None] * A) * want[:, :, prev]
        out = scan._carry(S, Sig, A, False, D, False, descending)
        assert out.data_ptr() == S.data_ptr()
        torch.testing.assert_close((out[:, :, :n] if descending else out[:, :, 1:]).float(), want, **tol)
        assert not (out[:, :, n] if descending else out[:, :, 0]).any()  # the zero row


@pytest.mark.shipped_fill
def test_default_launch_shape_follows_the_measured_sweep():
    """Defaults (RESULTS.md section 9): 128 channels per program at 300 s; a 5 s batch of 32 spreads the
    forward-side kernels over more programs; _bwd_scan keeps 128 everywhere."""
    from helix.ops.selective_scan.triton import DEFAULT_CONFIG, _launch_shape

    def dg(B, L, backward):
        u = torch.empty(B, 1024, L, device="meta")
        Bm = torch.empty(B, 2, 32, L, device="meta")
        return _launch_shape(u, Bm, DEFAULT_CONFIG, backward)[-1]["DG"]

    assert dg(8, 30000, False) == dg(8, 30000, True) == 128
    assert dg(32, 500, False) == 32 and dg(32, 100, False) <= 16
    assert dg(32, 500, True) == dg(32, 100, True) == 128


@pytest.mark.parametrize("bidir,reverse,lengths,N", [(True, False, None, 32), (True, False, (160, 71), 32),
                                                     (True, False, (160, 71), 16), (False, False, (160, 100), 32),
                                                     (False, True, (97, 160), 32)],
                         ids=["bidir", "bidir-lengths", "bidir-lengths-16", "fwd-lengths", "rev-lengths"])
def test_backward_recomputing_the_states_in_one_pass_matches_two_passes(bidir, reverse, lengths, N, monkeypatch):
    """scan_backward(H=None), as the lean block calls it, computes the forward's chunk sums and the
    adjoint's in one pass (one exponential per element); the gradients equal those from the two
    separate passes, and the one-pass kernel is what ran."""
    from helix.ops.selective_scan import triton as scan

    inputs = make_inputs(2, 8, 160, N, torch.float32, groups=2 if bidir else None, seed=4)
    cfg = ScanConfig(block_t=32, dg=4)
    assert cfg.columns(N)
    g = torch.Generator().manual_seed(5)
    dout = torch.randn(2, 8, 160, generator=g).to(DEVICE)
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64, device=DEVICE)
    i = inputs
    Bm, Cm = scan.aligned_rows(i["B"] if bidir else i["B"][:, None], cfg), scan.aligned_rows(
        i["C"] if bidir else i["C"][:, None], cfg)
    args = (i["u"], i["delta"], i["A"], Bm, Cm, i["D"], i["z"], i["delta_bias"])
    H = scan.chunk_entry_states(i["u"], i["delta"], i["A"], Bm, i["delta_bias"], True, bidir, reverse, cfg, lens)
    two = scan.scan_backward(dout, *args, H, True, bidir, reverse, cfg, lengths=lens)
    launched = []
    real = scan._launch
    monkeypatch.setattr(scan, "_launch", lambda kernel, *a, **k: (launched.append(kernel.fn.__name__),
                                                                   real(kernel, *a, **k))[1])
    one = scan.scan_backward(dout, *args, None, True, bidir, reverse, cfg, lengths=lens)
    assert "_both_chunk_states" in launched and "_fwd_chunk_state" not in launched, launched
    assert "_bwd_chunk_state" not in launched, launched
    for name, a, b in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"), one, two):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5, msg=name)
    launched.clear()
    sep = scan.scan_backward(dout, *args, None, True, bidir, reverse, ScanConfig(block_t=32, dg=4, fuse_states=False),
                             lengths=lens)
    assert "_fwd_chunk_state" in launched and "_both_chunk_states" not in launched, launched
    for name, a, b in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"), sep, two):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5, msg=name)  # atomics sum in any order


# both directions in one launch, then lengths in each direction; 16 states once (32 elsewhere)
SERIAL_CASES = [(True, False, None, 32), (True, False, (160, 71), 32), (True, False, (160, 71), 16),
                (False, False, (160, 100), 32), (False, True, (97, 160), 32)]


@pytest.mark.parametrize("bidir,reverse,lengths,N", SERIAL_CASES,
                         ids=["bidir", "bidir-lengths", "bidir-lengths-16", "fwd-lengths", "rev-lengths"])
def test_serial_forward_matches_the_chunk_parallel_one(bidir, reverse, lengths, N, monkeypatch):
    """fwd_chunks="serial" walks the chunks in order and passes the state on itself: its output and its
    saved H (every row, zero rows and rows past a row's end included) equal the chunk-parallel
    forward's, the serial kernel is what ran, and without saved states only the output is kept."""
    from helix.ops.selective_scan import triton as scan

    L = 150  # five chunks, the last partial
    inputs = make_inputs(2, 8, L, N, torch.float32, groups=2 if bidir else None, seed=6)
    lens = None if lengths is None else torch.tensor([min(x, L) for x in lengths], dtype=torch.int64, device=DEVICE)
    i = inputs
    par, ser = ScanConfig(block_t=32, dg=4), ScanConfig(block_t=32, dg=4, fwd_chunks="serial", serial_fill=4)
    Bm = scan.aligned_rows(i["B"] if bidir else i["B"][:, None], par)
    Cm = scan.aligned_rows(i["C"] if bidir else i["C"][:, None], par)
    args = (i["u"], i["delta"], i["A"], Bm, Cm, i["D"], i["z"], i["delta_bias"], True, bidir, reverse)
    y_par, H_par = scan.scan_forward(*args, par, lens)
    launched = []
    real = scan._launch
    monkeypatch.setattr(scan, "_launch", lambda kernel, *a, **k: (launched.append(kernel.fn.__name__),
                                                                   real(kernel, *a, **k))[1])
    y_ser, H_ser = scan.scan_forward(*args, ser, lens)
    # on CUDA the Gluon kernel runs where its (32, 32) tiles apply, the Triton kernel elsewhere
    gluon = DEVICE == "cuda" and N == 32
    assert launched == ["_fwd_serial_gluon" if gluon else "_fwd_serial_columns"], launched
    # the same sums in another order (a chunk's decay as a product of steps, not exp(A Sigma))
    assert rel(y_ser, y_par) < 1e-5 and rel(H_ser, H_par) < 1e-5, (rel(y_ser, y_par), rel(H_ser, H_par))
    y_lean, H_lean = scan.scan_forward(*args, ser, lens, save_states=False)
    assert H_lean.shape == (2, 8, N)
    assert torch.equal(y_lean, y_ser)


def test_serial_forward_applies_only_where_it_can():
    """Serial needs the column layout, more than one chunk and fp32 states; the names are checked."""
    cfg = ScanConfig(fwd_chunks="serial")
    assert cfg.serial_forward(32, 2, torch.bfloat16) and not cfg.serial_forward(32, 1, torch.float32)
    assert not cfg.serial_forward(8, 4, torch.float32)  # 8 states: rows layout
    assert not ScanConfig(fwd_chunks="serial", states="bfloat16").serial_forward(32, 4, torch.bfloat16)
    assert not ScanConfig().serial_forward(32, 4, torch.float32)
    with pytest.raises(ValueError, match="fwd_chunks"):
        ScanConfig(fwd_chunks="sequential")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_serial_forward_gradients_match_reference(reverse):
    """The whole autograd path with the serial forward (backward reads the H it saved)."""
    cfg = ScanConfig(block_t=32, dg=4, fwd_chunks="serial", serial_fill=4)
    check(make_inputs(2, 8, 130, 32, torch.float32, seed=7), kernel_fn(reverse, cfg), reference_fn(reverse),
          torch.float32)


@pytest.mark.parametrize("lengths", [None, (96, 41)], ids=["full", "lengths"])
def test_chunk_state_passes_with_loads_one_channel_ahead_give_the_same_states(lengths):
    """``ScanConfig.prefetch`` in the chunk-state passes (``_fwd_chunk_state``, ``_bwd_chunk_state``,
    ``_both_chunk_states``): the next channel's inputs are loaded during this one's, and the last
    channel of a program (here every fourth) reloads its own. The states and every gradient are
    bitwise those of the passes that load each channel's inputs when they use them."""
    from helix.ops.selective_scan import triton as scan

    i = make_inputs(2, 8, 96, 32, torch.float32, groups=2, seed=6)
    dout = torch.randn(2, 8, 96, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64, device=DEVICE)
    results = {}
    for prefetch in (False, True):
        for fuse in (False, True):
            cfg = ScanConfig(block_t=32, dg=4, prefetch=prefetch, fuse_states=fuse)
            Bm, Cm = scan.aligned_rows(i["B"], cfg), scan.aligned_rows(i["C"], cfg)
            H = scan.chunk_entry_states(i["u"], i["delta"], i["A"], Bm, i["delta_bias"], True, True, False, cfg, lens)
            grads = scan.scan_backward(dout, i["u"], i["delta"], i["A"], Bm, Cm, i["D"], i["z"], i["delta_bias"], None,
                                       True, True, False, cfg, lengths=lens)
            results[prefetch, fuse] = (H, *grads)
    for fuse in (False, True):
        for name, a, b in zip(("H", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"),
                              results[True, fuse], results[False, fuse]):
            if name in ("dA", "dB", "dC", "dD", "dbias") and DEVICE == "cuda":  # atomics: order varies
                torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5, msg=name)
            else:
                assert torch.equal(a, b), (name, fuse)
