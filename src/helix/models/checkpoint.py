"""Checkpoints and shared weights: atomic writes, loads that can never run code.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)``:
it may hold only tensors and plain values (str, int, float, bool, None, lists, tuples, dicts), so
a checkpoint from someone else cannot run code when it is opened (a pickle that names any other
Python object is refused, naming the file). The keys every consumer may rely on:

- ``format`` (int): :data:`CHECKPOINT_FORMAT`; a different value is refused with a clear message.
- ``helix_version`` (str): the library version that wrote it.
- ``model`` (dict): ``{"name": registry name, "kwargs": create_model overrides, "num_classes": int}``
  -- enough to rebuild the network with :func:`helix.models.create_model`.
- ``class_names`` (list[str]): label names, index = class id.
- ``sample_rate`` (int) and ``clip_seconds`` (float): what the model was trained on.
- ``multilabel`` (bool, optional, default False): per-class sigmoid outputs (tagging), not a softmax.
- ``model_state``: the model's ``state_dict``.
- optional training state: ``config``, ``optimizer_state``, ``scheduler_state``, ``scaler_state``,
  ``epoch``, ``step``, ``rng_state``, ``metrics``.

Weights meant to be shared are better written as safetensors (no pickle at all):

- a ``.safetensors`` file whose metadata key ``helix`` holds the JSON of :func:`model_config`;
- a ``save_pretrained``-style folder: ``config.json`` (the same JSON) + ``model.safetensors``.

:func:`load_model_file` reads all three (``helix.load`` uses it). Writes go through
:mod:`helix.utils.io` (temporary file, fsync, rename), so a run killed mid-write leaves the
previous file intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helix.utils.io import atomic_write

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model", "class_names", "sample_rate", "model_state")
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
SAFETENSORS_KEY = "helix"
"""Metadata key of a helix .safetensors file; its value is the JSON of :func:`model_config`."""
_PLAIN = (str, int, float, bool, type(None), bytes, torch.Tensor, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupted, unsafe, or from an incompatible version."""


# ---------------------------------------------------------------------------- writing
def plain_payload(obj: Any, where: str = "payload") -> Any:
    """``obj`` with NumPy scalars turned into Python numbers; raises TypeError (naming the key) for
    anything ``torch.load(weights_only=True)`` would refuse. Containers are copied only when a
    value inside them changes, so a state_dict keeps its ``_metadata``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        new = {k: plain_payload(v, f"{where}[{k!r}]") for k, v in obj.items()}
        bad = [k for k in obj if not isinstance(k, (str, int))]
        if bad:
            raise TypeError(f"checkpoint {where} has a key of type {type(bad[0]).__name__}; only str/int keys")
        return obj if all(new[k] is obj[k] for k in obj) else new
    if isinstance(obj, (list, tuple)):
        new = [plain_payload(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return new if isinstance(obj, list) else tuple(new)
    raise TypeError(f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints hold "
                    "only tensors and plain values (str, int, float, bool, None, list, tuple, dict)")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any],
                    inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Atomically write ``payload`` to ``path`` (adds ``format`` and ``helix_version``).

    Raises TypeError for a value that a safe load could not read back, ValueError when ``path`` is
    one of ``inputs``.
    """
    from helix.version import __version__

    payload = plain_payload({"format": CHECKPOINT_FORMAT, "helix_version": __version__, **payload})
    with atomic_write(path, "wb", inputs, what="checkpoint") as f:
        torch.save(payload, f)
    return Path(path)


def model_config(ckpt: dict) -> dict:
    """The JSON-ready description of a checkpoint's model: everything inference needs but the weights.

    ``model.kwargs`` are resolved (registry defaults + the checkpoint's overrides), so the file
    rebuilds the same network even if a later helix changes a default.
    """
    from helix.version import __version__
    from helix.models import model_defaults

    spec = ckpt["model"]
    kwargs = {**model_defaults(spec["name"]), **dict(spec.get("kwargs") or {})}
    clip = ckpt.get("clip_seconds")
    return {"format": "helix-model", "format_version": CHECKPOINT_FORMAT, "helix_version": __version__,
            "model": {"name": spec["name"], "kwargs": kwargs, "num_classes": int(spec["num_classes"])},
            "num_classes": int(spec["num_classes"]), "class_names": [str(c) for c in ckpt["class_names"]],
            "sample_rate": int(ckpt["sample_rate"]), "clip_seconds": float(clip) if clip else None,
            "multilabel": bool(ckpt.get("multilabel", False))}


def _weights(state: dict) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied or viewed weights): give each its own copy
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_safetensors(path: str | os.PathLike, ckpt: dict, inputs: tuple = ()) -> Path:
    """Write a checkpoint's weights to one ``.safetensors`` file with :func:`model_config` as metadata."""
    from safetensors.torch import save

    config = model_config(ckpt)
    data = save(_weights(ckpt["model_state"]), metadata={SAFETENSORS_KEY: json.dumps(config)})
    with atomic_write(path, "wb", inputs, what="safetensors file") as f:
        f.write(data)
    return Path(path)


def save_pretrained(folder: str | os.PathLike, ckpt: dict, inputs: tuple = ()) -> Path:
    """Write ``folder/config.json`` + ``folder/model.safetensors`` (weights first: the config marks
    a complete folder)."""
    from helix.utils.io import check_output

    folder = check_output(folder, inputs, what="model folder", folder=True)
    save_safetensors(folder / WEIGHTS_NAME, ckpt, inputs)
    with atomic_write(folder / CONFIG_NAME, "w", inputs, what="model config") as f:
        f.write(json.dumps(model_config(ckpt), indent=1) + "\n")
    return folder


# ---------------------------------------------------------------------------- reading
def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a ``torch.save`` checkpoint with ``weights_only=True``; raises
    :class:`CheckpointError` (one line, naming the file) on any problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the errors below say enough
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"checkpoint {path} is unsafe or not a helix checkpoint: it names the Python object "
                f"{found.group(1)}, and loading it could run code; helix loads only tensors and plain values "
                "(weights_only=True)") from None
        found = re.search(r"Unsupported operand (\d+)", str(err))
        reason = f"pickle opcode {found.group(1)} is not allowed in a weights-only load" if found else _one_line(err)
        raise CheckpointError(f"checkpoint {path} is corrupted or not a helix checkpoint ({reason})") from None
    except Exception as err:  # torch raises many types for truncated/garbage files
        raise CheckpointError(f"checkpoint {path} is corrupted or not a helix checkpoint "
                              f"({type(err).__name__}: {_one_line(err)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} is not a helix checkpoint (found {type(payload).__name__})")
    fmt = payload.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {fmt!r} (written by helix {payload.get('helix_version', '?')}); "
            f"this helix reads format {CHECKPOINT_FORMAT}. Re-export it with a matching helix version.")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required keys {missing}")
    check_model_spec(payload, path)
    return payload


def check_model_spec(ckpt: dict, path: str | os.PathLike) -> None:
    """Types of the keys inference reads; CheckpointError naming the file and key otherwise."""
    spec = ckpt.get("model")
    problems = []
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        problems.append("'model' must be a dict with a 'name' string")
    else:
        if not isinstance(spec.get("num_classes"), int) or spec["num_classes"] < 1:
            problems.append(f"'model.num_classes' must be a positive int, got {spec.get('num_classes')!r}")
        if not isinstance(spec.get("kwargs") or {}, dict):
            problems.append("'model.kwargs' must be a dict")
    names = ckpt.get("class_names")
    if not isinstance(names, (list, tuple)) or not names:
        problems.append("'class_names' must be a non-empty list")
    rate = ckpt.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        problems.append(f"'sample_rate' must be a positive int, got {rate!r}")
    clip = ckpt.get("clip_seconds")
    if clip is not None and (not isinstance(clip, (int, float)) or not np.isfinite(clip) or clip <= 0):
        problems.append(f"'clip_seconds' must be a positive number or null, got {clip!r}")
    if not isinstance(ckpt.get("model_state"), dict):
        problems.append("'model_state' must be a dict of tensors")
    if problems:
        raise CheckpointError(f"checkpoint {path} is not a valid helix checkpoint: {'; '.join(problems)}")


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def _from_config(config: Any, weights: dict, source: Path) -> dict:
    if not isinstance(config, dict) or config.get("format") != "helix-model":
        raise CheckpointError(f"{source} is not a helix model description (no \"format\": \"helix-model\")")
    version = config.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} has format_version {version!r} (written by helix "
                              f"{config.get('helix_version', '?')}); this helix reads {CHECKPOINT_FORMAT}")
    missing = [k for k in ("model", "class_names", "sample_rate") if k not in config]
    if missing:
        raise CheckpointError(f"{source} lacks required keys {missing}")
    ckpt = {"format": CHECKPOINT_FORMAT, "helix_version": config.get("helix_version"), "model": config["model"],
            "class_names": config["class_names"], "sample_rate": config["sample_rate"],
            "clip_seconds": config.get("clip_seconds"), "multilabel": bool(config.get("multilabel", False)),
            "model_state": weights}
    check_model_spec(ckpt, source)
    return ckpt


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # the Rust reader raises its own error types for damaged files
        raise CheckpointError(f"safetensors file {path} is corrupted ({type(err).__name__}: {_one_line(err)})") from None
    return metadata, weights


def load_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read what inference needs from a ``.pt`` checkpoint, a helix ``.safetensors`` file or a
    ``save_pretrained`` folder, as a checkpoint-shaped dict (no training state). Never unpickles
    anything but tensors and plain values."""
    path = Path(path)
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"model folder {path} needs {CONFIG_NAME} and {WEIGHTS_NAME} (as written by "
                                  "`helix export --format pretrained`)")
        try:
            config = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{config_path} is not valid JSON ({_one_line(err)})") from None
        return _from_config(config, _read_safetensors(weights_path)[1], config_path)
    if path.is_file() and is_safetensors(path):
        metadata, weights = _read_safetensors(path)
        if SAFETENSORS_KEY not in metadata:
            raise CheckpointError(f"safetensors file {path} has no '{SAFETENSORS_KEY}' metadata: it was not written "
                                  "by `helix export --format safetensors`, so the model it holds is unknown")
        try:
            config = json.loads(metadata[SAFETENSORS_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"safetensors file {path}: its '{SAFETENSORS_KEY}' metadata is not JSON "
                                  f"({_one_line(err)})") from None
        return _from_config(config, weights, path)
    return load_checkpoint(path, map_location="cpu")


__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "check_model_spec", "is_safetensors",
           "load_checkpoint", "load_model_file", "model_config", "plain_payload", "save_checkpoint",
           "save_pretrained", "save_safetensors"]
