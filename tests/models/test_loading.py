"""helix.models.load_model: the one path from a checkpoint (or shared weights) back to a network."""

from __future__ import annotations

import pytest
import torch

from helix.models import create_model, load_model
from helix.models.checkpoint import CheckpointError, save_checkpoint, save_safetensors
from helix.models.loading import model_payload


def _tiny(tmp_path):
    torch.manual_seed(0)
    model = create_model("helix_raw", 3, d_model=16, d_state=4, pattern="MA").eval()
    payload = model_payload("helix_raw", 3, {"d_model": 16, "d_state": 4, "pattern": "MA"}, model,
                            ["a", "b", "c"], 16000, 1.0)
    return model, payload


def test_payload_stores_the_resolved_config_and_rebuilds_the_same_network(tmp_path):
    model, payload = _tiny(tmp_path)
    kwargs = payload["model"]["kwargs"]
    # every ModelConfig field is stored, defaults included (not only the run's overrides)
    assert kwargs["frontend"] == "raw" and kwargs["n_heads"] == model.config.n_heads
    assert kwargs["d_ffn"] == model.config.d_ffn and "num_classes" not in kwargs
    path = save_checkpoint(tmp_path / "m.pt", payload)
    x = torch.randn(2, 3200)
    for source in (path, save_safetensors(tmp_path / "m.safetensors", payload)):
        loaded = load_model(source)
        assert loaded.class_names == ["a", "b", "c"] and loaded.sample_rate == 16000 and loaded.clip_seconds == 1.0
        torch.testing.assert_close(loaded.model(x), model(x))


def test_weights_that_do_not_fit_the_description_name_the_file(tmp_path):
    _, payload = _tiny(tmp_path)
    payload["model"]["kwargs"]["d_model"] = 32
    path = save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=r"m\.pt cannot be loaded by this helix"):
        load_model(path)
