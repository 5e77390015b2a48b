"""Fine-tuning from a checkpoint through the CLI: ``helix train ... --init CHECKPOINT`` with a new
class set (head re-initialised, backbone frozen) or the same one (lower backbone learning rate)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from helix.cli import main
from helix.models.checkpoint import load_checkpoint
from helix.training.config_io import load_config

_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parents[1] / "data" / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)

TINY = ["data.num_workers=0", "model.num_layers=2", "model.overrides={d_model: 16, d_state: 4}", "optim.epochs=1",
        "optim.batch_size=4", "device=cpu", "augment.enabled=false"]


def _prepared(root: Path, classes: dict[str, float]) -> Path:
    for c, (name, freq) in enumerate(classes.items()):
        for i in range(6):
            corpora.write_audio(root / name / f"{i}.wav", 0.25, 16000, freq=freq + 40 * i)
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A checkpoint trained on two classes, and the folder it came from."""
    tmp = tmp_path_factory.mktemp("pre")
    root = _prepared(tmp / "two", {"hum": 200.0, "whistle": 1800.0})
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(tmp / "run"), *TINY]) == 0
    return tmp / "run" / "best.pt", root


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def test_new_classes_reinitialise_the_head_and_a_frozen_backbone_stays_put(pretrained, tmp_path, capsys):
    ckpt, _ = pretrained
    capsys.readouterr()
    root = _prepared(tmp_path / "three", {"hum": 200.0, "click": 700.0, "whistle": 1800.0})
    out = tmp_path / "tuned"
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(out), "--init", str(ckpt),
                 *TINY, "optim.epochs=2", "model.freeze_backbone=true"]) == 0
    said = capsys.readouterr().out
    assert f"initialised from {ckpt}; classifier head re-initialised" in said
    assert "the checkpoint has 2 classes (hum, whistle), the data 3 (click, hum, whistle)" in said
    assert "backbone frozen" in said
    before, after = load_checkpoint(ckpt), load_checkpoint(out / "last.pt")
    assert after["class_names"] == ["click", "hum", "whistle"] and after["model_state"]["head.weight"].shape[0] == 3
    for k, v in _backbone(before["model_state"]).items():
        assert torch.equal(v, after["model_state"][k]), k  # the pretrained backbone, untouched
    assert after["config"]["init"] == str(ckpt)


def test_same_classes_keep_the_head_and_train_the_backbone_at_a_lower_rate(pretrained, tmp_path, capsys):
    ckpt, root = pretrained
    capsys.readouterr()
    out = tmp_path / "tuned"
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(out), "--init", str(ckpt),
                 *TINY, "optim.backbone_lr_scale=0.1", "optim.min_lr=0"]) == 0
    assert f"initialised from {ckpt} (every weight, classes unchanged)" in capsys.readouterr().out
    groups = load_checkpoint(out / "last.pt")["optimizer_state"]["param_groups"]
    peaks = sorted({g["initial_lr"] for g in groups})
    assert peaks == pytest.approx([0.1 * peaks[1], peaks[1]])  # backbone at a tenth of the head's rate
    before, after = load_checkpoint(ckpt)["model_state"], load_checkpoint(out / "last.pt")["model_state"]
    assert any(not torch.equal(v, after[k]) for k, v in _backbone(before).items())  # the backbone trains


def test_init_refuses_another_architecture_and_bad_options(pretrained, tmp_path, capsys):
    ckpt, root = pretrained
    capsys.readouterr()
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(tmp_path / "x"),
                 "--init", str(ckpt), *TINY, "model.num_layers=1"]) == 1
    err = capsys.readouterr().err
    assert f"--init {ckpt}: its network does not match model.name=helix_raw" in err and "\n" not in err.strip()
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(tmp_path / "y"),
                 "--init", str(tmp_path / "missing.pt"), *TINY]) == 1
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="optim.backbone_lr_scale must be in"):
        load_config("folder", ["optim.backbone_lr_scale=0"])
    with pytest.raises(ValueError, match="freeze_backbone: expected true/false"):
        load_config("folder", ["model.freeze_backbone=maybe"])


def test_a_run_from_before_the_new_options_still_resumes(tiny):
    from helix.models.checkpoint import save_checkpoint
    from helix.training.loop import Trainer

    cfg = tiny("optim.epochs=1")
    Trainer(cfg, verbose=False).fit()
    last = Path(cfg.out_dir) / "last.pt"
    ck = load_checkpoint(last)
    for section, key in (("data", "balanced_sampling"), ("optim", "class_weights"), ("optim", "backbone_lr_scale"),
                         ("model", "freeze_backbone")):
        del ck["config"][section][key]
    del ck["config"]["init"]
    save_checkpoint(last, ck)
    summary = Trainer(tiny("optim.epochs=1"), resume=True, verbose=False).fit()  # absent = the default
    assert summary["epochs_completed"] == 1
    with pytest.raises(ValueError, match="optim.class_weights: None -> 'balanced'"):
        Trainer(tiny("optim.epochs=1", "optim.class_weights=balanced"), resume=True, verbose=False).fit()
