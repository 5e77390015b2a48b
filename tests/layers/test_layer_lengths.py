"""Layers on padded batches: each row equals the row alone, padding never reaches a valid token."""

import pytest
import torch

from helix.layers.attention import AttentionBlock
from helix.layers.bimamba import BiMambaBlock
from helix.ops.lengths import reverse_within


def test_reverse_within_reverses_each_clip_and_keeps_padding_in_place():
    x = torch.arange(10.0).view(2, 5)
    out = reverse_within(x, torch.tensor([5, 3]), 1)
    assert out.tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_within(out, torch.tensor([5, 3]), 1), x)  # its own inverse


@pytest.mark.parametrize("block", [
    lambda: BiMambaBlock(8, d_state=4, scan_backend="reference"),
    lambda: AttentionBlock(8, 16, n_heads=2),
], ids=["bimamba", "attention"])
def test_rows_equal_rows_alone(block):
    torch.manual_seed(0)
    layer = block().double()
    x = torch.randn(3, 13, 8, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([13, 5, 1])
    y = layer(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[i:i + 1, :n], layer(x[i:i + 1, :n]))
    # gradient of the valid outputs never reaches a padded input token
    sum(y[i, :n].sum() for i, n in enumerate(lengths.tolist())).backward()
    assert torch.all(x.grad[1, 5:] == 0) and torch.all(x.grad[2, 1:] == 0)
    # and without lengths the padding does reach clip 1 (the masks are what make them equal)
    assert not torch.allclose(layer(x)[1, :5], layer(x[1:2, :5])[0])
