"""helix.data.derived: Concat Speech Commands and stitched closed-set speaker identification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helix.data.audio import load_audio
from helix.data.tasks import build_task
from helix.data.derived import split_by_speaker
from helix.data.recipes import get_recipe

from .corpora import make_voxpopuli_processed


def test_concat_clips(sc_root):
    get_recipe("speechcommands").prepare(sc_root, progress=False)
    train, val, test, names = build_task("concat_speechcommands", sc_root, 3.0, n_clips=3)
    assert (len(train), len(val), len(test)) == (12, 3, 3)
    x, y = val[1]
    assert x.shape == (48000,) and y == val.base[1][1]  # label of the first clip
    assert torch.equal(x[:16000], val.base[1][0])
    assert torch.equal(val[1][0], x)  # evaluation inputs are fixed
    # followers come from the same split: each 1 s piece equals one of the split's clips
    pieces = [val.base[j][0] for j in range(len(val.base))]
    for k in range(1, 3):
        assert any(torch.equal(x[k * 16000:(k + 1) * 16000], p) for p in pieces)
    again = build_task("concat_speechcommands", sc_root, 3.0, n_clips=3)[1]
    assert torch.equal(again[2][0], val[2][0])  # same seed, same evaluation set
    torch.manual_seed(0)
    draws = {tuple(train[0][0][16000::1237].tolist()) for _ in range(8)}
    assert len(draws) > 1  # training followers are redrawn
    assert build_task("concat_speechcommands", sc_root, None)[0][0][0].shape == (160000,)


def test_split_by_speaker_is_closed_set_and_order_free():
    speakers = ["a"] * 10 + ["b"] * 20 + ["c"] * 2
    keys = [f"u{i:03d}" for i in range(len(speakers))]
    part = split_by_speaker(speakers, keys)
    a, b = part[:10], part[10:30]
    assert [int((a == k).sum()) for k in (0, 1, 2)] == [7, 1, 2]
    assert [int((b == k).sum()) for k in (0, 1, 2)] == [14, 2, 4]
    assert (part[30:] == -1).all()  # 2 utterances cannot cover train, validation and test
    perm = np.random.default_rng(1).permutation(len(speakers))
    shuffled = split_by_speaker([speakers[i] for i in perm], [keys[i] for i in perm])
    assert (shuffled == part[perm]).all()
    assert (split_by_speaker(speakers, keys, seed=1) != part).any()
    with pytest.raises(ValueError, match="fractions"):
        split_by_speaker(speakers, keys, test_fraction=0.5, val_fraction=0.5)


def test_stitched_speaker_clips(libri_root):
    get_recipe("librispeech").prepare(libri_root, progress=False)
    train, val, test, names = build_task("librispeech", libri_root, 1.2)
    assert names == ["103", "19", "26"]
    # 6 utterances of 0.5 s per speaker: 4 train (2 s -> 1 clip), 1 val, 1 test (0.5 s, wraps)
    assert (len(train), len(val), len(test)) == (3, 3, 3)
    seen = {}
    for ds in (train, val, test):
        for k in range(len(names)):
            for i in np.flatnonzero(ds.item_speaker == k):
                paths = {p.decode() for p in ds.paths[ds.first[k]:ds.first[k + 1]]}
                assert all(f"/{names[k]}/" in p for p in paths)
                seen.setdefault(k, []).append(paths)
    for k in seen:  # train, validation and test use different utterances of the same speaker
        assert not (seen[k][0] & seen[k][1]) and not (seen[k][0] & seen[k][2]) and not (seen[k][1] & seen[k][2])
    x, y = test[0]
    assert x.shape == (19200,) and test.item_speaker[0] == y
    utt = load_audio(test.paths[0].decode())
    # a speaker with 0.5 s of test audio: the clip repeats it to fill 1.2 s
    np.testing.assert_allclose(x[:8000].numpy(), utt, atol=1e-6)
    np.testing.assert_allclose(x[8000:16000].numpy(), utt, atol=1e-6)
    assert torch.equal(test[0][0], x)


def test_stitching_crosses_utterance_boundaries_in_order(libri_root):
    get_recipe("librispeech").prepare(libri_root, progress=False)
    train, _, _, _ = build_task("librispeech", libri_root, 1.2, val_fraction=0.0, test_fraction=0.2)
    k = 0
    lo, hi = train.first[k], train.first[k + 1]
    stream = np.concatenate([load_audio(p.decode()) for p in train.paths[lo:hi]])
    stream = np.concatenate([stream, stream])
    torch.manual_seed(1)
    for _ in range(5):
        i = int(np.flatnonzero(train.item_speaker == k)[0])
        x = train[i][0].numpy()
        # a training clip is a window of the speaker's stream at a random start
        candidates = np.flatnonzero(np.abs(stream[: train.totals[k]] - x[0]) < 1e-6)
        assert any(np.allclose(stream[s:s + len(x)], x, atol=1e-6) for s in candidates)


def test_voxpopuli_speaker_task(tmp_path):
    root = make_voxpopuli_processed(tmp_path / "vox")
    get_recipe("voxpopuli").prepare(root, progress=False)
    train, val, test, names = build_task("voxpopuli", root, 2.0)
    assert names == ["1001", "1002", "1003"]
    assert len(train) == len(val) == len(test) == 3
    assert train[0][0].shape == (32000,)
    with pytest.raises(ValueError, match="no speaker has the 50 utterances"):
        build_task("voxpopuli", root, 2.0, min_utterances=50)


def test_stitching_files_at_other_rates(tmp_path):
    from helix.data.derived import StitchedSpeakerDataset

    from .corpora import write_audio

    rows = []
    for n, (sr, sec) in enumerate([(8000, 0.3001), (22050, 0.21), (8000, 0.1337)]):
        p = write_audio(tmp_path / f"u{n}.flac", sec, sr, freq=300)
        rows.append({"path": str(p), "frames": int(round(sec * sr)), "sample_rate": sr})
    ds = StitchedSpeakerDataset(rows, [[0, 1, 2]], ["s"], 0.25, 16000)
    torch.manual_seed(0)
    train = StitchedSpeakerDataset(rows, [[0, 1, 2]], ["s"], 0.25, 16000, train=True)
    # every start position, including the last sample of an upsampled file, reads cleanly
    for pos in range(0, int(ds.totals[0]), 97):
        assert ds._read(0, pos).shape == (4000,)
    assert len(ds) == 2 and ds[1][0].shape == (4000,) and train[0][0].shape == (4000,)
    assert ds._read(0, int(ds.totals[0]) - 1).shape == (4000,)
