"""ESC-50 recipe: folds from meta/esc50.csv, and every kind of bad input prepare must catch."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from helix.data.tasks import build_task
from helix.data.manifest import read_manifest
from helix.data.recipes import DatasetLayoutError, PrepareError, get_recipe

from .corpora import ESC50_CLASSES, FixtureServer, add_esc50_row, make_esc50, write_audio, zip_folder

ESC50 = get_recipe("esc50")


def test_prepare_writes_folds_labels_and_measured_formats(esc50_root):
    result = ESC50.prepare(esc50_root, progress=False)
    assert (result.items, result.classes, result.skipped) == (15, 3, [])
    rows = read_manifest(result.manifest)
    assert sorted({r["fold"] for r in rows}) == [1, 2, 3, 4, 5]
    assert {r["label"] for r in rows} == set(ESC50_CLASSES)
    first = next(r for r in rows if r["path"].endswith("1-1010-A-1.wav"))
    assert (first["label"], first["fold"], first["sample_rate"], first["frames"]) == ("rain", 1, 44100, 11025)
    assert first["duration"] == pytest.approx(0.25)
    assert ESC50.status(esc50_root).startswith("prepared: 15 files, 3 classes")
    # rerunnable: same manifest again
    assert ESC50.prepare(esc50_root, progress=False).items == 15


def test_folds_test_validation_train(esc50_root):
    ESC50.prepare(esc50_root, progress=False)
    train, val, test, names = build_task("esc50", esc50_root, 5.0, fold=2)
    assert names == sorted(ESC50_CLASSES)
    assert (len(train), len(val), len(test)) == (9, 3, 3)
    assert all("/3-" in p.decode() for p in val.paths) and all("/2-" in p.decode() for p in test.paths)
    _, val5, _, _ = build_task("esc50", esc50_root, 5.0, fold=5)
    assert all("/1-" in p.decode() for p in val5.paths)  # next fold cyclically
    x, y = test[0]
    assert x.shape == (80000,) and x.dtype.is_floating_point  # 0.25 s at 44.1 kHz -> 16 kHz, padded to 5 s
    assert np.abs(x[:3900].numpy()).max() > 0.3 and not x[4100:].any()
    with pytest.raises(ValueError, match=r"fold 7 is not one of the folds found in the manifest: \[1, 2, 3, 4, 5\]"):
        build_task("esc50", esc50_root, 5.0, fold=7)


def _corrupt(corpus):
    path = corpus / "audio" / "2-1000-A-0.wav"
    path.write_bytes(b"RIFF" + bytes(200))
    return path


def _truncated(corpus):
    path = corpus / "audio" / "2-1010-A-1.wav"
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _empty(corpus):
    path = corpus / "audio" / "3-1000-A-0.wav"
    path.write_bytes(b"")
    return path


def _unknown_extension(corpus):
    path = add_esc50_row(corpus, "4-2000-A-0.aiff2")
    path.write_bytes(b"FORM....")
    return path


def _missing(corpus):
    return add_esc50_row(corpus, "5-9999-A-0.wav")


@pytest.mark.parametrize(
    "damage,reason",
    [(_corrupt, "cannot decode"), (_truncated, "truncated"), (_empty, "empty file"),
     (_unknown_extension, "unsupported extension"), (_missing, r"listed in .*esc50\.csv line 17 but missing")],
)
def test_bad_file_stops_prepare_naming_file_and_fix(esc50_root, damage, reason):
    ESC50.prepare(esc50_root, progress=False)  # a good prepare first: its manifest must not survive
    bad = damage(esc50_root / "ESC-50-master")
    with pytest.raises(PrepareError) as info:
        ESC50.prepare(esc50_root, progress=False)
    msg = str(info.value)
    assert str(bad) in msg
    assert f"helix data download esc50 --root {esc50_root}" in msg
    assert f"helix data prepare esc50 --root {esc50_root} --skip-bad" in msg
    assert re.search(reason, msg)
    assert not ESC50.manifest_path(esc50_root).exists()  # nothing looks prepared
    assert not ESC50.status(esc50_root).startswith("prepared")

    result = ESC50.prepare(esc50_root, skip_bad=True, progress=False)
    assert [p for p, _ in result.skipped] == [str(bad)]
    report = result.report.read_text()
    assert str(bad) in report and "skipped (--skip-bad)" in report
    assert str(bad) not in {r["path"] for r in read_manifest(result.manifest)}
    assert "1 skipped" in ESC50.status(esc50_root)


def test_every_skipped_file_is_listed(esc50_root):
    corpus = esc50_root / "ESC-50-master"
    bad = {str(f(corpus)) for f in (_corrupt, _empty, _missing)}
    result = ESC50.prepare(esc50_root, skip_bad=True, progress=False)
    assert {p for p, _ in result.skipped} == bad and result.items == 13
    assert all(p in result.report.read_text() for p in bad)


def test_not_downloaded(tmp_path):
    with pytest.raises(DatasetLayoutError, match=rf"not downloaded: {tmp_path / 'none'} is missing or empty.*"
                                                 rf"helix data download esc50 --root {tmp_path / 'none'}"):
        ESC50.prepare(tmp_path / "none", progress=False)
    assert ESC50.status(tmp_path / "none").startswith("not downloaded")


def test_wrong_folder_layout(tmp_path):
    root = tmp_path / "flat"
    write_audio(root / "1-100-A-0.wav", 0.1, 44100)  # audio without ESC-50's meta/ and audio/ folders
    with pytest.raises(DatasetLayoutError, match=r"not in the ESC-50 layout: no meta/esc50\.csv.*Expected "
                                                 r"ESC-50-master/meta/esc50\.csv.*helix data download esc50"):
        ESC50.prepare(root, progress=False)
    corpus = make_esc50(tmp_path / "noaudio")
    shutil.rmtree(corpus / "audio")
    with pytest.raises(DatasetLayoutError, match="audio does not"):
        ESC50.prepare(tmp_path / "noaudio", progress=False)


def test_prepare_refuses_an_interrupted_unpack(esc50_root):
    marker = esc50_root / "helix" / "downloads" / "ESC-50-master.zip.extracting"
    marker.parent.mkdir(parents=True)
    marker.write_text("x")
    with pytest.raises(DatasetLayoutError,
                       match="unpacking ESC-50-master.zip was interrupted.*helix data download esc50"):
        ESC50.prepare(esc50_root, progress=False)
    assert ESC50.status(esc50_root).startswith("incomplete")


def test_download_from_loopback_then_prepare(tmp_path, monkeypatch):
    monkeypatch.setattr("helix.data.download.RETRY_WAIT", 0.0)
    make_esc50(tmp_path / "src", folds=3)
    site = tmp_path / "site"
    site.mkdir()
    zip_folder(tmp_path / "src" / "ESC-50-master", site / "master.zip")  # GitHub's archive name
    root = tmp_path / "esc50"
    with FixtureServer(site) as srv:
        srv.cut["master.zip"] = 2000
        ESC50.download(root, mirror=srv.url, progress=False)
    assert any(r[1] == "bytes=2000-" for r in srv.requests)  # the dropped transfer resumed
    assert ESC50.status(root).startswith("downloaded, not prepared")
    assert ESC50.prepare(root, progress=False).items == 9


@pytest.mark.parametrize(
    "row,reason",
    [
        # 1-1000-A-0.wav is line 2, in fold 1 as dog
        ("1-1000-A-0.wav,3,0,dog,False,1,A", r"line 17: 1-1000-A-0\.wav is listed a second time "
                                             r"\(fold 3, dog; first on line 2: fold 1, dog\)"),
        ("1-1000-A-0.wav,1,1,rain,False,1,A", r"line 17: 1-1000-A-0\.wav is listed a second time \(fold 1, rain"),
        ("6-1000-A-0.wav,6,0,dog,False,1,A", r"line 17: fold 6 is outside 1\.\.5"),
        ("0-1000-A-0.wav,0,0,dog,False,1,A", r"line 17: fold 0 is outside 1\.\.5"),
        ("x-1000-A-0.wav,one,0,dog,False,1,A", r"line 17: fold 'one' is not an integer"),
    ],
)
def test_inconsistent_metadata_is_refused_naming_the_line(esc50_root, row, reason):
    meta = esc50_root / "ESC-50-master" / "meta" / "esc50.csv"
    write_audio(meta.parents[1] / "audio" / row.split(",")[0], 0.1, 44100)
    meta.write_text(meta.read_text() + row + "\n")
    # a clip in two folds would put test clips into training: no --skip-bad gets past this
    for skip_bad in (False, True):
        with pytest.raises(DatasetLayoutError, match=rf"{re.escape(str(meta))} {reason}"):
            ESC50.prepare(esc50_root, skip_bad=skip_bad, progress=False)


def test_a_fifo_in_place_of_a_clip_is_refused_not_waited_on(esc50_root):
    import os

    clip = esc50_root / "ESC-50-master" / "audio" / "2-1000-A-0.wav"
    clip.unlink()
    os.mkfifo(clip)  # reading it would wait forever for a writer
    with pytest.raises(PrepareError, match=rf"{re.escape(str(clip))}: not a regular file \(a FIFO\)"):
        ESC50.prepare(esc50_root, workers=1, progress=False)
