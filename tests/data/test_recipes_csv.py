"""CSV recipe: path,label[,split|fold][,group], single- and multi-label; every bad row named by its line."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from helix.cli import main
from helix.data.manifest import read_manifest
from helix.data.recipes import DatasetLayoutError, PrepareError, get_recipe
from helix.data.tasks import build_task

from .corpora import write_audio

CSV = get_recipe("csv")


def make_csv(root, rows, header="path,label", name="labels.csv"):
    """Audio files for ``rows`` (first cell = path, made unless it starts with '!'), then the CSV."""
    lines = [header]
    for i, row in enumerate(rows):
        path = row[0]
        if path.startswith("!"):
            path = path[1:]
        else:
            write_audio(root / path, 0.2 + 0.01 * (i % 5), (16000, 22050)[i % 2], freq=200 + 50 * (i % 7),
                        channels=1 + i % 2)
        lines.append(",".join([path, *row[1:]]))
    meta = root / name
    meta.write_text("\n".join(lines) + "\n")
    return meta


def _prepare(root, meta, **kw):
    return CSV.prepare(root, progress=False, workers=1, csv=str(meta), **kw)


def test_groups_stay_together_in_the_drawn_split(tmp_path):
    root = tmp_path / "calls"
    rows = [(f"{cls}/{spk}_{k}.wav", cls, f"{cls}-{spk}") for cls in ("wren", "tit") for spk in range(5)
            for k in range(3)]
    meta = make_csv(root, rows, header="path,label,group")
    result = _prepare(root, meta)
    assert (result.items, result.classes) == (30, 2)
    rows = read_manifest(result.manifest)
    where = {}
    for r in rows:
        assert where.setdefault(r["speaker"], r["split"]) == r["split"]
    assert all(Counter((r["label"], r["split"]) for r in rows)[c, s] == 3
               for c in ("wren", "tit") for s in ("validation", "test"))
    train, val, test, names = build_task("csv", root, 0.5)
    assert (len(train), len(val), len(test), names) == (18, 6, 6, ["tit", "wren"])


def test_given_split_is_kept_and_validation_drawn_from_train_when_absent(tmp_path):
    root = tmp_path / "kw"
    rows = [(f"w/{i}.wav", ("yes", "no")[i % 2], ("train", "validation", "test", "train")[i % 4]) for i in range(16)]
    meta = make_csv(root, rows, header="path,label,split")
    got = {r["path"].split("kw/")[1]: r["split"] for r in read_manifest(_prepare(root, meta).manifest)}
    assert got == {p: s for p, _, s in rows}

    rows = [(f"w/{i}.wav", ("yes", "no")[i % 2], ("Train", "test")[i % 5 == 0]) for i in range(40)]
    meta = make_csv(tmp_path / "kw2", rows, header="path,label,split")
    result = _prepare(tmp_path / "kw2", meta)
    made = read_manifest(result.manifest)
    tests = {r["path"] for r in made if r["split"] == "test"}
    assert tests == {str(tmp_path / "kw2" / p) for p, _, s in rows if s == "test"}
    assert Counter((r["label"], r["split"]) for r in made if r["split"] == "validation") == {("yes", "validation"): 2,
                                                                                          ("no", "validation"): 2}
    summary = json.loads((tmp_path / "kw2" / "helix" / "summary.json").read_text())
    assert summary["split"]["made"] == "validation from train"
    # a rerun with one more training file keeps the validation files it drew
    (tmp_path / "kw2" / "labels.csv").write_text((tmp_path / "kw2" / "labels.csv").read_text() + "w/0.wav,yes,train\n"
                                                 .replace("w/0.wav", "w/extra.wav"))
    write_audio(tmp_path / "kw2" / "w" / "extra.wav", 0.2, 16000)
    again = read_manifest(_prepare(tmp_path / "kw2", meta).manifest)
    before = {r["path"] for r in made if r["split"] == "validation"}
    assert before <= {r["path"] for r in again if r["split"] == "validation"} and len(again) == 41


def test_folds_give_cross_validation_tasks(tmp_path):
    root = tmp_path / "f"
    rows = [(f"a/{i}.wav", ("x", "y")[i % 2], str(1 + i // 2 % 4)) for i in range(16)]
    meta = make_csv(root, rows, header="path,label,fold")
    _prepare(root, meta)
    train, val, test, _ = build_task("csv", root, 0.5, fold=2)
    assert (len(train), len(val), len(test)) == (8, 4, 4)
    assert {p.decode().rsplit("/", 1)[1] for p in test.paths} == {"2.wav", "3.wav", "10.wav", "11.wav"}


def test_multi_label_rows_give_label_vectors(tmp_path):
    root = tmp_path / "tags"
    tags = [["bird"], ["rain"], ["bird", "rain"], ["wind", "bird"], ["wind"], ["rain", "wind"]]
    rows = [(f"c/{i}.wav", '"' + "; ".join(tags[i % 6]) + '"') for i in range(30)]
    meta = make_csv(root, rows)
    manifest = read_manifest(_prepare(root, meta).manifest)
    assert {r["label"] for r in manifest} == {"bird", "rain", "bird;rain", "bird;wind", "wind", "rain;wind"}
    train, val, test, names = build_task("csv", root, 0.25)
    assert names == ["bird", "rain", "wind"]
    assert len(train) + len(val) + len(test) == 30
    for ds in (train, val, test):
        assert ds.targets.sum(axis=0).min() >= 1  # every tag in every split
    x, y = val[0]
    assert x.shape == (4000,) and y.dtype == torch.float32 and y.shape == (3,)
    i = next(k for k, p in enumerate(val.paths) if p.decode().endswith(("/3.wav", "/9.wav", "/15.wav", "/21.wav",
                                                                      "/27.wav")))
    assert val[i][1].tolist() == [1.0, 0.0, 1.0]


def test_mixed_rates_and_channels_absolute_path_inside_root_accepted(tmp_path):
    root = tmp_path / "m"
    rows = [(f"a/{i}.wav", ("x", "y")[i % 2]) for i in range(12)]
    meta = make_csv(root, rows)
    text = meta.read_text().replace("a/0.wav", str(root / "a" / "0.wav"))
    meta.write_text(text)
    rows = read_manifest(_prepare(root, meta).manifest)
    assert {(r["sample_rate"], r["channels"]) for r in rows} == {(16000, 1), (22050, 2)}
    assert any(r["path"] == str(root / "a" / "0.wav") for r in rows)


@pytest.mark.parametrize("bad_row, header, message", [
    (("!../outside.wav", "x"), "path,label", r"line 14: path '\.\./outside\.wav' points outside the dataset folder"),
    (("!/etc/passwd.wav", "x"), "path,label", r"line 14: path '/etc/passwd\.wav' points outside"),
    (("!./a/0.wav", "y"), "path,label", r"line 14: a/0\.wav is listed a second time \(y; first on line 2: x\)"),
    (("!a/extra.wav", "X"), "path,label", r"labels differ only in case: 'X' \(line 14\) and 'x' \(line 2\)"),
    (("!a/extra.wav", ""), "path,label", r"line 14: a/extra\.wav has no label"),
    (("a/extra.wav", "x", "training"), "path,label,split", r"line 14: unknown split 'training'; use train, validation, test"),
])
def test_bad_rows_are_refused_naming_the_line(tmp_path, bad_row, header, message):
    root = tmp_path / "b"
    extra = [] if header == "path,label" else ["train"]
    rows = [(f"a/{i}.wav", ("x", "y")[i % 2], *(extra if i % 4 else ["test"] if header != "path,label" else []))
            for i in range(12)]
    meta = make_csv(root, [*rows, bad_row], header=header)
    with pytest.raises(DatasetLayoutError, match=message):
        _prepare(root, meta)


def test_missing_file_is_named_with_its_line_and_skippable(tmp_path):
    root = tmp_path / "m"
    meta = make_csv(root, [*((f"a/{i}.wav", ("x", "y")[i % 2]) for i in range(12)), ("!a/gone.wav", "x")])
    with pytest.raises(PrepareError, match=rf"{root / 'a' / 'gone.wav'}: listed in {meta} line 14 but missing"):
        _prepare(root, meta)
    assert _prepare(root, meta, skip_bad=True).items == 12


def test_partition_mistakes_are_refused(tmp_path):
    root = tmp_path / "p"
    rows = [(f"a/{i}.wav", "x", ("train", "test", "")[min(i, 2)], f"g{i % 3}") for i in range(6)]
    with pytest.raises(DatasetLayoutError, match=r"line 4: no split, while other rows give one"):
        _prepare(root, make_csv(root, rows, header="path,label,split,group"))
    rows = [(f"a/{i}.wav", "x", ("train", "test")[i % 2], "spk") for i in range(6)]
    with pytest.raises(DatasetLayoutError, match=r"line 3: group 'spk' is in test here and in train on line 2"):
        _prepare(root, make_csv(root, rows, header="path,label,split,group"))
    rows = [(f"a/{i}.wav", "x", "train") for i in range(6)]
    with pytest.raises(DatasetLayoutError, match=r"names only train; it needs train and test"):
        _prepare(root, make_csv(root, rows, header="path,label,split"))
    with pytest.raises(DatasetLayoutError, match=r"give a split column or a fold column, not both"):
        _prepare(root, make_csv(root, [], header="path,label,split,fold"))
    with pytest.raises(DatasetLayoutError, match=r"line 1: no column path or label \(the header has file, category"):
        _prepare(root, make_csv(root, [], header="file,category"))
    with pytest.raises(DatasetLayoutError, match=r"needs its file: --csv FILE"):
        CSV.prepare(root, progress=False)


def test_cli_prepare_csv(tmp_path, capsys):
    root = tmp_path / "c"
    meta = make_csv(root, [(f"a/{i}.wav", ("x", "y;z")[i % 2]) for i in range(10)])
    assert main(["data", "prepare", "csv", "--root", str(root), "--csv", str(meta), "--no-progress",
                 "--validation", "0.2", "--test", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "CSV dataset: 10 files, 3 classes" in out and "split: train 6, validation 2, test 2" in out
    assert "multi-label" in out
    assert main(["data", "prepare", "esc50", "--root", str(root), "--seed", "1"]) == 1
    assert "--seed: only for `helix data prepare folder|csv`" in capsys.readouterr().err
