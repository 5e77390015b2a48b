"""One way in and out for a model: the payload a checkpoint stores, and ``load_model(path)``.

Training (:meth:`helix.training.loop.Trainer`), inference (predict, embed, verify) and export all
describe a model with :func:`model_payload` and rebuild it with :func:`build_model` /
:func:`load_model`. The payload stores the *resolved* model config (registry defaults merged with the
run's options), so a checkpoint rebuilds the same network even if a later helix changes a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from helix.models.checkpoint import CheckpointError, load_model_file
from helix.models.registry import create_model, model_defaults


@dataclass
class LoadedModel:
    """A rebuilt network and what inference needs to feed it."""

    model: torch.nn.Module
    class_names: list[str]
    sample_rate: int
    """Hz the model was trained at; inputs are resampled to it."""
    clip_seconds: float | None
    """The training clip length (the default inference window)."""
    source: str
    multilabel: bool = False
    """Trained on label vectors (sigmoid per class, any number of labels per clip) rather than one class."""


def model_payload(name: str, num_classes: int, options: dict[str, Any], model: torch.nn.Module,
                  class_names: list[str], sample_rate: int, clip_seconds: float | None,
                  multilabel: bool = False) -> dict[str, Any]:
    """The model part of a checkpoint: registry name, resolved kwargs, classes, rate, weights, and
    ``multilabel`` (outputs are independent per-class sigmoids, not one softmax)."""
    kwargs = {**model_defaults(name), **dict(options)}
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):  # every field, defaults included
        kwargs.update({k: v for k, v in dataclasses.asdict(config).items() if k != "num_classes"})
    return {"model": {"name": name, "kwargs": kwargs, "num_classes": int(num_classes)},
            "class_names": list(class_names), "sample_rate": int(sample_rate),
            "clip_seconds": float(clip_seconds) if clip_seconds else None,
            "multilabel": bool(multilabel), "model_state": model.state_dict()}


def build_model(ckpt: dict, path: str | os.PathLike) -> LoadedModel:
    """Rebuild the network a checkpoint dict (read from ``path``, named in errors) describes."""
    try:
        spec = ckpt["model"]
        kwargs = dict(spec.get("kwargs") or {})
        if kwargs.get("scan_backend") == "triton":
            kwargs["scan_backend"] = "auto"  # same scan; Triton where it can run, the reference elsewhere
        model = create_model(spec["name"], int(spec["num_classes"]), **kwargs)
        model.load_state_dict(ckpt["model_state"])
        class_names = [str(c) for c in ckpt["class_names"]]
        if len(class_names) != int(spec["num_classes"]):
            raise ValueError(f"{len(class_names)} class names for {spec['num_classes']} classes")
        sample_rate = int(ckpt["sample_rate"])
        model_rate = getattr(getattr(model, "config", None), "sample_rate", sample_rate)
        if model_rate != sample_rate:
            raise ValueError(f"sample_rate {sample_rate} Hz differs from the model's {model_rate} Hz")
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        # wrong keys/shapes in the state dict or unknown model options: written by another version
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 400 else detail[:397] + "..."
        raise CheckpointError(f"checkpoint {path} cannot be loaded by this helix: {detail}") from None
    clip = ckpt.get("clip_seconds")
    return LoadedModel(model.eval(), class_names, sample_rate, float(clip) if clip else None, str(path),
                       multilabel=bool(ckpt.get("multilabel", False)))


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Rebuild a model from a ``.pt`` checkpoint, a helix ``.safetensors`` file or a pretrained folder
    (none can run code when read); CheckpointError, one line naming the file, on any problem."""
    return build_model(load_model_file(Path(path)), path)


__all__ = ["LoadedModel", "build_model", "load_model", "model_payload"]
