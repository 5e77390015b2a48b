"""The fused BiMamba path's stacked weights (``layers/bimamba.py``): composed by one gather and
un-composed by one gather through the inverse map (a few kernels per block instead of ~100), bit for bit what
composing with ``cat``, slices and block-diagonals under autograd gives, values and gradients."""

from __future__ import annotations

import pytest
import torch

from helix.layers import bimamba as bm


def _block(d_model=24, d_state=4):
    torch.manual_seed(0)
    block = bm.BiMambaBlock(d_model, d_state=d_state)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()  # no structure left that could hide a misplaced element
    return block


def _as_written(block, dtype):
    f = block.fwd.ssm
    w = bm._stack_directions(bm._direction_params(block), f.d_inner, f.d_state, f.dt_rank)
    w = {k: (v.to(dtype) if k in bm.MATRICES else v.float()) for k, v in w.items()}
    w["A"] = -torch.exp(w["A"])
    return w


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d_model, d_state", [(24, 4), (16, 8)])
def test_gathered_weights_and_their_gradients_equal_the_autograd_composition(dtype, d_model, d_state):
    block = _block(d_model, d_state)
    params = bm._direction_params(block)
    ref = _as_written(block, dtype)
    new = dict(zip(bm.MATRICES + bm.VECTORS, bm._ComposeWeights.apply(
        block.compose_index, block.compose_source, block.compose_shapes, block.compose_matrices, dtype,
        *params)))
    assert set(new) == set(ref)
    for k in ref:
        assert new[k].dtype == ref[k].dtype and new[k].shape == ref[k].shape, k
        torch.testing.assert_close(new[k], ref[k], rtol=0, atol=0, msg=k)
    g = torch.Generator().manual_seed(1)
    upstream = {k: torch.randn(v.shape, generator=g) for k, v in ref.items()}
    grads_ref = torch.autograd.grad(sum((ref[k].float() * upstream[k]).sum() for k in ref), params)
    grads_new = torch.autograd.grad(sum((new[k].float() * upstream[k]).sum() for k in new), params)
    for p, a, b in zip(params, grads_ref, grads_new):
        assert b.shape == p.shape
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_the_layout_is_not_saved_and_a_cast_model_composes_as_written():
    block = _block()
    assert not {"compose_index", "compose_source"} & set(block.state_dict())  # checkpoints are unchanged
    fresh = bm.BiMambaBlock(24, d_state=4)
    fresh.load_state_dict(block.state_dict())  # strict: no missing or unexpected keys
    assert torch.equal(fresh.compose_index, block.compose_index)
    assert torch.equal(fresh.compose_source, block.compose_source)
    wide = _block().to(torch.float64)  # parameters not fp32: the autograd composition
    w = bm._composed_weights(wide, torch.float64)
    ref = _as_written(wide, torch.float64)
    for k in ref:
        torch.testing.assert_close(w[k], ref[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("d_model, d_state", [(24, 4), (16, 8)])
def test_the_inverse_map_sends_every_parameter_element_to_its_one_composed_position(d_model, d_state):
    """Backward gathers through ``compose_source`` (no atomics, deterministic): it must invert the
    forward's gather on every parameter element, and skip only the block-diagonals' zeros."""
    block = _block(d_model, d_state)
    n_params = sum(p.numel() for p in bm._direction_params(block))
    index, source = block.compose_index, block.compose_source
    assert source.shape == (n_params,)
    assert index.dtype == source.dtype == torch.int32  # half the device memory of int64 maps
    assert torch.equal(index[source].long(), torch.arange(1, n_params + 1))
    zeros = torch.ones(index.numel(), dtype=torch.bool)
    zeros[source] = False
    assert torch.all(index[zeros] == 0) and int(zeros.sum()) == index.numel() - n_params
