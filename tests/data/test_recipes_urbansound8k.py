"""UrbanSound8K recipe: folds from metadata/UrbanSound8K.csv, mixed native formats, checked download."""

from __future__ import annotations

import pytest

from helix.data.audio import AudioError
from helix.data.tasks import build_task
from helix.data.download import ChecksumError
from helix.data.manifest import read_manifest
from helix.data.recipes import DatasetLayoutError, get_recipe

from .corpora import US8K_CLASSES, FixtureServer, make_urbansound8k, tar_folder

US8K = get_recipe("urbansound8k")


def test_prepare_records_each_files_own_format(us8k_root):
    result = US8K.prepare(us8k_root, progress=False)
    assert (result.items, result.classes) == (12, 3)
    rows = read_manifest(result.manifest)
    assert sorted({r["fold"] for r in rows}) == [1, 2, 3, 4]  # folds from the data, not assumed to be 10
    assert {(r["sample_rate"], r["channels"]) for r in rows} == {(44100, 1), (48000, 2), (22050, 1), (96000, 2)}
    fold3 = next(r for r in rows if r["path"].endswith("fold3/103-1-0-3.wav"))
    assert (fold3["label"], fold3["fold"]) == ("siren", 3)


def test_every_format_loads_as_16k_mono_and_wrong_rates_can_be_refused(us8k_root):
    US8K.prepare(us8k_root, progress=False)
    train, val, test, names = build_task("urbansound8k", us8k_root, 4.0, fold=4)
    assert names == sorted(US8K_CLASSES) and (len(train), len(val), len(test)) == (6, 3, 3)
    for ds in (train, val, test):
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (64000,)
            # 0.3 s of a 500 Hz tone, resampled from whatever the file had
            assert abs(x[:4700]).max() > 0.2 and not x[4900:].any()
    _, strict, _, _ = build_task("urbansound8k", us8k_root, 4.0, fold=4, resample=False)
    with pytest.raises(AudioError, match="expected 16000 Hz and resampling is disabled"):
        strict[0]


def test_metadata_without_required_columns(us8k_root):
    meta = us8k_root / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv"
    meta.write_text("slice_file_name,classID\nx.wav,1\n")
    with pytest.raises(DatasetLayoutError, match=r"lacks columns \['class', 'fold'\]"):
        US8K.prepare(us8k_root, progress=False)


def test_download_checks_the_published_md5(tmp_path, monkeypatch):
    monkeypatch.setattr("helix.data.download.RETRY_WAIT", 0.0)
    corpus = make_urbansound8k(tmp_path / "src", folds=2)
    site = tmp_path / "site"
    site.mkdir()
    tar_folder(corpus, site / "UrbanSound8K.tar.gz")  # not the real archive: its md5 differs from Zenodo's
    root = tmp_path / "us8k"
    with FixtureServer(site) as srv, pytest.raises(ChecksumError, match="9aa69802bbf37fb986f71ec1483a196e"):
        US8K.download(root, mirror=srv.url, progress=False)
    assert US8K.status(root).startswith("not downloaded")
    assert not (root / "UrbanSound8K").exists()


@pytest.mark.parametrize(
    "row,reason",
    [
        # 101-0-0-1.wav is line 2 (fold 1, dog_bark); a copy of it in fold 2 is the same clip twice
        ("101-0-0-1.wav,101,0,0.3,1,2,0,dog_bark", r"line 14: 101-0-0-1\.wav is listed a second time "
                                                   r"\(fold 2, dog_bark; first on line 2: fold 1, dog_bark\)"),
        ("101-0-0-1.wav,101,0,0.3,1,1,1,siren", r"line 14: 101-0-0-1\.wav is listed a second time"),
        ("101-0-0-11.wav,101,0,0.3,1,11,0,dog_bark", r"line 14: fold 11 is outside 1\.\.10"),
        ("101-0-0-1.wav,101,0,0.3,1,2.5,0,dog_bark", r"line 14: fold '2\.5' is not an integer"),
        ("../../x.wav,101,0,0.3,1,1,0,dog_bark", r"line 14: path '\.\./\.\./x\.wav' points outside"),
    ],
)
def test_inconsistent_metadata_is_refused_naming_the_line(us8k_root, row, reason):
    import re
    import shutil

    corpus = us8k_root / "UrbanSound8K"
    (corpus / "audio" / "fold2").mkdir(exist_ok=True)
    shutil.copy(corpus / "audio" / "fold1" / "101-0-0-1.wav", corpus / "audio" / "fold2" / "101-0-0-1.wav")
    meta = corpus / "metadata" / "UrbanSound8K.csv"
    meta.write_text(meta.read_text() + row + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"{re.escape(str(meta))} {reason}"):
        US8K.prepare(us8k_root, progress=False)
