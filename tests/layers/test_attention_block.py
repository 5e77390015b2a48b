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


def test_feed_forward_pads_odd_widths_to_aligned_products_without_changing_a_number():
    """With an odd hidden width (HELIX's is 1543) the products run at a multiple of 8 on the padding
    devices; the output and every gradient are the plain Sequential's, and the state dict is unchanged."""
    from helix.layers.attention import FeedForward

    torch.manual_seed(0)
    block = AttentionBlock(16, 43, n_heads=2)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 43), torch.nn.GELU(), torch.nn.Linear(43, 16))
    ref.load_state_dict(block.ffn.state_dict())
    assert isinstance(block.ffn, FeedForward) and block.ffn.state_dict().keys() == ref.state_dict().keys()
    block.ffn.pad_devices = ("cpu",)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    block.double(), ref.double()
    xs = [x.clone().requires_grad_() for _ in range(2)]
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        y = block.ffn(xs[0])
    assert (2, 9, 48) in shapes and (2, 9, 43) not in shapes  # the padded products ran
    y_ref = ref(xs[1])
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(block.ffn.named_parameters(), ref.parameters()):
        assert p.grad.shape == p.shape, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_qkv_gradient_is_stacked_into_the_projection_layout_in_one_copy():
    """q, k, v are unbound from the (B, L, 3, H, Dh) projection before they are transposed to (B, H, L, Dh):
    the backward's one stack writes the projection's gradient layout (unbinding a permuted view cost a
    second copy of the whole (B, L, 3D) gradient, 0.56 ms at 300 s, B=8 on the H200), and the values are
    those of attention over the same heads."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from helix.layers.attention import MultiHeadAttention

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4)
    h = torch.randn(2, 7, 32, requires_grad=True)
    y = mha(h)
    qkv = mha.qkv(h).view(2, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
    want = torch.nn.functional.scaled_dot_product_attention(*qkv.unbind(0))
    torch.testing.assert_close(y, mha.out(want.transpose(1, 2).reshape(2, 7, 32)))
    with Record() as rec:
        y.sum().backward()
    copies = [op for op in rec.ops if any(k in op for k in ("stack", "cat", "clone", "copy"))]
    assert copies == ["aten.stack.default"], copies
