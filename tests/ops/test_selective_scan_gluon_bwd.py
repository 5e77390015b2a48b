"""The Gluon backward scan (``selective_scan/gluon_bwd.py``).

Gluon has no interpreter, so without a GPU the kernel is compiled for sm_90 (in a subprocess, where
``TRITON_INTERPRET`` is unset) and its machine code checked for what the layout is for; which kernel
``scan_backward`` launches is checked on CPU too. With a GPU every gradient is compared with the
reference in float64 and with the Triton backward.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from helix.ops.selective_scan import gluon_bwd  # noqa: E402
from helix.ops.selective_scan import triton as kernels  # noqa: E402
from helix.ops.selective_scan.triton import ScanConfig, selective_scan_triton  # noqa: E402

from helix.ops.selective_scan import selective_scan_bidirectional_reference  # noqa: E402

from test_selective_scan_triton import NAMES, TOL, check, make_inputs, reference_fn, rel  # noqa: E402

CUDA = torch.cuda.is_available()
needs_gluon = pytest.mark.skipif(not gluon_bwd.AVAILABLE, reason="this Triton has no Gluon")

# compiles the kernel as the BiMamba block at 300 s specialises it (bf16, strides divisible by 16,
# unit strides constant) and reports registers, local-memory stores and shuffles
_COMPILE = r"""
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from helix.ops.selective_scan import gluon_bwd
meta = json.loads(sys.argv[1])
fn = getattr(gluon_bwd, meta.pop("KERNEL"))
L, D, N = 30000, 1024, 32
ints = {"L": L, "D_GROUP": D // 2, "N": N, "n_chunks": L // 32 + 1, "L_BC": L}
unit = {"su_l", "sdl_l", "sB_l", "sC_l", "sz_l", "sg_l", "so_l"}
bf16 = {"u_ptr", "dl_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "du_ptr", "ddl_ptr", "dz_ptr", "y_ptr", "out_ptr"}
sig, consts, attrs = {}, {}, {}
for i, name in enumerate(fn.arg_names):
    if fn.params[i].is_constexpr:
        sig[name], consts[name] = "constexpr", meta[name]
    elif name in unit:
        sig[name], consts[name] = "constexpr", 1
    else:
        sig[name] = ("*bf16" if name in bf16 else "*fp32") if name.endswith("_ptr") else "i32"
        if name.endswith("_ptr") or ints.get(name, 16) % 16 == 0:
            attrs[(i,)] = [["tt.divisibility", 16]]
src = GluonASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
    f.write(compiled.asm["cubin"])
    f.flush()
    sass = subprocess.run([os.path.join(tools, "nvdisasm"), "-c", f.name], capture_output=True, text=True,
                          check=True).stdout
    usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True,
                           text=True, check=True).stdout
ops = re.findall(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
print(json.dumps({"regs": int(re.search(r"REG:(\d+)", usage).group(1)), "shfl": ops.count("SHFL"),
                  "stl": ops.count("STL"), "mufu": ops.count("MUFU")}))
"""

_FLAGS = dict(KERNEL="_bwd_scan_gluon", HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BIDIR=True, REVERSE=False, BLOCK_T=32,
              BLOCK_N=32, DG=128, HAS_LEN=False, WRITE_Y=True, ACC_SMEM=False, BC_SMEM=False, PREFETCH=False,
              FULL_N=False, SHIFT_A=False)


def _compile_sm90(**changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(gluon_bwd.__file__)))))
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(dict(_FLAGS, **changes))], env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode and ("ptxas" in run.stderr and "not found" in run.stderr):
        pytest.skip("this Triton has no ptxas to compile for sm_90")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@needs_gluon
def test_compiles_for_sm90_with_its_tiles_one_state_column_per_thread():
    """Every tile in registers (prefetch off; the prefetching default is compiled below), at the 300 s
    block's specialisation: the only shuffles are the two per-channel sums over time (dD, dbias: 5
    each). A layout that puts steps across lanes needs hundreds (the Triton kernel: ~270 per channel)."""
    counts = _compile_sm90()
    assert counts["shfl"] <= 16, counts
    assert counts["mufu"] >= 64, counts  # the two exponentials per element are there: the loop is the kernel's


@needs_gluon
def test_with_its_tiles_in_shared_memory_it_does_not_spill():
    """B, C and the dB, dC accumulators in shared memory free 64 registers: no local-memory spills
    (on the H200 that was still slower than spilling a little: RESULTS.md section 14)."""
    counts = _compile_sm90(ACC_SMEM=True, BC_SMEM=True)
    assert counts["stl"] == 0 and counts["shfl"] <= 16, counts


@needs_gluon
@pytest.mark.parametrize("changes,shuffles", [
    (dict(ACC_SMEM=True, BC_SMEM=False), 16),
    (dict(BIDIR=False, REVERSE=True, HAS_LEN=True, HAS_Z=False, HAS_D=False, HAS_BIAS=False, SOFTPLUS=False,
          WRITE_Y=False), 16),
    (dict(HAS_D=False), 16), (dict(HAS_BIAS=False), 16), (dict(FULL_N=True, PREFETCH=True), 16)],
    ids=["acc-in-smem", "no-optional-terms", "no-D", "no-bias", "unmasked-dA"])
def test_every_variant_compiles_for_sm90(changes, shuffles):
    assert _compile_sm90(**changes)["shfl"] <= shuffles


@needs_gluon
@pytest.mark.parametrize("smem", ["none", "acc", "acc+bc"])
def test_the_shifted_decay_takes_one_exponential_per_element(smem):
    """``ScanConfig(bwd_next="shift")``: a_{t+1} is a_t's tile one step on, a register copy, so the channel
    loop issues 32 MUFU (+ 5 for the per-step softplus and sigmoids) instead of 64 (+ 6); the kernel's
    whole count here is 40 against 73 (the test above asserts >= 64 without the shift). With the accumulators
    in shared memory nothing spills."""
    shift = _compile_sm90(ACC_SMEM=smem != "none", BC_SMEM=smem == "acc+bc", PREFETCH=True, SHIFT_A=True)
    assert shift["mufu"] <= 40, shift
    assert shift["shfl"] <= 16, shift
    if smem != "none":
        assert shift["stl"] == 0, shift


@needs_gluon
@pytest.mark.parametrize("changes", [{}, dict(BIDIR=False, REVERSE=True, HAS_LEN=True, HAS_Z=False, HAS_D=False,
                                              HAS_BIAS=False, SOFTPLUS=False)], ids=["block", "no-optional-terms"])
def test_forward_compiles_for_sm90_without_shuffles_or_spills(changes):
    """The Gluon forward scan: the in-chunk scan inside a thread, y through one shared-memory
    conversion, so no shuffles at all; one exponential per element (32 per channel, plus the softplus)."""
    counts = _compile_sm90(KERNEL="_fwd_scan_gluon", **changes)
    assert counts["shfl"] == 0 and counts["stl"] == 0, counts
    assert counts["mufu"] >= 32, counts


def test_forward_kernel_choice_is_checked_and_needs_a_compiled_cuda_launch():
    with pytest.raises(ValueError, match="fwd_kernel"):
        ScanConfig(fwd_kernel="cuda")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gl = ScanConfig(fwd_kernel="gluon")
    assert not gl.gluon_forward(32, cpu)
    assert not ScanConfig(fwd_kernel="triton").gluon_forward(32, cuda)
    assert not ScanConfig(block_t=16, fwd_kernel="gluon").gluon_forward(32, cuda)
    assert not ScanConfig(num_warps=2, fwd_kernel="gluon").gluon_forward(32, cuda)
    assert not gl.gluon_forward(16, cuda)
    if gluon_bwd.AVAILABLE and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        assert gl.gluon_forward(32, cuda)


def test_backward_kernel_choice_is_checked_and_needs_a_compiled_cuda_launch():
    with pytest.raises(ValueError, match="bwd_kernel"):
        ScanConfig(bwd_kernel="cuda")
    with pytest.raises(ValueError, match="bwd_smem"):
        ScanConfig(bwd_smem="all")
    with pytest.raises(ValueError, match="bwd_next"):
        ScanConfig(bwd_next="gather")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gl = ScanConfig(bwd_kernel="gluon")
    assert not gl.gluon_backward(32, cpu)  # no interpreter for Gluon: CPU tensors keep Triton
    assert not ScanConfig(bwd_kernel="triton").gluon_backward(32, cuda)
    assert not ScanConfig(block_t=16, bwd_kernel="gluon").gluon_backward(32, cuda)
    assert not ScanConfig(bwd_warps=2, bwd_kernel="gluon").gluon_backward(32, cuda)
    assert not gl.gluon_backward(16, cuda)  # one state per lane: 32-state tiles only
    if gluon_bwd.AVAILABLE and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        assert gl.gluon_backward(32, cuda)


def test_cpu_launches_run_the_triton_backward_even_when_gluon_is_asked_for(monkeypatch):
    """With CPU tensors (the interpreter) the Triton kernel runs and the gradients are the reference's."""
    if CUDA:
        pytest.skip("CPU tensors only")
    launched = []
    launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda k, *a, **kw: launched.append(k.fn.__name__) or launch(k, *a, **kw))
    inputs = make_inputs(1, 4, 40, 32, torch.float32, device="cpu")
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    cfg = ScanConfig(block_t=32, dg=2, bwd_kernel="gluon")
    selective_scan_triton(**leaves, delta_softplus=True, config=cfg).sum().backward()
    assert "_bwd_scan" in launched and "_bwd_scan_gluon" not in launched


# ---------------------------------------------------------------- GPU: against the reference and Triton

gpu_gluon = pytest.mark.skipif(not (CUDA and gluon_bwd.AVAILABLE), reason="needs a CUDA GPU and Gluon")


def _scan(cfg, reverse=False, bidirectional=False, lengths=None):
    def f(**kw):
        return selective_scan_triton(**kw, delta_softplus=True, reverse=reverse, bidirectional=bidirectional,
                                     config=cfg, lengths=lengths)
    return f


@needs_gluon
@pytest.mark.parametrize("kernel,shuffles", [("_fwd_scan_gluon", 0), ("_bwd_scan_gluon", 16)],
                         ids=["forward", "backward"])
def test_prefetch_variants_compile_for_sm90_without_more_shuffles(kernel, shuffles):
    """``ScanConfig(prefetch=True)``, the default: the per-channel loads one channel ahead add registers
    (and, in the backward, spills), not shuffles; the forward still does not spill; the exponentials stay
    where they were."""
    counts = _compile_sm90(KERNEL=kernel, PREFETCH=True)
    assert counts["shfl"] <= shuffles, counts
    assert kernel != "_fwd_scan_gluon" or counts["stl"] == 0, counts
    assert counts["mufu"] >= (32 if kernel == "_fwd_scan_gluon" else 64), counts


def test_prefetch_changes_no_result_where_the_triton_kernels_run():
    """Where the Triton kernels run (here: CPU tensors, the interpreter), ``prefetch=True`` (which their
    chunk-state passes use too) changes no output, and it is part of the config's repr (run records name
    the kernels' settings)."""
    inputs = make_inputs(2, 8, 70, 16, torch.float32, groups=2)
    cfg = ScanConfig(block_t=32, dg=4, prefetch=True)
    assert "prefetch=True" in repr(cfg) and ScanConfig().prefetch is True
    outs = [_scan(c, bidirectional=True)(**inputs) for c in (ScanConfig(block_t=32, dg=4, prefetch=False), cfg)]
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("case", ["bidirectional-lengths", "reverse", "no-optional-terms"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_prefetch_gives_the_same_outputs_and_gradients(case):
    """The prefetching Gluon kernels compute the same sums from the same loads: the forward's output is
    bitwise equal, the gradients equal up to the order of the atomic adds. D = 320 makes channel blocks
    whose last channel reloads itself (the prefetch past the block)."""
    rev, bidir = case == "reverse", case.startswith("bidirectional")
    inputs = make_inputs(3, 320, 333, 32, torch.float32, groups=2 if bidir else None)
    if case == "no-optional-terms":
        inputs = {k: v for k, v in inputs.items() if k not in ("D", "z", "delta_bias")}
    lengths = torch.tensor([333, 200, 41], device="cuda") if bidir else None
    ys, grads = [], []
    for prefetch in (False, True):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y = _scan(ScanConfig(prefetch=prefetch), rev, bidir, lengths=lengths)(**leaves)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y))
        ys.append(y.detach())
        grads.append({k: v.grad for k, v in leaves.items()})
    assert torch.equal(ys[0], ys[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=2e-5, atol=2e-5, msg=name)


@pytest.mark.parametrize("bwd_next", ["exp", "shift"])
@pytest.mark.parametrize("smem", ["acc+bc", "acc", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["forward", "reverse", "24-states", "no-optional-terms", "no-D", "no-bias",
                                  "bidirectional"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_gradients_match_the_reference(case, dtype, smem, bwd_next):
    """Every gradient against float64; "no-D" and "no-bias" take the kernel's one-lane atomic for the other
    (with both, dD and dbias share one atomic of two lanes)."""
    cfg = ScanConfig(bwd_kernel="gluon", bwd_smem=smem, bwd_next=bwd_next)
    rev, bidir = case == "reverse", case == "bidirectional"
    inputs = make_inputs(3, 256, 333, 24 if case == "24-states" else 32, dtype, groups=2 if bidir else None)
    drop = {"no-optional-terms": ("D", "z", "delta_bias"), "no-D": ("D",), "no-bias": ("delta_bias",)}.get(case, ())
    if bidir:
        reference = lambda **kw: selective_scan_bidirectional_reference(**kw, delta_softplus=True)  # noqa: E731
    else:
        reference = reference_fn(rev)
    check(inputs, _scan(cfg, rev, bidir), reference, dtype, drop=drop)


@pytest.mark.parametrize("N", [32, 24])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_unmasked_dA_atomic_gives_the_same_gradients(N):
    """``full_n`` (the default) drops dA's mask where N = 32 and L is a multiple of 16 (here 352); N = 24
    keeps it either way. The gradients equal the masked kernel's up to the order of the atomic adds."""
    inputs = make_inputs(3, 256, 352, N, torch.float32, groups=2)
    grads = []
    for full_n in (False, True):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y = _scan(ScanConfig(full_n=full_n), bidirectional=True)(**leaves)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y))
        grads.append({k: v.grad for k, v in leaves.items()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=2e-5, atol=2e-5, msg=name)


@pytest.mark.parametrize("bwd_next", ["exp", "shift"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["lengths", "groups", "long"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_gradients_match_the_triton_backward(case, dtype, bwd_next):
    """Per-row lengths (bidirectional: the reversed half starts at each row's end), four B/C groups,
    and a long sequence at the block's width: every gradient as the Triton kernel's."""
    Bsz, D, L = (3, 256, 333) if case != "long" else (2, 1024, 30_000)
    inputs = make_inputs(Bsz, D, L, 32, dtype, groups=4 if case == "groups" else 2)
    lengths = torch.tensor([333, 200, 41], device="cuda") if case == "lengths" else None
    bidir = case != "groups"
    grads = {}
    for kernel in ("gluon", "triton"):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y = _scan(ScanConfig(bwd_kernel=kernel, bwd_next=bwd_next), bidirectional=bidir, lengths=lengths)(**leaves)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y))
        grads[kernel] = {k: v.grad for k, v in leaves.items()}
    for name in NAMES:
        assert torch.isfinite(grads["gluon"][name]).all(), name
        assert rel(grads["gluon"][name], grads["triton"][name]) < TOL[dtype][1], name


def test_a_gluon_kernel_that_does_not_compile_falls_back_to_triton_once_with_a_warning(monkeypatch):
    """A Triton whose Gluon rejects the kernel: one warning naming the cause, the Triton kernel's
    gradients (the reference's), and no further Gluon attempts in the process."""
    import ast
    import triton

    from test_selective_scan_triton import reference_fn

    monkeypatch.setattr(ScanConfig, "gluon_backward", lambda self, block_n, device: True)
    monkeypatch.setattr(kernels, "_GLUON_FAILED", [])
    launched = []
    launch = kernels._launch

    def fake_launch(kernel, *args, **kwargs):
        launched.append(kernel.fn.__name__)
        if "ACC_SMEM" in kwargs:  # the Gluon kernel's own flags
            raise triton.CompilationError(None, ast.parse("x").body[0], "unsupported layout")
        return launch(kernel, *args, **kwargs)

    monkeypatch.setattr(kernels, "_launch", fake_launch)
    device = "cuda" if CUDA else "cpu"
    inputs = make_inputs(1, 4, 40, 32, torch.float32, device=device)
    cfg = ScanConfig(block_t=32, dg=2, bwd_kernel="gluon")
    for attempt in range(2):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        ref = {k: v.double().clone().requires_grad_() for k, v in inputs.items()}
        if attempt == 0:
            with pytest.warns(RuntimeWarning, match="Gluon scan kernels did not compile.*unsupported layout"):
                selective_scan_triton(**leaves, delta_softplus=True, config=cfg).sum().backward()
        else:
            selective_scan_triton(**leaves, delta_softplus=True, config=cfg).sum().backward()
        reference_fn()(**ref).sum().backward()
        for name in NAMES:
            assert rel(leaves[name].grad, ref[name].grad) < 1e-4, name
    backward = [k for k in launched if k.startswith("_bwd_scan")]
    assert backward == ["_bwd_scan_gluon", "_bwd_scan", "_bwd_scan"], backward


def _forward_case(case, dtype):
    """Inputs (3 x 256 x 333, 32 states), the terms dropped, the float64 reference, direction flags."""
    rev, bidir = case == "reverse", case in ("bidirectional", "lengths")
    inputs = make_inputs(3, 256, 333, 32, dtype, groups=2 if bidir else None)
    drop = ("D", "z", "delta_bias") if case == "no-optional-terms" else ()
    if bidir:
        reference = lambda **kw: selective_scan_bidirectional_reference(**kw, delta_softplus=True)  # noqa: E731
    else:
        reference = reference_fn(rev)
    return inputs, drop, reference, rev, bidir


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["forward", "reverse", "no-optional-terms", "bidirectional", "lengths"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_forward_matches_the_reference(case, dtype):
    """The Gluon forward scan (with either backward): outputs and gradients against float64."""
    cfg = ScanConfig(fwd_kernel="gluon")
    inputs, drop, reference, rev, bidir = _forward_case(case, dtype)
    if case == "lengths":  # against the Triton forward: the reference has no lengths
        lengths = torch.tensor([333, 200, 41], device="cuda")
        outs = [_scan(ScanConfig(fwd_kernel=k), bidirectional=True, lengths=lengths)(**inputs)
                for k in ("gluon", "triton")]
        assert rel(outs[0], outs[1]) < TOL[dtype][0]
        assert not outs[0][1, :, 200:].any() and not outs[0][2, :, 41:].any()
        return
    check(inputs, _scan(cfg, rev, bidir), reference, dtype, drop=drop)


@gpu_gluon
@pytest.mark.gpu
def test_gpu_forward_matches_the_triton_forward_on_a_long_sequence():
    inputs = make_inputs(2, 1024, 30_000, 32, torch.bfloat16, groups=2)
    outs = [_scan(ScanConfig(fwd_kernel=k), bidirectional=True)(**inputs) for k in ("gluon", "triton")]
    assert torch.isfinite(outs[0]).all()
    assert rel(outs[0], outs[1]) < TOL[torch.bfloat16][0]


@needs_gluon
@pytest.mark.parametrize("changes", [dict(SAVE_H=True), dict(SAVE_H=False),
                                     dict(SAVE_H=True, BIDIR=False, REVERSE=True, HAS_LEN=True, HAS_Z=False,
                                          HAS_D=False, HAS_BIAS=False, SOFTPLUS=False)],
                         ids=["block", "lean", "no-optional-terms"])
def test_serial_forward_compiles_for_sm90_without_shuffles(changes):
    """The serial forward (``fwd_chunks="serial"``) is the forward's chunk body in a loop over chunks: still
    no shuffles, the exponentials there, and at most a couple of spilled registers (Triton 3.9: none;
    Triton 3.6's ptxas on the H200: 2 stores in the variant that saves H)."""
    counts = _compile_sm90(KERNEL="_fwd_serial_gluon", DG=16, **changes)
    assert counts["shfl"] == 0 and counts["stl"] <= 2, counts
    assert counts["mufu"] >= 32, counts


@pytest.mark.parametrize("kernel", ["gluon", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["forward", "reverse", "no-optional-terms", "bidirectional"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_serial_forward_matches_the_reference(case, dtype, kernel):
    """fwd_chunks="serial" compiled (the Gluon kernel, and the Triton one): outputs and every gradient
    (the backward reads the states the serial forward saved) against float64."""
    cfg = ScanConfig(fwd_kernel=kernel, fwd_chunks="serial", serial_fill=64)
    inputs, drop, reference, rev, bidir = _forward_case(case, dtype)
    check(inputs, _scan(cfg, rev, bidir), reference, dtype, drop=drop)


@pytest.mark.parametrize("kernel", ["gluon", "triton"])
@pytest.mark.parametrize("save", [True, False], ids=["saved", "lean"])
@gpu_gluon
@pytest.mark.gpu
def test_gpu_serial_forward_equals_the_chunk_parallel_one_with_lengths_and_long_rows(kernel, save):
    """Bidirectional rows of three lengths (the reversed half starts at each row's end) and a 30,000-step
    row at the block's width: the serial output, and its saved H row by row, equal the chunk-parallel
    forward's (the same sums in another order)."""
    from helix.ops.selective_scan import triton as scan

    for Bsz, D, L, lengths in ((3, 256, 333, (333, 200, 41)), (2, 1024, 30_000, None)):
        inputs = make_inputs(Bsz, D, L, 32, torch.bfloat16, groups=2)
        lens = None if lengths is None else torch.tensor(lengths, device="cuda")
        par = ScanConfig(fwd_kernel=kernel)
        ser = ScanConfig(fwd_kernel=kernel, fwd_chunks="serial")
        i = inputs
        Bm, Cm = scan.aligned_rows(i["B"], par), scan.aligned_rows(i["C"], par)
        args = (i["u"], i["delta"], i["A"], Bm, Cm, i["D"], i["z"], i["delta_bias"], True, True, False)
        y_par, H_par = scan.scan_forward(*args, par, lens)
        y_ser, H_ser = scan.scan_forward(*args, ser, lens, save_states=save)
        assert torch.isfinite(y_ser).all()
        assert rel(y_ser, y_par) < TOL[torch.bfloat16][0]
        if save:  # fp32 states either way; a wrong row or carry would be off by O(1)
            assert rel(H_ser, H_par) < 1e-4
        if lengths is not None:
            assert not y_ser[1, :, 200:].any() and not y_ser[2, :, 41:].any()
