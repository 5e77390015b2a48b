"""Loading a file never runs code: a malicious pickle checkpoint is refused by every command that
reads a checkpoint, and shared weights round-trip through safetensors files and pretrained folders."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import helix
from helix.cli import main
from helix.models import create_model
from helix.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SR = 16000
CLASSES = ["dog", "rain", "siren"]
KWARGS = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}


class Payload:
    """Unpickling this creates ``marker``: any code at all could run in its place."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def good_payload():
    torch.manual_seed(0)
    model = create_model("helix_raw", 3, **KWARGS)
    return {"format": 1, "helix_version": helix.__version__,
            "model": {"name": "helix_raw", "kwargs": dict(KWARGS), "num_classes": 3}, "class_names": CLASSES,
            "sample_rate": SR, "clip_seconds": 0.5, "model_state": model.state_dict()}


def write_malicious(path, marker, how="zip"):
    if how == "raw":  # a bare pickle, no torch container at all
        with open(path, "wb") as f:
            pickle.dump({"format": 1, "metrics": Payload(marker)}, f, protocol=2)
    else:
        payload = {**good_payload(), "metrics": Payload(marker)}
        torch.save(payload, path, _use_new_zipfile_serialization=how == "zip")
    return path


@pytest.mark.parametrize("how", ["zip", "legacy", "raw"])
def test_the_malicious_file_would_run_code_and_helix_load_refuses_it(tmp_path, how):
    path = write_malicious(tmp_path / "evil.pt", tmp_path / "MARKER", how)
    # the file really is malicious: an unsafe load creates the marker
    if how == "raw":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert (tmp_path / "MARKER").exists()
    (tmp_path / "MARKER").unlink()
    with pytest.raises(CheckpointError, match=r"evil.pt is unsafe .* names the Python object .*open") as err:
        helix.load(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "MARKER").exists()


@pytest.fixture
def evil(tmp_path):
    """A malicious best.pt, a WAV and a trial list beside it."""
    marker = tmp_path / "MARKER"
    path = write_malicious(tmp_path / "best.pt", marker)
    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), SR)
    (tmp_path / "trials.txt").write_text("1 a.wav a.wav\n0 a.wav a.wav\n")
    return path, marker


def _one_error_line(err: str, name: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("helix: error:") and name in lines[0], err
    assert "unsafe" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("command", [
    ["predict", "{ckpt}", "{dir}/a.wav", "-o", "{dir}/p.json"],
    ["embed", "{ckpt}", "{dir}/a.wav", "-o", "{dir}/emb"],
    ["verify", "{ckpt}", "{dir}/trials.txt", "--scores", "{dir}/s.txt"],
    ["export", "{ckpt}", "--format", "torchscript", "-o", "{dir}/m.ts.pt"],
    ["export", "{ckpt}", "--format", "safetensors", "-o", "{dir}/m.safetensors"],
], ids=["predict", "embed", "verify", "export-torchscript", "export-safetensors"])
def test_no_command_runs_code_from_a_checkpoint(evil, command, capsys):
    path, marker = evil
    before = path.read_bytes()
    argv = [a.format(ckpt=path, dir=path.parent) for a in command]
    assert main(argv) == 1
    _one_error_line(capsys.readouterr().err, "best.pt")
    assert not marker.exists()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav", "best.pt", "trials.txt"]  # nothing written


def test_train_resume_does_not_run_code_from_last_pt(tmp_path, capsys, one_thread):
    from helix.training.config_io import load_config

    run = tmp_path / "run"
    run.mkdir()
    settings = ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
                "data.task_kwargs={num_train: 16, num_val: 8, num_test: 8}", "model.name=helix_raw",
                "model.num_layers=2", "model.overrides={d_model: 16, d_state: 4}", "optim.epochs=1",
                "optim.batch_size=8", "device=cpu", f"out_dir={run}"]
    (run / "config.yaml").write_text(load_config(None, settings).to_yaml())
    write_malicious(run / "last.pt", tmp_path / "MARKER")
    assert main(["train", "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "last.pt" in err and "unsafe" in err and "Traceback" not in err
    assert not (tmp_path / "MARKER").exists()


# ---------------------------------------------------------------- safetensors and pretrained folders
@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, good_payload())
    return path


def test_safetensors_file_and_pretrained_folder_round_trip(ckpt, tmp_path, capsys):
    from safetensors import safe_open

    wave = 0.1 * np.random.default_rng(1).standard_normal(12000).astype(np.float32)
    want = helix.load(ckpt).predict(wave).probs
    assert main(["export", str(ckpt), "--format", "safetensors", "-o", str(tmp_path / "m.safetensors")]) == 0
    assert main(["export", str(ckpt), "--format", "pretrained", "-o", str(tmp_path / "shared")]) == 0
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "shared" / "config.json").read_text())
    assert config["model"]["name"] == "helix_raw" and config["class_names"] == CLASSES
    assert config["sample_rate"] == SR and config["clip_seconds"] == 0.5 and config["num_classes"] == 3
    assert config["model"]["kwargs"] == {**KWARGS, "frontend": "raw"}  # registry defaults resolved
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["helix"]) == config
    for source in (tmp_path / "m.safetensors", tmp_path / "shared"):
        model = helix.load(source)
        assert model.class_names == CLASSES and model.clip_seconds == 0.5
        np.testing.assert_allclose(model.predict(wave).probs, want, atol=1e-6)
    # any name works: the content, not the suffix, says what the file is
    shutil.copy(tmp_path / "m.safetensors", tmp_path / "weights.bin")
    np.testing.assert_allclose(helix.load(tmp_path / "weights.bin").predict(wave).probs, want, atol=1e-6)
    # and a safetensors export is itself a valid input to export
    assert main(["export", str(tmp_path / "m.safetensors"), "--format", "pretrained",
                 "-o", str(tmp_path / "again")]) == 0


def test_foreign_or_damaged_shared_weights_fail_in_one_line(ckpt, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="plain.safetensors has no 'helix' metadata"):
        helix.load(tmp_path / "plain.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty needs config.json and model.safetensors"):
        helix.load(tmp_path / "empty")
    main(["export", str(ckpt), "--format", "pretrained", "-o", str(tmp_path / "m")])
    data = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        helix.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        helix.load(tmp_path / "m")


# ---------------------------------------------------------------- what a checkpoint may hold
def test_checkpoints_hold_only_plain_values(tmp_path):
    payload = {**good_payload(), "metrics": {"acc": np.float64(0.5), "step": np.int64(3)}, "epoch": 2}
    save_checkpoint(tmp_path / "ok.pt", payload)
    loaded = torch.load(tmp_path / "ok.pt", weights_only=True)  # what every helix load does
    assert loaded["metrics"] == {"acc": 0.5, "step": 3} and type(loaded["metrics"]["acc"]) is float
    with pytest.raises(TypeError, match=r"payload\['config'\]\['when'\] is a datetime.date"):
        import datetime

        save_checkpoint(tmp_path / "bad.pt", {**payload, "config": {"when": datetime.date.today()}})
    assert not (tmp_path / "bad.pt").exists()


def test_a_trained_run_checkpoint_loads_with_weights_only(tmp_path, one_thread):
    from helix.training.config_io import load_config
    from helix.training.loop import Trainer

    cfg = load_config(None, ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
                             "data.task_kwargs={num_train: 16, num_val: 8, num_test: 8}", "model.name=helix_raw",
                             "model.num_layers=2", "model.overrides={d_model: 16, d_state: 4}",
                             "optim.epochs=1", "optim.batch_size=8", "device=cpu", f"out_dir={tmp_path / 'run'}"])
    Trainer(cfg, verbose=False).fit()
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ck["config"]["model"]["name"] == "helix_raw"
    assert "optimizer_state" in load_checkpoint(tmp_path / "run" / "last.pt")


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"garbage" * 40), "garbage.pt is corrupted or not a helix checkpoint"),
    (lambda p: torch.save({**good_payload(), "format": 7}, p), "has format 7"),
    (lambda p: torch.save({k: v for k, v in good_payload().items() if k != "class_names"}, p),
     r"lacks required keys \['class_names'\]"),
    (lambda p: torch.save({**good_payload(), "sample_rate": "16k"}, p), "'sample_rate' must be a positive int"),
    (lambda p: torch.save([1, 2, 3], p), "not a helix checkpoint \\(found list\\)"),
], ids=["garbage", "format", "missing-key", "wrong-type", "not-a-dict"])
def test_someone_elses_checkpoint_gets_one_clear_line(tmp_path, capsys, damage, message):
    path = tmp_path / "garbage.pt"
    damage(path)
    sf.write(tmp_path / "a.wav", np.zeros(800, np.float32), SR)
    assert main(["predict", str(path), str(tmp_path / "a.wav")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "garbage.pt" in err, err
    with pytest.raises(CheckpointError, match=message):
        helix.load(path)


def test_torch_load_is_never_called_without_weights_only():
    import pathlib

    src = pathlib.Path(helix.__file__).parent
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if "weights_only=False" in p.read_text() or "pickle.load(" in p.read_text()]
    assert offenders == [], f"unsafe loads in {offenders}"
