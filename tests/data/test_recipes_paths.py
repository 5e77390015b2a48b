"""Dataset roots given as relative paths, absolute paths and through symlinks, for every corpus.

The manifest stores paths relative to the root and reading resolves them against the root, so a
corpus prepared from one folder loads from any other. Each test changes directory for real.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helix.data.audio import load_audio
from helix.data.recipes import DatasetLayoutError, get_recipe

from .corpora import (
    make_esc50,
    make_librispeech,
    make_speechcommands,
    make_urbansound8k,
    make_voxpopuli_processed,
    make_voxpopuli_raw,
)

CORPORA = {
    "esc50": make_esc50,
    "urbansound8k": make_urbansound8k,
    "speechcommands": make_speechcommands,
    "librispeech": make_librispeech,
    "voxpopuli": make_voxpopuli_processed,
    "voxpopuli-raw": make_voxpopuli_raw,
}


def _rows_resolve(rows, root: Path) -> None:
    assert rows
    for r in rows:
        assert os.path.isabs(r["path"]) and Path(r["path"]).is_relative_to(root), r["path"]
        assert os.path.isfile(r["path"]), r["path"]


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_relative_root_prepares_and_loads_from_any_folder(tmp_path, monkeypatch, corpus):
    name = corpus.split("-")[0]
    recipe = get_recipe(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    CORPORA[corpus](Path("data") / name)
    result = recipe.prepare(f"data/{name}", workers=1, progress=False)
    body = result.manifest.read_text().splitlines()[2:]
    assert body and not any(line.startswith(("data/", "/")) for line in body)  # relative to the root
    _rows_resolve(recipe.read_manifest(f"data/{name}"), work / "data" / name)
    # from another folder, through another relative path to the same root
    monkeypatch.chdir(tmp_path)
    rows = recipe.read_manifest(f"work/data/{name}")
    _rows_resolve(rows, work / "data" / name)
    assert load_audio(rows[0]["path"]).size > 0
    # and the root moves with its manifest
    shutil.move(work / "data", tmp_path / "moved")
    _rows_resolve(recipe.read_manifest(f"moved/{name}"), tmp_path / "moved" / name)


def test_symlinked_files_and_folders_inside_the_root(tmp_path, monkeypatch):
    """Audio kept on another disk and linked into the root: stored as seen under the root."""
    elsewhere = tmp_path / "disk2"
    monkeypatch.chdir(tmp_path)
    corpus = make_esc50(Path("esc"))
    shutil.move(corpus / "audio", elsewhere)  # the whole audio folder lives elsewhere ...
    (corpus / "audio").symlink_to(elsewhere.resolve(), target_is_directory=True)
    one = elsewhere / "1-1000-A-0.wav"  # ... and one file is a link to a third place
    shutil.move(one, tmp_path / "single.wav")
    one.symlink_to(tmp_path / "single.wav")
    recipe = get_recipe("esc50")
    assert recipe.prepare("esc", workers=1, progress=False).items == 15
    text = (corpus.parent / "helix" / "manifest.tsv").read_text()
    assert "\nESC-50-master/audio/1-1000-A-0.wav\t" in text and "disk2" not in text
    monkeypatch.chdir(elsewhere)
    rows = get_recipe("esc50").read_manifest(tmp_path / "esc")
    _rows_resolve(rows, tmp_path / "esc")


def test_symlinked_speaker_and_word_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    libri = make_librispeech(Path("libri"))
    shutil.move(libri / "train-clean-100" / "26", tmp_path / "spk26")
    (libri / "train-clean-100" / "26").symlink_to(tmp_path / "spk26", target_is_directory=True)
    result = get_recipe("librispeech").prepare("libri", workers=1, progress=False)
    assert (result.items, result.classes) == (18, 3)  # the linked speaker's 6 utterances are in
    sc = make_speechcommands(Path("sc"))
    shutil.move(sc / "up", tmp_path / "up-words")
    (sc / "up").symlink_to(Path("..") / "up-words", target_is_directory=True)  # a relative link
    result = get_recipe("speechcommands").prepare("sc", workers=1, progress=False)
    assert result.classes == 3 and "\nup/00000002_nohash_0.wav\t" in result.manifest.read_text()


def test_root_given_through_a_symlink(tmp_path, monkeypatch):
    make_esc50(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    get_recipe("esc50").prepare("link", workers=1, progress=False)
    _rows_resolve(get_recipe("esc50").read_manifest("real"), tmp_path / "real")


@pytest.mark.parametrize("name", ["../outside.wav", "/tmp/outside.wav", "sub/../../outside.wav"])
def test_metadata_path_escaping_the_root_is_refused(tmp_path, name):
    corpus = make_esc50(tmp_path / "esc")
    (tmp_path / "esc" / "ESC-50-master" / "outside.wav").write_bytes(b"")
    with open(corpus / "meta" / "esc50.csv", "a") as f:
        f.write(f"{name},1,0,dog,False,1,A\n")
    with pytest.raises(DatasetLayoutError, match=rf"esc50\.csv line 17: path '{name}' points outside"):
        get_recipe("esc50").prepare(tmp_path / "esc", progress=False)


def test_split_list_entry_escaping_the_root_is_refused(tmp_path):
    root = make_speechcommands(tmp_path / "sc")
    with open(root / "testing_list.txt", "a") as f:
        f.write("../../etc/x.wav\n")
    with pytest.raises(DatasetLayoutError, match=r"testing_list\.txt line 4: path '\.\./\.\./etc/x\.wav' points"):
        get_recipe("speechcommands").prepare(root, progress=False)
