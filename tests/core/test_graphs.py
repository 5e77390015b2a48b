"""When steps are captured in CUDA graphs (CPU), and that replayed steps equal eager ones (GPU)."""

from __future__ import annotations

import pytest
import torch

from helix.core.graphs import CapturedStep, graph_key, resolve_cuda_graphs

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.mark.parametrize("setting", ["auto", "on"])
def test_captured_on_cuda_with_repeating_shapes(setting):
    decision = resolve_cuda_graphs(setting, "cuda:0", shapes_repeat=True)
    assert decision.enabled and "on" in decision.reason


def test_off_is_off_everywhere():
    assert not resolve_cuda_graphs("off", "cuda", shapes_repeat=True).enabled


def test_auto_falls_back_on_cpu_or_changing_shapes():
    assert not resolve_cuda_graphs("auto", "cpu", shapes_repeat=True).enabled
    decision = resolve_cuda_graphs("auto", "cuda", shapes_repeat=False)
    assert not decision.enabled and "do not repeat" in decision.reason


def test_on_where_it_cannot_work_is_a_configuration_error():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_cuda_graphs("on", "cpu", shapes_repeat=True)
    with pytest.raises(ValueError, match="repeating shapes"):
        resolve_cuda_graphs("on", "cuda", shapes_repeat=False)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_cuda_graphs("yes", "cuda", shapes_repeat=True)


@pytest.mark.parametrize("setting", ["auto", "on"])
def test_ddp_falls_back_with_a_message_until_nccl_capture_is_verified(setting):
    decision = resolve_cuda_graphs(setting, "cuda", shapes_repeat=True, world_size=2)
    assert not decision.enabled and "NCCL" in decision.reason
    verified = resolve_cuda_graphs(setting, "cuda", shapes_repeat=True, world_size=2, nccl_capture_verified=True)
    assert verified.enabled and "all-reduce inside the graph" in verified.reason
    failed = resolve_cuda_graphs(setting, "cuda", shapes_repeat=True, world_size=2, nccl_problem="replay on rank 1 summed 0")
    assert not failed.enabled and "replay on rank 1 summed 0" in failed.reason and "running eagerly" in failed.reason


def test_graph_key_separates_shapes_dtypes_and_absent_inputs():
    wave, lengths = torch.zeros(4, 16000), torch.full((4,), 16000)
    assert graph_key(wave, lengths) == graph_key(torch.ones(4, 16000), torch.zeros(4, dtype=torch.int64))
    assert graph_key(wave, lengths) != graph_key(wave, None)  # lengths=None takes the unmasked path
    assert graph_key(wave, None) != graph_key(torch.zeros(4, 8000), None)
    assert graph_key(wave, None) != graph_key(wave.half(), None)


def test_warmup_must_run_eagerly_at_least_once():
    with pytest.raises(ValueError, match="warmup"):
        CapturedStep(lambda x: x, warmup=0)


@gpu
@pytest.mark.gpu
def test_gpu_replayed_training_steps_equal_eager_steps():
    """N steps through CapturedStep (warm-up, capture, replays; two batch shapes) give the same
    losses and weights as N eager steps."""

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, capturable=True, fused=True)

        def step(x, y):
            opt.zero_grad(set_to_none=False)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()

        return model, step

    g = torch.Generator("cuda").manual_seed(1)
    batches = [(torch.randn(b, 8, device="cuda", generator=g), torch.randint(0, 3, (b,), device="cuda", generator=g))
               for b in [4] * 6 + [6] * 5 + [4] * 3]
    eager_model, eager_step = setup()
    eager = [eager_step(x, y).item() for x, y in batches]
    graph_model, step = setup()
    captured = CapturedStep(step, warmup=2)
    replayed = [captured(x, y).item() for x, y in batches]
    assert len(captured.graphs) == 2
    torch.testing.assert_close(torch.tensor(replayed), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    for p, q in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
