"""The kernels as torch.library custom ops: compile with fullgraph=True, export, fake vs real.

CPU: the numba ops pass ``torch.library.opcheck`` (schema, autograd registration, fake tensors vs
the real outputs, AOT dispatch); small models compile with ``fullgraph=True`` (backend aot_eager)
and match eager in outputs and every gradient, and export with ``torch.export``. The Triton ops run
through Triton's interpreter on CPU (tests/ops/conftest.py), on tiny sizes because it is slow;
the ``gpu`` tests add opcheck for them and a model compiled by Inductor.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helix.models import create_model
from helix.ops.backend import cpu_kernels_available, through_custom_op, triton_available
from helix.ops.bimamba import bimamba_inner
from helix.ops.causal_conv import causal_conv1d_silu
from helix.ops.custom_ops import bcl_strides, conform
from helix.ops.selective_scan import selective_scan, selective_scan_bidirectional

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_numba = pytest.mark.skipif(not cpu_kernels_available(), reason="needs numba (the CPU kernels)")
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs Triton")


def _compiled(fn):
    torch._dynamo.reset()  # a fresh cache: every test traces its own graph
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def _leaves(tensors):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) if t is not None else None for t in tensors]


def _run(fn, tensors, rest=(), **kw):
    """fn(*tensors, *rest, **kw) and the gradients of a fixed random projection of its output."""
    leaves = _leaves(tensors)
    out = fn(*leaves, *rest, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None and t.requires_grad], g)
    return out.detach(), grads


def _assert_close(eager, compiled, tol):
    (y0, g0), (y1, g1) = eager, compiled
    torch.testing.assert_close(y1, y0, rtol=tol, atol=tol)
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def _scan_inputs(Bsz, D, L, N, bidirectional, device="cpu", token_major=False):
    g = torch.Generator().manual_seed(0)
    bc = (Bsz, 2, N, L) if bidirectional else (Bsz, N, L)
    u = torch.randn(Bsz, L, D, generator=g).transpose(1, 2) if token_major else torch.randn(Bsz, D, L, generator=g)
    t = [u, torch.randn(Bsz, D, L, generator=g) * 0.5 - 1, -torch.rand(D, N, generator=g) * N - 0.5,
         torch.randn(*bc, generator=g), torch.randn(*bc, generator=g), torch.randn(D, generator=g),
         torch.randn(Bsz, D, L, generator=g), torch.randn(D, generator=g) * 0.3]
    return [x.to(device) for x in t]


def test_custom_ops_only_while_tracing():
    """Eagerly the kernels' autograd functions run directly (no op dispatch cost); traced, the ops."""
    assert not through_custom_op()
    seen = []

    def probe(x):
        seen.append(through_custom_op())
        return x + 1

    _compiled(probe)(torch.zeros(2))
    assert seen == [True]


def test_conform_copies_only_other_layouts():
    """The real implementations hand back exactly what the fakes declare (custom_ops.conform)."""
    token_major = torch.randn(2, 5, 3).transpose(1, 2)  # (B, C, L) laid out as (B, L, C)
    assert conform(token_major, (2, 3, 5), bcl_strides(token_major, True)) is token_major
    fixed = conform(token_major, (2, 3, 5), dtype=torch.float64)
    assert fixed.is_contiguous() and fixed.dtype == torch.float64 and torch.equal(fixed.float(), token_major)
    with pytest.raises(RuntimeError, match="declared"):
        conform(token_major, (2, 5, 3))


# ---- the numba ops

@needs_numba
@pytest.mark.parametrize("bidirectional,token_major", [(False, False), (True, True)], ids=["one-way", "both-ways"])
def test_cpu_scan_ops_pass_opcheck(bidirectional, token_major):
    import helix.ops.selective_scan.library  # noqa: F401  (registers the ops)

    t = _leaves(_scan_inputs(2, 8, 70, 4, bidirectional, token_major=token_major))  # 70: two chunks of 64
    torch.library.opcheck(torch.ops.helix.selective_scan_cpu.default, (*t, True, bidirectional, True))
    out, starts = torch.ops.helix.selective_scan_cpu(*t, True, bidirectional, True)
    dout = torch.randn(out.shape)
    torch.library.opcheck(torch.ops.helix.selective_scan_cpu_backward.default,
                          (dout, *[x.detach() for x in t], starts.detach(), True, bidirectional))


@needs_numba
def test_cpu_conv_ops_pass_opcheck():
    import helix.ops.causal_conv.library  # noqa: F401

    x, w, b = _leaves([torch.randn(2, 30, 6).transpose(1, 2), torch.randn(6, 4), torch.randn(6)])
    torch.library.opcheck(torch.ops.helix.causal_conv_cpu.default, (x, w, b, True))
    torch.library.opcheck(torch.ops.helix.causal_conv_cpu_backward.default,
                          (torch.randn(2, 6, 30), x.detach(), w.detach(), b.detach(), True))


@needs_numba
def test_cpu_dispatch_with_lengths_compiles_fullgraph():
    """The dispatchers on backend='cpu' (masked problem around the ops) trace without a break."""
    lengths = torch.tensor([70, 41])

    def f(u, delta, A, B, C, D, z, bias, w, cb):
        x = causal_conv1d_silu(u, w, cb, bidirectional=True, backend="cpu", lengths=lengths)
        return selective_scan_bidirectional(x, delta, A, B, C, D, z, bias, True, backend="cpu", lengths=lengths)

    t = _scan_inputs(2, 8, 70, 4, True) + [torch.randn(8, 4), torch.randn(8)]
    _assert_close(_run(f, t), _run(_compiled(f), t), 1e-6)


def _tiny(name, **kw):
    torch.manual_seed(0)
    return create_model(name, 3, d_model=16, d_state=4, pattern="MA", **kw)


@pytest.mark.parametrize("name,T", [("helix_raw", 1600), ("helix_mel", 4000)])
def test_model_compiles_fullgraph_and_matches_eager(name, T):
    """Default backend on CPU (the numba ops when numba imports): no graph break, same outputs and
    parameter gradients as eager."""
    model = _tiny(name)
    wave = torch.randn(2, T, generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())

    def step(m):
        y = m(wave)
        return y.detach(), torch.autograd.grad(y.square().sum(), params)

    _assert_close(step(model), step(_compiled(model)), 1e-5)


def test_model_exports_and_the_program_runs():
    model = _tiny("helix_raw").eval()
    wave = torch.randn(2, 1600, generator=torch.Generator().manual_seed(3))
    program = torch.export.export(model, (wave,))
    names = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    if cpu_kernels_available():  # the kernels are single nodes of the exported graph
        assert {"helix.selective_scan_cpu.default", "helix.causal_conv_cpu.default"} <= names
    with torch.no_grad():
        torch.testing.assert_close(program.module()(wave), model(wave), rtol=1e-5, atol=1e-5)


# ---- the Triton ops (interpreter on CPU: tiny sizes)

def _bimamba_inputs(Bsz, L, Dm, E, N, R, device):
    g = torch.Generator().manual_seed(0)

    def w(*shape):
        return (0.3 * torch.randn(*shape, generator=g)).to(device)

    A = (-torch.rand(2 * E, N, generator=g) - 0.5).to(device)
    return [torch.randn(Bsz, L, Dm, generator=g).to(device), w(2 * E, Dm), w(2 * E, Dm), w(2 * E, 4), w(2 * E),
            w(2 * R + 4 * N, 2 * E), w(2 * E, 2 * R), A, w(2 * E), w(2 * E), w(Dm, 2 * E)]


@needs_triton
@pytest.mark.parametrize("op", ["scan", "conv", "bimamba"])
def test_triton_ops_compile_fullgraph_and_match_eager(op):
    """The Triton paths of the dispatchers (with lengths) traced through their custom ops: same
    outputs and gradients as the kernels' autograd functions called eagerly."""
    lengths = torch.tensor([40, 23], device=DEVICE)  # 40 steps: two scan chunks of 32
    if op == "scan":
        def f(*t):
            return selective_scan_bidirectional(*t, True, backend="triton", lengths=lengths)
        t = _scan_inputs(2, 4, 40, 4, True, DEVICE)
    elif op == "conv":
        def f(x, w, b):
            return causal_conv1d_silu(x, w, b, bidirectional=True, backend="triton", lengths=lengths)
        t = [torch.randn(2, 6, 40).to(DEVICE), torch.randn(6, 4).to(DEVICE), torch.randn(6).to(DEVICE)]
    else:
        def f(*t):
            return bimamba_inner(*t, R=1, backend="triton", lengths=lengths)
        t = _bimamba_inputs(2, 40, 6, 2, 4, 1, DEVICE)
    _assert_close(_run(f, t), _run(_compiled(f), t), 1e-5)


@needs_triton
def test_triton_one_way_scan_compiles_with_half_inputs():
    """One direction, B/C (B, N, L) and bf16 activations: the fp32 casts and B/C reshapes around the
    op are traced, so gradients come back in each input's dtype."""
    t = _scan_inputs(2, 4, 20, 4, False, DEVICE)
    t = [x.to(torch.bfloat16) if i in (0, 1, 3, 4, 6) else x for i, x in enumerate(t)]

    def f(*t):
        return selective_scan(*t, True, backend="triton")

    eager, compiled = _run(f, t), _run(_compiled(f), t)
    assert [g.dtype for g in compiled[1]] == [x.dtype for x in t]
    _assert_close(eager, compiled, 1e-2)


@gpu
@pytest.mark.gpu
def test_gpu_triton_ops_pass_opcheck():
    import helix.ops.bimamba.library  # noqa: F401
    import helix.ops.causal_conv.library  # noqa: F401
    import helix.ops.selective_scan.library  # noqa: F401

    # dA, dB, dC, dD and the bias gradient are summed with fp32 atomics, whose order varies between
    # runs: opcheck's bit-tight eager-vs-AOT gradient comparison would fail on rounding alone, so it
    # checks schema, autograd registration and fake tensors here; compiled gradients are compared
    # with a tolerance in test_gpu_model_compiles_fullgraph_and_exports
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    lengths = torch.tensor([300, 177], device="cuda")
    scan = _leaves(_scan_inputs(2, 64, 300, 16, True, "cuda"))
    torch.library.opcheck(torch.ops.helix.selective_scan_triton.default, (*scan, True, True, lengths),
                          test_utils=checks)
    out, H = torch.ops.helix.selective_scan_triton(*scan, True, True, lengths)
    torch.library.opcheck(torch.ops.helix.selective_scan_triton_backward.default,
                          (torch.randn_like(out), *[x.detach() for x in scan], H.detach(), True, True, lengths),
                          test_utils=checks)
    x, w, b = _leaves([torch.randn(2, 64, 300, device="cuda"), torch.randn(64, 4, device="cuda"),
                       torch.randn(64, device="cuda")])
    torch.library.opcheck(torch.ops.helix.causal_conv_triton.default, (x, w, b, True, lengths), test_utils=checks)
    inner = _leaves(_bimamba_inputs(2, 300, 32, 64, 16, 2, "cuda"))
    torch.library.opcheck(torch.ops.helix.bimamba_inner_triton.default, (*inner, 2, lengths), test_utils=checks)


# lean blocks run as one fused op; below the "auto" threshold (layers/lean.py) the blocks keep
# everything and autograd composes the scan and conv ops
FUSED_OPS = {True: {"helix.bimamba_inner_triton.default"},
             "auto": {"helix.causal_conv_triton.default", "helix.selective_scan_triton.default"}}


def _compiles_and_exports(model, wave, backend, lean):
    params = list(model.parameters())

    def step(m):
        y = m(wave)
        return y.detach(), torch.autograd.grad(y.square().sum(), params)

    torch._dynamo.reset()
    _assert_close(step(model), step(torch.compile(model, fullgraph=True, backend=backend)), 1e-4)
    program = torch.export.export(model.eval(), (wave,))
    assert {str(n.target) for n in program.graph.nodes if "helix" in str(n.target)} == FUSED_OPS[lean]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(wave), model(wave), rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("lean", [True, "auto"], ids=["lean", "auto-small-batch"])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_gpu_model_compiles_fullgraph_and_exports(backend, lean):
    model = _tiny("helix_raw", lean_blocks=lean).cuda()
    wave = torch.randn(4, 16000, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    _compiles_and_exports(model, wave, backend, lean)


@pytest.mark.parametrize("lean", [True, "auto"], ids=["lean", "auto-small-batch"])
def test_triton_model_compiles_fullgraph_and_exports_on_cpu(lean):
    """The GPU test above through Triton's interpreter (tests/ops/conftest.py), so CI covers it: the
    Triton ops (fused when lean, composed otherwise) trace without a graph break and export."""
    if torch.cuda.is_available():
        pytest.skip("the GPU test covers this compiled")
    model = _tiny("helix_raw", scan_backend="triton", lean_blocks=lean)
    wave = torch.randn(2, 1600, generator=torch.Generator().manual_seed(2))
    _compiles_and_exports(model, wave, "aot_eager", lean)


def test_a_fresh_process_exports_a_model_whose_first_call_is_the_export(tmp_path):
    """The numba kernels' first import must not happen inside torch.export's trace (it swaps the math
    builtins numba registers): building the model loads them. In a fresh process, as a user runs it."""
    script = tmp_path / "export_first.py"
    script.write_text(
        "import torch\n"
        "from helix.models import create_model\n"
        "model = create_model('pure_mamba_raw', 3, pattern='M', d_model=16).eval()\n"
        "program = torch.export.export(model, (torch.randn(1, 1600),))\n"
        "print('exported', len(program.graph.nodes))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exported" in done.stdout
