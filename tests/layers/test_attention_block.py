"""The attention block (layers/attention.py): the lean (selectively checkpointed) block.

Named test_attention_block.py: tests/ops/test_attention.py holds the attention op's tests, and
pytest needs distinct basenames here.
"""

from __future__ import annotations

import pytest
import torch

from helix.layers.attention import AttentionBlock


@pytest.mark.parametrize("lengths", [None, torch.tensor([9, 5])], ids=["full", "lengths"])
def test_lean_attention_block_recomputes_the_ffn_and_matches(lengths):
    """lean=True keeps neither the FFN's (B, L, F) input nor its output nor q, k, v, and changes no number."""
    torch.manual_seed(0)
    plain = AttentionBlock(16, 40, n_heads=2)
    lean = AttentionBlock(16, 40, n_heads=2, lean=True)
    lean.lean_devices = ("cpu", "cuda")  # lean applies to CUDA inputs by default; the same code here
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 16)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    shapes = {}
    outs = []
    for name, block, xi in (("plain", plain, xs[0]), ("lean", lean, xs[1])):
        seen = shapes.setdefault(name, [])
        with torch.autograd.graph.saved_tensors_hooks(lambda t, seen=seen: seen.append(tuple(t.shape)) or t,
                                                      lambda t: t):
            y = block(xi, lengths)
        y.pow(2).sum().backward()
        outs.append(y)
    assert (2, 9, 40) in shapes["plain"]
    assert (2, 9, 40) not in shapes["lean"]
    qkv = {s for s in shapes["plain"] if len(s) == 4}  # (B, H, L, Dh) views SDPA keeps
    assert qkv and not qkv & set(shapes["lean"]), shapes
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    for p, q in zip(plain.parameters(), lean.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_lean_attention_block_is_plain_on_cpu_by_default():
    block = AttentionBlock(16, 40, n_heads=2, lean=True)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        block(torch.randn(2, 9, 16, requires_grad=True))
    assert (2, 9, 40) in shapes
