"""The Triton conv forward: ``_conv_fwd`` (in-register taps on interior tiles, the taps kernel's code on
the rest) against the reference and bit-for-bit against ``_conv_fwd_taps`` (the same sums in the same
order). Runs compiled on a GPU, through Triton's interpreter on CPU (tests/ops/conftest.py).

The interpreter rounds fp32 to bf16 by truncation, so bf16 outputs are compared with the reference at
1e-2 (relative norm), as in test_fused_block.py. Rows whose L is not a multiple of 8 take the taps code
throughout (``_rows_aligned``); lengths need no alignment.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from helix.ops.causal_conv import triton as kernels  # noqa: E402
from helix.ops.causal_conv.reference import causal_conv1d_silu_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-12)).item()


def forward(monkeypatch, x, w, b, bidirectional, lengths, groups: bool):
    monkeypatch.setattr(kernels, "FWD_GROUPS", groups)
    monkeypatch.setattr(kernels, "INTERPRET_GROUPS", True)  # the library interprets the taps kernel only
    return kernels.conv_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), bidirectional,
                                None if lengths is None else lengths.to(DEVICE)).cpu()


def check(monkeypatch, Bsz, C, L, dtype, bidirectional, lengths, K=4, seed=0, x_width=None):
    """New forward == taps forward exactly, both ~ the float64 reference; zero past each clip's end.
    ``x_width``: x is the first C channels of a (B, x_width, L) tensor (its rows x_width L apart)."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(Bsz, x_width or C, L, generator=g).to(dtype)
    x = xz[:, :C]
    w, b = torch.randn(C, K, generator=g) * 0.5, torch.randn(C, generator=g) * 0.2
    out = forward(monkeypatch, x, w, b, bidirectional, lengths, groups=True)
    old = forward(monkeypatch, x, w, b, bidirectional, lengths, groups=False)
    ref = causal_conv1d_silu_reference(x.double(), w.double(), b.double(), bidirectional, lengths)
    assert out.dtype == dtype and out.shape == (Bsz, C, L)
    assert torch.equal(out, old), f"differs from _conv_fwd_taps at {(out != old).nonzero()[:5].tolist()}"
    assert rel(out, ref) < TOL[dtype], f"{rel(out, ref):.2e}"
    if lengths is not None:
        for i, n in enumerate(lengths.tolist()):
            assert not out[i, :, n:].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("C", [3, 10, 17])
@pytest.mark.parametrize("L", [1, 100, 264, 2051, 2056])
def test_forward_matches_reference_and_taps_kernel(monkeypatch, L, C, bidirectional, dtype):
    """Default tiles; C = 3 and 10 have (4-channel) tiles with both directions (those take the taps
    code; C = 10 also one causal and one anti-causal tile), C = 17 a masked last tile; 1 and 100 steps are
    one tile, 2,051 is not a multiple of 8 (the taps code throughout), 264 two tiles, and 2,056 steps
    eight 256-step tiles and a partial one."""
    check(monkeypatch, 2, C, L, dtype, bidirectional, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("L", [257, 2056])
def test_forward_with_lengths(monkeypatch, L, bidirectional, dtype):
    """Clips ending at 0, at L, at odd steps, one step before and after a tile's end and two after one
    (an anti-causal tile's halo would reach past that clip's end)."""
    ends = {0, L, L - 1, 3, 513, 767, 770, 1021}
    lengths = torch.tensor(sorted(min(max(n, 0), L) for n in ends))
    check(monkeypatch, len(lengths), 8, L, dtype, bidirectional, lengths, seed=1)


@pytest.mark.parametrize("BT", [16, 32])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("K", [1, 3, 4, 5])
def test_forward_small_tiles(monkeypatch, K, bidirectional, BT):
    """Short tiles: most tiles interior (every K; K = 5 takes the taps code), 2 or 4 groups per tile,
    lengths cutting tiles anywhere, x a channel slice of a wider tensor; 10 channels: a causal, a mixed
    and a masked anti-causal channel tile."""
    monkeypatch.setattr(kernels, "_BT", BT)
    check(monkeypatch, 3, 10, 136, torch.float32, bidirectional, torch.tensor([136, 0, 37]), K=K, seed=K,
          x_width=16)
    check(monkeypatch, 1, 10, 72, torch.bfloat16, bidirectional, None, K=K, seed=K)


def test_rows_aligned_rule():
    """The groups need every row 16-byte aligned at a multiple of 8 steps (else ``_conv_fwd`` is the taps
    kernel): L, both strides and both pointers."""
    x = torch.empty(2, 6, 72, dtype=torch.bfloat16)
    assert kernels._rows_aligned(x, x) and kernels._rows_aligned(x[..., 8:], x)  # 64 steps, rows 72 apart
    assert not kernels._rows_aligned(x[..., 1:], x)  # 71 steps
    assert not kernels._rows_aligned(x[..., 4:68], x)  # 64 steps from an 8-byte offset
    assert not kernels._rows_aligned(torch.empty(2, 6, 65)[..., 1:], x)  # rows 65 apart
    assert not kernels._rows_aligned(x, torch.empty(2 * 6 * 72 + 1, dtype=torch.bfloat16)[1:].view(2, 6, 72))
