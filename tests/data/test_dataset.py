"""helix.data.dataset: clips, crops, loud failures, the DataLoader helper, build_task's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from helix.data.audio import AudioError
from helix.data.dataset import ClipDataset, build_dataloader
from helix.data.tasks import CORPUS_TASKS as TASKS
from helix.data.tasks import DEFAULT_CLIP_SECONDS, build_task
from helix.data.recipes import get_recipe

from .corpora import write_audio


def _rows(tmp_path, seconds=(1.0, 0.25), sr=16000):
    rows = []
    for i, s in enumerate(seconds):
        p = tmp_path / f"c{i}.wav"
        ramp = (np.arange(int(s * sr)) / (s * sr)).astype(np.float32)  # value = position in the file
        import soundfile as sf
        sf.write(p, ramp, sr, subtype="FLOAT")
        rows.append({"path": str(p), "label": "ab"[i % 2], "frames": len(ramp), "sample_rate": sr})
    return rows


def test_crops_are_random_in_training_and_centred_otherwise(tmp_path):
    rows = _rows(tmp_path)
    ev = ClipDataset(rows, ["a", "b"], 0.5)
    x, y = ev[0]
    assert x.shape == (8000,) and y == 0
    assert x[0].item() == pytest.approx(0.25, abs=1e-4)  # centre crop of a 1 s ramp starts at 0.25 s
    assert torch.equal(ev[0][0], x)
    tr = ClipDataset(rows, ["a", "b"], 0.5, train=True)
    torch.manual_seed(0)
    starts = {round(tr[0][0][0].item(), 4) for _ in range(20)}
    assert len(starts) > 5 and all(0 <= s <= 0.5 for s in starts)
    short, label = ev[1]
    assert label == 1 and short[:4000].max() > 0.9 and not short[4000:].any()


def test_unknown_label_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not among the 1 class names"):
        ClipDataset(_rows(tmp_path), ["a"], 0.5)


def test_unreadable_file_raises_never_silence(tmp_path):
    rows = _rows(tmp_path)
    ds = ClipDataset(rows, ["a", "b"], 0.5)
    (tmp_path / "c1.wav").unlink()
    with pytest.raises(AudioError, match=r"c1\.wav: file not found"):
        ds[1]
    write_audio(tmp_path / "c0.wav", 0.3, 16000)  # replaced after prepare: length differs
    with pytest.raises(AudioError, match=r"c0\.wav: has 4800 frames but the manifest recorded 16000"):
        ds[0]
    (tmp_path / "c0.wav").write_bytes(b"garbage!" * 100)
    with pytest.raises(AudioError, match=r"c0\.wav: cannot decode"):
        ds[0]


def test_dataloader_batches_with_workers(tmp_path):
    rows = _rows(tmp_path, seconds=(0.5,) * 10)
    ds = ClipDataset(rows, ["a", "b"], 0.5)
    loader = build_dataloader(ds, batch_size=4, num_workers=2, shuffle=True, seed=3)
    assert loader.persistent_workers and loader.num_workers == 2
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 8000), (4, 8000), (2, 8000)]
    assert batches[0][1].dtype == torch.int64
    assert not loader.pin_memory or torch.cuda.is_available()
    order = [b[1].tolist() for b in build_dataloader(ds, batch_size=4, num_workers=0, shuffle=True, seed=3)]
    assert order == [b[1].tolist() for b in build_dataloader(ds, batch_size=4, num_workers=0, shuffle=True, seed=3)]


def test_distributed_sampler_when_a_process_group_exists(tmp_path):
    ds = ClipDataset(_rows(tmp_path, seconds=(0.1,) * 4), ["a", "b"], 0.1)
    assert not isinstance(build_dataloader(ds, num_workers=0).sampler, DistributedSampler)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(ds, batch_size=2, num_workers=0, shuffle=True)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
        assert sum(len(b[1]) for b in loader) == 4
    finally:
        dist.destroy_process_group()


def test_build_task_contract(tmp_path, esc50_root):
    assert set(TASKS) == set(DEFAULT_CLIP_SECONDS) == {
        "esc50", "urbansound8k", "speechcommands", "concat_speechcommands", "librispeech", "voxpopuli"}
    with pytest.raises(ValueError, match="unknown dataset 'esc51'"):
        build_task("esc51", esc50_root, 5.0)
    with pytest.raises(FileNotFoundError, match=f"not prepared.*helix data prepare esc50 --root {esc50_root}"):
        build_task("esc50", esc50_root, 5.0)
    get_recipe("esc50").prepare(esc50_root, progress=False)
    with pytest.raises(ValueError, match=r"esc50 does not take \['n_clips'\]"):
        build_task("esc50", esc50_root, 5.0, n_clips=3)
    train, val, test, names = build_task("esc50", esc50_root, None, 16000)  # default 5 s, fold 1
    assert train[0][0].shape == (80000,) and len(test) == 3
    assert build_task("esc50", esc50_root, 1.0, sample_rate=8000)[0][0][0].shape == (8000,)
