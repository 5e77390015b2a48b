"""numba CPU selective scan vs the reference: outputs and every gradient, per dtype, both directions.

Same method as test_selective_scan_triton.py: the kernel on the given dtype against the reference
evaluated in float64 on the same input values, relative L2 errors per output and gradient.
The kernels compile on first use (numba, cached on disk): the first run of this file pays that.
"""

from __future__ import annotations

import pytest
import torch

from helix.ops.selective_scan import (selective_scan, selective_scan_bidirectional,
                                      selective_scan_bidirectional_reference, selective_scan_reference)

pytest.importorskip("numba")
from helix.ops.selective_scan.cpu import CHUNK, selective_scan_cpu  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# relative L2 error, output / gradients: fp32 is rounding only (the kernel's exp is within 2 ulp);
# half types are dominated by rounding the (B, D, L) inputs, outputs and gradients to 8 or 11 bits
TOL = {torch.float32: (2e-6, 5e-6), torch.bfloat16: (1e-2, 2e-2), torch.float16: (2e-3, 4e-3)}


def make_inputs(Bsz, D, L, N, dtype=torch.float32, bidirectional=False, seed=0):
    """Inputs in the ranges a trained Mamba sees: softplus steps ~0.05-1, A from -0.5 to -N."""
    g = torch.Generator().manual_seed(seed)
    shape_bc = (Bsz, 2, N, L) if bidirectional else (Bsz, N, L)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g) * scale + shift

    A = -torch.exp(torch.rand(D, N, generator=g) * torch.log(torch.tensor(2.0 * N)) + torch.log(torch.tensor(0.5)))
    tensors = dict(u=rnd(Bsz, D, L), delta=rnd(Bsz, D, L, scale=0.5, shift=-1.0), A=A, B=rnd(*shape_bc),
                   C=rnd(*shape_bc), D=rnd(D), z=rnd(Bsz, D, L), delta_bias=rnd(D, scale=0.3))
    low = ("u", "delta", "B", "C", "z")  # activations take the dtype; parameters stay fp32
    return {k: (v.to(dtype) if k in low else v) for k, v in tensors.items()}


def rel(a, b):
    """Relative L2 error; the 1e-4 per-element floor keeps an all-zero reference (dA at L=1) finite."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-4 * b.numel() ** 0.5)).item()


def kernel_fn(bidirectional, softplus=True):
    def f(**kw):
        return selective_scan_cpu(**kw, delta_softplus=softplus, bidirectional=bidirectional)
    return f


def reference_fn(bidirectional, softplus=True):
    def f(**kw):
        if bidirectional:
            return selective_scan_bidirectional_reference(**kw, delta_softplus=softplus)
        return selective_scan_reference(**kw, delta_softplus=softplus)
    return f


def check(inputs, bidirectional, dtype=torch.float32, drop=(), softplus=True):
    ins = {k: (None if k in drop else v) for k, v in inputs.items()}
    ours = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in ins.items()}
    ref = {k: (v.double().clone().requires_grad_() if v is not None else None) for k, v in ins.items()}
    y = kernel_fn(bidirectional, softplus)(**ours)
    y_ref = reference_fn(bidirectional, softplus)(**ref)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(grad.to(y.dtype))
    y_ref.backward(grad.double())
    assert y.dtype == inputs["u"].dtype and y.shape == y_ref.shape
    tol_out, tol_grad = TOL[dtype]
    assert torch.isfinite(y).all()
    assert rel(y, y_ref) < tol_out, f"output: {rel(y, y_ref):.2e}"
    for name in NAMES:
        if ours[name] is None:
            continue
        g, g_ref = ours[name].grad, ref[name].grad
        assert g is not None and torch.isfinite(g).all(), name
        assert g.dtype == inputs[name].dtype, name
        assert rel(g, g_ref) < tol_grad, f"d{name}: {rel(g, g_ref):.2e}"


@pytest.mark.parametrize("bidirectional", [False, True], ids=["fwd", "bidir"])
@pytest.mark.parametrize("N", [16, 32])
@pytest.mark.parametrize("L", [1, 7, 63, CHUNK, CHUNK + 1, 500])
def test_matches_reference_fp32(L, N, bidirectional):
    check(make_inputs(2, 4, L, N, bidirectional=bidirectional), bidirectional)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["fwd", "bidir"])
@pytest.mark.parametrize("drop", [("z",), ("D",), ("delta_bias",), ("z", "D", "delta_bias")],
                         ids=["no-z", "no-D", "no-bias", "none"])
def test_optional_terms_absent(drop, bidirectional):
    check(make_inputs(2, 4, 70, 16, bidirectional=bidirectional), bidirectional, drop=drop)


def test_without_softplus():
    """The plain recurrence: delta used as given (kept positive)."""
    inputs = make_inputs(2, 4, 70, 16)
    inputs["delta"] = inputs["delta"].abs()
    check(inputs, False, drop=("delta_bias",), softplus=False)


def test_odd_sizes_and_large_steps():
    """N and D off the vector width, one batch row, steps with delta + bias past softplus's threshold."""
    inputs = make_inputs(1, 6, 131, 5, bidirectional=True)
    inputs["delta"][0, :, ::7] += 25.0
    check(inputs, True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["fwd", "bidir"])
def test_half_precision_inputs(dtype, bidirectional):
    check(make_inputs(2, 4, 130, 16, dtype, bidirectional=bidirectional), bidirectional, dtype)


def test_non_contiguous_views():
    """Strided inputs as the mixer passes them: B, C, u, z transposed views of (B, L, .) tensors."""
    inputs = make_inputs(2, 4, 67, 16)
    for k in ("B", "C", "u", "z"):
        inputs[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    check(inputs, False)


def test_bidirectional_second_half_is_the_time_reversed_scan():
    E, L, N = 4, 75, 16
    inputs = make_inputs(2, 2 * E, L, N, bidirectional=True)
    with torch.no_grad():
        y = selective_scan_cpu(**inputs, delta_softplus=True, bidirectional=True)
        half = {k: (v[:, E:] if k in ("u", "delta", "z") else v[E:] if k in ("A", "D", "delta_bias")
                    else v[:, 1]) for k, v in inputs.items()}
        flipped = {k: (v.flip(-1) if k in ("u", "delta", "z", "B", "C") else v).double() for k, v in half.items()}
        y_rev = selective_scan_reference(**flipped, delta_softplus=True).flip(-1)
    assert rel(y[:, E:], y_rev) < TOL[torch.float32][0]


def test_no_grad_path_matches_and_saves_nothing():
    """Without grad the same kernel runs with no chunk states; with grad the saved states are
    (B, D, ceil(L / CHUNK), N): memory O(B*D*N*L/CHUNK), not O(B*D*N*L)."""
    inputs = make_inputs(2, 4, 200, 16)
    with torch.no_grad():
        y_infer = selective_scan_cpu(**inputs, delta_softplus=True)
    assert y_infer.grad_fn is None
    params = {k: (v.requires_grad_() if k == "u" else v) for k, v in inputs.items()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y_train = selective_scan_cpu(**params, delta_softplus=True)
    assert torch.equal(y_infer, y_train.detach())
    assert (2, 4, -(-200 // CHUNK), 16) in saved
    assert all(len(s) < 4 or s[2] < 200 for s in saved)  # no per-step state tensor


def test_thread_count_follows_torch(one_thread):
    """torch's thread count (``--threads``) sets numba's; results do not depend on it."""
    import numba

    inputs = make_inputs(2, 8, 90, 16, bidirectional=True)
    with torch.no_grad():
        y1 = selective_scan_cpu(**inputs, delta_softplus=True, bidirectional=True)
    assert numba.get_num_threads() == 1
    assert torch.get_num_threads() == 1  # starting numba's OpenMP pool must not reset torch's count
    torch.set_num_threads(2)
    with torch.no_grad():
        y2 = selective_scan_cpu(**inputs, delta_softplus=True, bidirectional=True)
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(y1, y2)  # one row per task: the forward is bitwise independent of threads


def test_shape_errors_name_the_argument():
    inputs = make_inputs(1, 4, 9, 16)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_cpu(**{**inputs, "B": inputs["B"][:, :, :5]})
    with pytest.raises(ValueError, match=r"\(B, 2, N, L\)"):
        selective_scan_cpu(**inputs, bidirectional=True)


# ---------------------------------------------------------------- dispatch


def test_auto_picks_the_kernel_for_cpu_tensors():
    """"auto" on CPU fp32/bf16 runs the numba kernel; float64 (gradcheck, references) stays exact."""
    for bidirectional, fn in ((False, selective_scan), (True, selective_scan_bidirectional)):
        inputs = make_inputs(1, 4, 9, 16, bidirectional=bidirectional)
        u = inputs.pop("u").requires_grad_()
        y = fn(u, **inputs, delta_softplus=True, backend="auto")
        assert type(y.grad_fn).__name__ == "_ScanCpuFnBackward"
        y64 = fn(u.double(), **{k: v.double() for k, v in inputs.items()}, delta_softplus=True)
        assert type(y64.grad_fn).__name__ != "_ScanCpuFnBackward"
        torch.testing.assert_close(fn(u, **inputs, delta_softplus=True, backend="cpu"), y)


def test_model_config_accepts_cpu_backend():
    from helix.models import create_model

    model = create_model("pure_mamba_mel", 3, scan_backend="cpu")
    assert model(torch.randn(1, 16000)).shape == (1, 3)


_WITHOUT_NUMBA = """
import sys
sys.modules["numba"] = None  # as if numba were not installed: importing it raises ImportError
import torch
from helix.ops.selective_scan import selective_scan, selective_scan_reference
g = torch.Generator().manual_seed(0)
u, delta, z = (torch.randn(1, 4, 9, generator=g) for _ in range(3))
A, B, C = -torch.rand(4, 16, generator=g), torch.randn(1, 16, 9, generator=g), torch.randn(1, 16, 9, generator=g)
assert torch.equal(selective_scan(u, delta, A, B, C, z=z, delta_softplus=True),
                   selective_scan_reference(u, delta, A, B, C, z=z, delta_softplus=True))
try:
    selective_scan(u, delta, A, B, C, backend="cpu")
except RuntimeError as err:
    assert "numba" in str(err), err
else:
    raise AssertionError("backend='cpu' without numba did not raise")
print("ok")
"""


def test_without_numba_auto_falls_back_to_the_reference():
    """A real interpreter in which numba cannot be imported: helix imports, "auto" runs the reference."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _WITHOUT_NUMBA], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


_THREADS_KEPT = """
import torch
torch.set_num_threads(1)
import numba  # noqa: F401  (numba imported before the kernels: the order that reset torch's count)
from helix.ops.selective_scan.cpu import selective_scan_cpu
assert torch.get_num_threads() == 1, torch.get_num_threads()
from helix.ops.causal_conv.cpu import causal_conv1d_silu_cpu
u = torch.randn(1, 2, 5, requires_grad=True)
B = torch.randn(1, 4, 5)
selective_scan_cpu(u, u, -torch.rand(2, 4), B, B, delta_softplus=True).sum().backward()
causal_conv1d_silu_cpu(u, torch.randn(2, 4), torch.randn(2)).sum().backward()
assert torch.get_num_threads() == 1, torch.get_num_threads()
print("ok")
"""


def test_first_kernel_call_keeps_torchs_thread_count():
    """In a fresh process (numba's OpenMP pool starts on the first call) --threads 1 stays 1."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _THREADS_KEPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
