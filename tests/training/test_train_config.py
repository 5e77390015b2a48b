"""TrainConfig: paper defaults, presets, key=value overrides with types, and the checks."""

from __future__ import annotations

import dataclasses

import pytest

from helix.training.config import TrainConfig

from helix.training.config_io import list_presets, load_config

from helix.models import scale_pattern

PRESETS = ("esc50", "urbansound8k", "speechcommands", "concat_speechcommands", "librispeech_30s",
           "voxpopuli_300s", "demo", "demo_concat")


def test_defaults_are_the_paper_protocol():
    c = TrainConfig()
    o, a = c.optim, c.augment
    assert (o.lr, o.weight_decay, o.min_lr, o.grad_clip, o.batch_size, o.epochs) == (3e-4, 0.05, 1e-6, 1.0, 32, 100)
    assert (a.mixup_alpha, a.time_shift_s, a.gain_min, a.gain_max, a.noise_std) == (0.3, 0.5, 0.8, 1.2, 0.005)
    assert c.model.pool_first_k is None and c.precision == "auto"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    assert name in list_presets()
    cfg = load_config(name)
    assert cfg.data.name and cfg.model.name


def test_presets_follow_the_paper():
    assert load_config("esc50").data.num_folds == 5
    assert load_config("urbansound8k").data.num_folds == 10
    concat = load_config("concat_speechcommands")
    assert concat.model.pool_first_k == 100 and concat.data.clip_seconds == 10.0
    assert load_config("speechcommands").data.num_folds is None
    vox = load_config("voxpopuli_300s")
    assert vox.optim.batch_size == 32 and vox.data.clip_seconds == 300.0


def test_overrides_dotted_bare_and_typed():
    cfg = load_config("esc50", ["optim.lr=1e-3", "epochs=7", "model.overrides.d_model=64", "fold=2",
                                "betas=[0.9, 0.95]", "augment.enabled=false", "pool_first_k=null"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML alone reads "1e-3" as text
    assert cfg.optim.epochs == 7 and cfg.data.fold == 2
    assert cfg.model.overrides == {"d_model": 64} and cfg.optim.betas == (0.9, 0.95)
    assert cfg.augment.enabled is False and cfg.model.pool_first_k is None


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("name=x", "ambiguous"),
    ("epochs=many", "optim.epochs: expected int"),
    ("epochs=2.5", "optim.epochs: expected int"),
    ("precision=fp8", "precision must be"),
    ("fold=9", "data.fold must be in 1..5"),
    ("warmup_epochs=200", "warmup_epochs"),
    ("noequals", "key=value"),
])
def test_bad_overrides_explain_themselves(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("esc50", [override])


def test_unknown_yaml_field_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown config field.*optim.learning_rate"):
        load_config(str(path))


def test_missing_preset_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="esc50"):
        load_config("no_such_preset")


def test_yaml_round_trip(tmp_path):
    cfg = load_config("concat_speechcommands", ["lr=0.001", "model.overrides={d_model: 64}"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(str(path)) == cfg
    assert dataclasses.asdict(TrainConfig.from_dict(cfg.to_dict())) == cfg.to_dict()


def test_scale_pattern_keeps_the_backbone_shape():
    assert scale_pattern("MMMAMM", 6) == "MMMAMM"
    assert scale_pattern("MMMAMM", 4) == "MMAM"
    assert scale_pattern("MMMMMM", 3) == "MMM" and scale_pattern("AAAAAA", 2) == "AA"
    cfg = load_config("demo")
    assert cfg.model.create_kwargs()["pattern"] == "MMAM"
    explicit = load_config("demo", ["model.overrides={pattern: MAMA}"])
    assert explicit.model.create_kwargs()["pattern"] == "MAMA"


@pytest.mark.parametrize("override, field", [
    ("optim.lr=nan", "optim.lr"), ("data.clip_seconds=nan", "data.clip_seconds"),
    ("data.clip_seconds=inf", "data.clip_seconds"), ("optim.min_lr=-inf", "optim.min_lr"),
    ("warmup_epochs=nan", "optim.warmup_epochs"), ("betas=[0.9, .nan]", "optim.betas"),
    ("augment.noise_std=.inf", "augment.noise_std"), ("augment.gain_max=nan", "augment.gain_max"),
    ("grad_clip=inf", "optim.grad_clip"), ("val_fraction=nan", "data.val_fraction"),
])
def test_every_float_field_must_be_finite(override, field):
    with pytest.raises(ValueError, match=rf"{field} must be a finite number"):
        load_config("esc50", [override])


def test_an_infinite_integer_is_a_type_error_not_a_crash():
    with pytest.raises(ValueError, match="optim.epochs: expected int, got 'inf'"):
        load_config("esc50", ["epochs=inf"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  name: esc50\noptim:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ValueError, match=rf"{path}:\d+: malformed YAML"):
        load_config(str(path))
    with pytest.raises(ValueError, match="override 'model.overrides=.d_model: 32': the value is not valid YAML"):
        load_config("esc50", ["model.overrides={d_model: 32"])


def test_misspelled_keys_name_the_file_and_suggest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  weight_decy: 0.1\n")
    with pytest.raises(ValueError, match=rf"{path}: unknown config field.*optim.weight_decy.*did you mean optim.weight_decay"):
        load_config(str(path))
    path.write_text("optim: 5\n")
    with pytest.raises(ValueError, match=rf"{path}: config section optim must be a mapping"):
        load_config(str(path))
    with pytest.raises(ValueError, match="did you mean optim.weight_decay"):
        load_config("esc50", ["optim.weight_decy=0.1"])


def test_sample_rate_is_one_setting():
    cfg = load_config("esc50", ["data.sample_rate=8000"])
    assert cfg.model_kwargs()["sample_rate"] == 8000
    with pytest.raises(ValueError, match="the sample rate is one setting"):
        load_config("esc50", ["data.sample_rate=8000", "model.overrides.sample_rate=16000"])


def test_helix_overrides_apply_after_the_command_line(monkeypatch):
    monkeypatch.setenv("HELIX_OVERRIDES", "optim.epochs=1  model.overrides='{d_model: 32, d_state: 4}'\tlr=0.01")
    cfg = load_config("esc50", ["epochs=7", "optim.lr=0.5"])
    assert cfg.optim.epochs == 1 and cfg.optim.lr == 0.01  # the environment wins
    assert cfg.model.overrides == {"d_model": 32, "d_state": 4} and cfg.data.num_folds == 5
    monkeypatch.setenv("HELIX_OVERRIDES", "optim.epochz=1")
    with pytest.raises(ValueError, match="HELIX_OVERRIDES: unknown config key 'optim.epochz'"):
        load_config("esc50")
    monkeypatch.setenv("HELIX_OVERRIDES", "")
    assert load_config("esc50").optim.epochs == 100


@pytest.mark.parametrize("override, message", [
    ("model.overrides.d_modle=64", r"model\.overrides\.d_modle.*did you mean model\.overrides\.d_model"),
    ("model.overrides.d_state=0", r"helix_raw: model\.overrides\.d_state must be a positive integer"),
    ("model.overrides.frontend=wav", r"frontend must be 'raw' or 'mel'"),
])
def test_model_options_are_checked_when_the_config_loads(override, message):
    """A misspelled or mistyped model option fails at load time, before any data is read."""
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])
