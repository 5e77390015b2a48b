"""``lean_blocks`` (layers/lean.py): True, False, or "auto" (lean for large batches only)."""

from __future__ import annotations

import pytest
import torch

from helix.layers import lean as lean_rule
from helix.layers.attention import AttentionBlock
from helix.models.config import ModelConfig


def test_auto_is_lean_from_the_token_threshold_up():
    n = lean_rule.LEAN_AUTO_TOKENS
    assert not lean_rule.is_lean("auto", torch.empty(1, n - 1, 0))
    assert lean_rule.is_lean("auto", torch.empty(1, n, 0))
    assert lean_rule.is_lean("auto", torch.empty(8, 30000, 0))  # 300 s raw at B=8: the long-audio regime
    assert lean_rule.is_lean("auto", torch.empty(32, 3000, 0))  # the 30 s LibriSpeech preset stays lean
    assert not lean_rule.is_lean("auto", torch.empty(32, 500, 0))  # 5 s raw at B=32
    assert lean_rule.is_lean(True, torch.empty(1, 1, 0)) and not lean_rule.is_lean(False, torch.empty(8, 30000, 0))


def test_auto_without_gradients_takes_the_fused_path():
    """Inference keeps nothing either way; "auto" then runs the fused op (the one inference always ran)."""
    with torch.no_grad():
        assert lean_rule.is_lean("auto", torch.empty(1, 10, 0))
        assert not lean_rule.is_lean(False, torch.empty(1, 10, 0))
    assert not lean_rule.is_lean("auto", torch.empty(1, 10, 0))


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, "Auto"])
def test_other_settings_are_refused_with_their_name(bad):
    with pytest.raises(ValueError, match="lean_blocks must be true, false or 'auto'"):
        ModelConfig(num_classes=3, lean_blocks=bad)
    with pytest.raises(ValueError, match="lean_blocks"):
        AttentionBlock(16, 40, n_heads=2, lean=bad)


def test_the_default_is_auto():
    assert ModelConfig(num_classes=3).lean_blocks == "auto"


def _ffn_activation_kept(block, B):
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        block(torch.randn(B, 9, 16, requires_grad=True))
    return (B, 9, 40) in shapes


def test_auto_attention_block_keeps_everything_for_small_batches_only(monkeypatch):
    monkeypatch.setattr(lean_rule, "LEAN_AUTO_TOKENS", 20)
    block = AttentionBlock(16, 40, n_heads=2, lean="auto")
    block.lean_devices = ("cpu", "cuda")  # lean applies to CUDA inputs by default; the same code here
    assert _ffn_activation_kept(block, 2)  # 18 tokens: below the threshold
    assert not _ffn_activation_kept(block, 3)  # 27 tokens: lean
