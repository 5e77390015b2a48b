"""Checkpoint writes are atomic: a save that dies half-way leaves the previous file intact and no
temporary file behind."""

from __future__ import annotations

import pytest
import torch

import helix.models.checkpoint as ckpt

PAYLOAD = {"model": {"name": "m", "kwargs": {}, "num_classes": 2}, "class_names": ["a", "b"],
           "sample_rate": 16000, "clip_seconds": 1.0}


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {**PAYLOAD, "model_state": {"w": torch.ones(3)}, "step": 1})
    before = path.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt  # what a Ctrl-C or a kill between bytes looks like to Python

    monkeypatch.setattr(ckpt.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {**PAYLOAD, "model_state": {"w": torch.zeros(3)}, "step": 2})
    assert path.read_bytes() == before
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
