"""The wheel carries the presets and the LICENSE, and presets are found from any working folder.

(The wheel installed into a fresh virtual environment, running the documented commands, is
``tests/test_docs*``'s job; this test only opens the archive.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helix.training.config_io import PACKAGE_PRESETS, list_presets, load_config, resolve_preset

REPO = Path(__file__).resolve().parents[2]
PRESETS = {"esc50", "urbansound8k", "speechcommands", "concat_speechcommands", "librispeech_30s",
           "voxpopuli_300s", "demo", "demo_concat"}


def test_wheel_contains_presets_and_license(tmp_path):
    # build from a copy, so parallel builds never share the repository's build/ folder
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(out)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("helix_audio-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        shipped = {Path(n).stem for n in names if n.startswith("helix/configs/") and n.endswith(".yaml")}
        assert PRESETS <= shipped, sorted(shipped)
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses and b"MIT License" in z.read(licenses[0])
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata


def test_presets_live_in_the_package_and_are_found_from_any_folder(tmp_path, monkeypatch):
    assert PACKAGE_PRESETS.parent.name == "helix" and (PACKAGE_PRESETS / "esc50.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    assert PRESETS <= set(list_presets())
    assert resolve_preset("esc50") == PACKAGE_PRESETS / "esc50.yaml"
    assert load_config("esc50").data.num_folds == 5


def test_own_yaml_path_and_a_local_configs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text("optim:\n  epochs: 3\n")
    assert load_config(str(mine)).optim.epochs == 3
    assert load_config("mine.yaml").optim.epochs == 3  # relative to the working folder
    # ./configs/<name>.yaml shadows the shipped preset of that name (documented in docs/training.md)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "esc50.yaml").write_text("data:\n  name: esc50\n  num_folds: 5\noptim:\n  epochs: 2\n")
    assert load_config("esc50").optim.epochs == 2
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("missing.yaml")
