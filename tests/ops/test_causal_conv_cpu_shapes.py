"""numba CPU conv + SiLU: the layouts and shapes the models pass, against the reference.

The token-major kernels split time into chunks of ``cpu.CHUNK`` steps (one parallel task each, with
a recomputed halo of K-1 steps in backward); the mixer's x is read in place from the rows of its
(B, L, 2C) in_proj output. Outputs and every gradient are compared with the fp64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helix.ops.causal_conv.reference import causal_conv1d_silu_reference

pytest.importorskip("numba")
from helix.ops.causal_conv import causal_conv1d_silu, cpu  # noqa: E402

TOL = 2e-6


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-6)).item()


def mixer_x(Bsz, C, L, seed=0, dtype=torch.float32):
    """x as the mixer passes it: the first C channels of a (B, L, 2C) buffer, transposed to (B, C, L)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(Bsz, L, 2 * C, generator=g).to(dtype)[..., :C].transpose(1, 2)


def params(C, K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, K, generator=g) * 0.5, torch.randn(C, generator=g) * 0.2


def compare(x, w, b, bidirectional, dout, tol=TOL, **kw):
    """Kernel (through ``causal_conv1d_silu(backend="cpu")``) vs the fp64 reference: output, dx, dw, db."""
    ours = [t.detach().requires_grad_() for t in (x, w, b)]
    ref = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = causal_conv1d_silu(*ours, bidirectional=bidirectional, backend="cpu", **kw)
    y_ref = causal_conv1d_silu_reference(*ref, bidirectional=bidirectional, **kw)
    y.backward(dout.to(y.dtype))
    y_ref.backward(dout.double())
    assert rel(y, y_ref) < tol, f"output: {rel(y, y_ref):.2e}"
    for name, a, r in zip(("x", "weight", "bias"), ours, ref):
        assert a.grad.dtype == a.dtype, name
        assert rel(a.grad, r.grad) < tol, f"d{name}: {rel(a.grad, r.grad):.2e}"
    return y


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("L", [63, 64, 65, 129, 200])
@pytest.mark.parametrize("K", [1, 4, 5])
def test_token_major_chunk_boundaries(L, K, bidirectional):
    """Lengths on, just past and between chunk boundaries, with every halo width; 7 channels, so the
    anti-causal half [3, 7) is uneven."""
    x = mixer_x(2, 7, L)
    w, b = params(7, K)
    dout = torch.randn(2, L, 7, generator=torch.Generator().manual_seed(2)).transpose(1, 2)
    y = compare(x, w, b, bidirectional, dout)
    assert y.transpose(1, 2).is_contiguous()  # the result keeps x's token-major layout


@pytest.mark.parametrize("layout", ["expanded", "token_major", "channel_major", "wide"])
def test_backward_reads_any_gradient_layout(layout):
    """dout as autograd may hand it over: a broadcast (from .sum()), either dense layout, or a slice
    of wider rows (read in place, like x)."""
    Bsz, C, L = 3, 6, 70
    x = mixer_x(Bsz, C, L)
    w, b = params(C, 4)
    g = torch.Generator().manual_seed(3)
    dout = {"expanded": torch.ones(1, 1, 1).expand(Bsz, C, L),
            "token_major": torch.randn(Bsz, L, C, generator=g).transpose(1, 2),
            "channel_major": torch.randn(Bsz, C, L, generator=g),
            "wide": torch.randn(Bsz, L, 3 * C, generator=g)[..., C:2 * C].transpose(1, 2)}[layout]
    compare(x, w, b, True, dout)


def test_mixer_x_is_read_in_place_and_other_rows_are_copied():
    """The x half of the in_proj rows is viewed, not copied; the z half (whose last row would run past
    the buffer's end as a (B, L, 2C) view) and a channel-major x are copied, with the same results."""
    Bsz, C, L = 2, 5, 30
    buf = torch.randn(Bsz, L, 2 * C)
    x_half, z_half = buf[..., :C].transpose(1, 2), buf[..., C:].transpose(1, 2)
    rows = cpu._token_rows(x_half)
    assert rows.shape == (Bsz, L, 2 * C) and np.shares_memory(rows, buf.numpy())
    assert np.array_equal(rows[..., :C], x_half.transpose(1, 2).numpy())
    copied = cpu._token_rows(z_half)
    assert copied.shape == (Bsz, L, C) and not np.shares_memory(copied, buf.numpy())
    assert np.array_equal(copied, z_half.transpose(1, 2).numpy())
    w, b = params(C, 4)
    dout = torch.randn(Bsz, C, L, generator=torch.Generator().manual_seed(4))
    for x in (x_half, z_half, z_half.contiguous()):
        compare(x, w, b, True, dout)


def test_one_clip_spread_over_chunks_without_grad():
    """B=1 (inference on one clip): the chunks are the parallel tasks; no-grad equals the grad path."""
    x = mixer_x(1, 9, 300)
    w, b = params(9, 4)
    with torch.no_grad():
        y0 = causal_conv1d_silu(x, w, b, bidirectional=True, backend="cpu")
        y_ref = causal_conv1d_silu_reference(x.double(), w.double(), b.double(), bidirectional=True)
    assert rel(y0, y_ref) < TOL
    y1 = causal_conv1d_silu(x, w.requires_grad_(), b, bidirectional=True, backend="cpu")
    assert torch.equal(y0, y1.detach())


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
def test_lengths_across_chunks(bidirectional):
    """Per-clip lengths ending inside, at and after a chunk boundary: nothing read across a clip's end
    (the backward half is anti-causal, so it would read the padding first)."""
    Bsz, C, L = 4, 6, 140
    x = mixer_x(Bsz, C, L)
    w, b = params(C, 4)
    lengths = torch.tensor([140, 64, 65, 3])
    dout = torch.randn(Bsz, C, L, generator=torch.Generator().manual_seed(5))
    y = compare(x, w, b, bidirectional, dout, lengths=lengths)
    padded = x.clone()
    padded[1, :, 64:] = 1e3  # what lies past a clip's end changes nothing
    assert torch.equal(causal_conv1d_silu(padded, w, b, bidirectional, backend="cpu", lengths=lengths), y.detach())


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
def test_model_width(bidirectional):
    """The Pure Mamba mixer's width (d_inner 512, K 4), both layouts, a few clips of 100 tokens."""
    w, b = params(512, 4)
    dout = torch.randn(2, 512, 100, generator=torch.Generator().manual_seed(6))
    compare(mixer_x(2, 512, 100), w, b, bidirectional, dout)
    compare(mixer_x(2, 512, 100).contiguous(), w, b, bidirectional, dout)


def test_bfloat16_mixer_input():
    """A bf16 x from the mixer (cast to fp32 by the kernel wrapper) against the reference."""
    x = mixer_x(2, 6, 90, dtype=torch.bfloat16)
    w, b = params(6, 4)
    dout = torch.randn(2, 6, 90, generator=torch.Generator().manual_seed(7))
    compare(x, w, b, True, dout, tol=1e-2)
