"""Speech Commands v0.02 recipe: official split lists, classes from the folders, background noise apart."""

from __future__ import annotations

import pytest

from helix.data.tasks import build_task
from helix.data.manifest import read_manifest
from helix.data.recipes import PrepareError, get_recipe

from .corpora import SC_WORDS, FixtureServer, make_speechcommands, tar_folder, write_audio

SC = get_recipe("speechcommands")


def test_splits_follow_the_lists_and_noise_is_not_a_class(sc_root):
    result = SC.prepare(sc_root, progress=False)
    assert result.classes == len(SC_WORDS) == 3 and result.items == 18 + 2
    rows = read_manifest(result.manifest)
    split = {r["path"].split("speechcommands/")[1]: r["split"] for r in rows}
    assert split["yes/00000000_nohash_0.wav"] == "validation"
    assert split["yes/00000001_nohash_0.wav"] == "test"
    assert split["yes/00000002_nohash_0.wav"] == "train"
    noise = [r for r in rows if r["split"] == "background_noise"]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in noise) == ["running_tap.wav", "white_noise.wav"]
    assert all(r["label"] == "" for r in noise)
    # prepare's own folder in the root is not mistaken for a word on the next run
    assert SC.prepare(sc_root, progress=False).classes == 3


def test_parallel_checking_gives_the_same_manifest(sc_root):
    one = SC.prepare(sc_root, workers=1, progress=False).manifest.read_text()
    (sc_root / "no" / "00000003_nohash_0.wav").write_bytes(b"")
    with pytest.raises(PrepareError, match="00000003_nohash_0.wav: empty file"):
        SC.prepare(sc_root, workers=2, progress=False)  # the process pool reports bad files too
    (sc_root / "no" / "00000003_nohash_0.wav").unlink()
    two = SC.prepare(sc_root, skip_bad=True, workers=2, progress=False).manifest.read_text()
    assert two == "\n".join(line for line in one.split("\n") if "no/00000003" not in line)


def test_datasets_per_split(sc_root):
    SC.prepare(sc_root, progress=False)
    train, val, test, names = build_task("speechcommands", sc_root, 1.0)
    assert names == sorted(SC_WORDS)
    assert (len(train), len(val), len(test)) == (12, 3, 3)
    x, y = val[0]
    assert x.shape == (16000,) and names[y] == "no"
    short = [i for i in range(len(train)) if train.frames[i] < 16000][0]
    assert not train[short][0][9700:].any()  # a 0.6 s clip is padded, not stretched
    with pytest.raises(ValueError, match="one predefined split, not folds"):
        build_task("speechcommands", sc_root, 1.0, fold=1)


def test_listed_but_missing_and_stray_files(sc_root):
    (sc_root / "yes" / "00000001_nohash_0.wav").unlink()  # listed in testing_list.txt
    (sc_root / "up" / "notes.txt").write_text("not audio")
    with pytest.raises(PrepareError) as info:
        SC.prepare(sc_root, progress=False)
    msg = str(info.value)
    assert "yes/00000001_nohash_0.wav: listed in testing_list.txt but missing" in msg
    assert "up/notes.txt: unsupported extension '.txt'" in msg
    result = SC.prepare(sc_root, skip_bad=True, progress=False)
    assert len(result.skipped) == 2 and result.items == 17 + 2


def test_download_flat_archive_then_prepare(tmp_path):
    corpus = make_speechcommands(tmp_path / "src", per_word=3)
    write_audio(corpus / "yes" / "extra_nohash_0.wav", 1.0, 16000)
    site = tmp_path / "site"
    site.mkdir()
    tar_folder(corpus, site / "speech_commands_v0.02.tar.gz", flat=True)
    root = tmp_path / "sc"
    with FixtureServer(site) as srv:
        SC.download(root, mirror=srv.url, progress=False)
    result = SC.prepare(root, progress=False)
    assert result.classes == 3 and result.items == 10 + 2


def test_a_file_in_both_lists_is_refused_naming_it(sc_root):
    from helix.data.recipes import DatasetLayoutError

    with open(sc_root / "testing_list.txt", "a") as f:
        f.write("no/00000000_nohash_0.wav\n")  # already line 1 of validation_list.txt
    with pytest.raises(DatasetLayoutError, match=r"no/00000000_nohash_0\.wav is listed in both .*validation_list"
                                                 r"\.txt line 1 and .*testing_list\.txt line 4"):
        SC.prepare(sc_root, progress=False)


def test_an_empty_split_is_refused(tmp_path):
    root = make_speechcommands(tmp_path / "sc", per_word=2)  # clip 0 validation, clip 1 test: no train
    with pytest.raises(PrepareError, match=r"the train split\(s\) would be empty"):
        SC.prepare(root, progress=False)
    assert not SC.manifest_path(root).exists()
    (root / "validation_list.txt").write_text("")
    write_audio(root / "yes" / "00000009_nohash_0.wav", 1.0, 16000)
    with pytest.raises(PrepareError, match=r"the validation split\(s\) would be empty"):
        SC.prepare(root, progress=False)


def test_loading_refuses_a_manifest_with_an_empty_split(sc_root):
    from helix.data.manifest import write_manifest

    SC.prepare(sc_root, progress=False)
    # a manifest from before prepare checked splits: validation emptied
    rows = [dict(r, split="test" if r["split"] == "validation" else r["split"])
            for r in read_manifest(SC.manifest_path(sc_root))]
    write_manifest(SC.manifest_path(sc_root), rows, sc_root)
    for task in ("speechcommands", "concat_speechcommands"):
        with pytest.raises(ValueError, match=r"the validation split is empty \(train 12, validation 0, test 6 items\)"):
            build_task(task, sc_root, None)


def test_a_fifo_among_the_clips_is_refused_by_name(sc_root):
    import os

    fifo = sc_root / "up" / "0000000f_nohash_0.wav"
    os.mkfifo(fifo)
    with pytest.raises(PrepareError, match=r"up/0000000f_nohash_0\.wav: not a regular file \(a FIFO\)"):
        SC.prepare(sc_root, workers=1, progress=False)
