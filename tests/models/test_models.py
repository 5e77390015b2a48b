import pytest
import torch

from helix.models import ModelConfig, count_parameters, create_model, list_models, parameter_report

PAPER_VARIANTS = ["pure_mamba_raw", "pure_mamba_mel", "helix_raw", "helix_mel",
                  "pure_attention_raw", "pure_attention_mel"]
SMALL = {"d_model": 32, "d_state": 8}


def test_registry_lists_paper_variants_and_aum():
    names = list_models()
    assert set(PAPER_VARIANTS) <= set(names)
    assert {"aum_tiny", "aum_small", "aum_base"} <= set(names)


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    kw = {"d_model": 32, "depth": 2} if name.startswith("aum") else SMALL
    model = create_model(name, num_classes=5, **kw)
    wave = torch.randn(2, 16000) * 0.1
    logits = model(wave)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"no finite gradient for {no_grad}"
    assert model.forward_features(wave).shape == (2, 32)


def test_patterns_and_paper_counts():
    expected = {"pure_mamba_raw": 6_718_753, "helix_raw": 6_718_248, "pure_attention_raw": 6_715_723}
    for name, total in expected.items():
        model = create_model(name, num_classes=1313)
        assert count_parameters(model) == total
    helix = create_model("helix_raw", num_classes=1313)
    assert helix.config.pattern == "MMMAMM" and helix.d_ffn == 1543
    report = parameter_report(helix)
    assert report["per_type"] == {"M": 1_056_512, "A": 1_056_007}
    assert report["max_relative_gap"] < 1e-3


@pytest.mark.parametrize("d_model", [64, 128, 192])
def test_parameter_matching_holds_at_other_widths(d_model):
    model = create_model("helix_raw", num_classes=3, d_model=d_model, d_state=16)
    assert parameter_report(model)["max_relative_gap"] < 0.01


def test_any_pattern_for_sweeps():
    model = create_model("helix_raw", num_classes=3, pattern="AMAMMMMA", **SMALL)
    assert [type(layer).__name__ for layer in model.layers][:2] == ["AttentionBlock", "BiMambaBlock"]
    assert len(model.layers) == 8


@pytest.mark.parametrize("pattern,recompute,keeps", [
    ("MMMAMM", False, "sssAsa"), ("MMMMMM", False, "nssssa"), ("MM", False, "sa"), ("AM", False, "Aa"),
    ("MMMMMA", False, "nnnnnA"), ("MMMAMM", True, "nnnAnn")])
def test_the_last_bimamba_layer_keeps_its_activations_and_four_before_it_their_states(pattern, recompute, keeps):
    """The last layer's backward runs first, while everything else is saved anyway (ops/bimamba/fused.py
    ``keep``): it keeps "all" (a); the four BiMamba layers before it keep their chunk states (s); the others,
    every layer under ``recompute`` and every layer when an attention layer (A) comes last keep nothing (n)."""
    model = create_model("helix_raw", num_classes=3, pattern=pattern, recompute=recompute, **SMALL)
    got = "".join(layer.keep_activations[0] if hasattr(layer, "keep_activations") else "A"
                  for layer in model.layers)
    assert got == keeps


@pytest.mark.parametrize("lean,grad,runs", [(True, True, 2), ("auto", True, 1), (True, False, 1)])
def test_a_lean_training_step_runs_the_raw_frontend_again_in_backward(monkeypatch, lean, grad, runs):
    """``backbone.CHECKPOINT_FRONTEND``: a lean training step (every batch under ``lean_blocks: true``; under
    "auto" a batch this small is not lean) keeps only the waveform and runs the frontend a second time in
    backward; without gradients it runs once. Logits and every gradient equal those without it."""
    from helix.models import backbone

    torch.manual_seed(0)
    model = create_model("helix_raw", num_classes=3, lean_blocks=lean, **SMALL).train()
    wave = torch.randn(2, 16000) * 0.1
    results = []
    tokens = model.frontend.tokens
    for devices in (("cpu",), ()):
        calls = []
        model.zero_grad(set_to_none=True)
        with monkeypatch.context() as m, torch.set_grad_enabled(grad):
            m.setattr(backbone, "CHECKPOINT_FRONTEND", devices)
            # counted where the frontend starts (a recompute stops once it has what backward needs)
            m.setattr(model.frontend, "tokens", lambda w: calls.append(1) or tokens(w))
            logits = model(wave)
            if grad:
                logits.square().sum().backward()
        results.append((logits.detach(), [p.grad for p in model.parameters()], len(calls)))
    assert results[0][2] == runs and results[1][2] == 1
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None and b is None) or torch.equal(a, b)


def test_pool_first_k_uses_only_first_tokens():
    torch.manual_seed(0)
    model = create_model("pure_mamba_raw", num_classes=3, pool_first_k=10, **SMALL).eval()
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        tokens = model.encode(wave)
        torch.testing.assert_close(model.forward_features(wave), tokens[:, :10].mean(1))


def test_mel_frontend_tokens_are_time_major():
    # silence everywhere but the last 0.5 s: only the late time patches may change
    model = create_model("pure_attention_mel", num_classes=2, **SMALL).eval()
    a = torch.zeros(1, 32000)
    b = a.clone()
    b[:, -8000:] = torch.randn(8000)
    with torch.no_grad():
        ta, tb = model.frontend(a + 1e-3 * torch.randn_like(a)), model.frontend(b)
    assert ta.shape[1] == 8 * 4  # 63 frames -> 4 time patches x 8 frequency patches
    assert ta.shape == tb.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pattern="MMXA"), "pattern"),
        (dict(pattern=""), "pattern"),
        (dict(d_model=-4), "d_model"),
        (dict(frontend="cqt"), "frontend"),
        (dict(pool_first_k=0), "pool_first_k"),
        (dict(attention_impl="flash9"), "attention_impl"),
        (dict(not_a_field=1), "unknown model option"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("helix_raw", num_classes=3, **kwargs)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'helix_wav'.*available"):
        create_model("helix_wav", num_classes=3)


def test_num_classes_must_be_positive():
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=0)


def test_aum_class_token_in_the_middle_and_longer_inputs():
    torch.manual_seed(0)
    model = create_model("aum_tiny", num_classes=4, d_model=32, depth=1, max_seconds=1.0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 16000)).shape == (1, 4)
        assert model(torch.randn(1, 48000)).shape == (1, 4)  # positional table interpolated
    assert model.num_tokens(16000) == 17
