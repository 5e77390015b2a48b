"""Config I/O: YAML presets, ``key=value`` overrides and ``HELIX_OVERRIDES`` -> :class:`TrainConfig`.

YAML presets (``helix/configs/``) are serialised configs (only the fields that differ from the
defaults need to appear); the command line applies ``key=value`` overrides on top, with dotted keys
(``optim.lr=1e-3``) or, when the name is unique, bare ones (``lr=1e-3``). The environment variable
``HELIX_OVERRIDES`` (whitespace-separated ``key=value`` items, shell quoting allowed) is applied
last, so a documented command can be run verbatim on a tiny schedule.

    cfg = load_config("esc50", overrides=["epochs=10", "model.name=helix_mel"])
    HELIX_OVERRIDES="optim.epochs=1 model.num_layers=2" helix train --config esc50 --fold 1
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from helix.training.config import TrainConfig
from helix.training.presets import PACKAGE_PRESETS, list_presets, preset_dirs, resolve_preset  # noqa: F401

ENV_OVERRIDES = "HELIX_OVERRIDES"
"""Environment variable whose ``key=value`` items :func:`load_config` applies after the command line's."""


def config_from_dict(cls, data: dict, prefix: str = ""):
    """A config dataclass from a (nested) mapping, every value coerced to its annotated type."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        close = [c for k in unknown for c in difflib.get_close_matches(k, known, n=1, cutoff=0.6)]
        hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
        raise ValueError(f"unknown config field(s) {[prefix + k for k in unknown]}; {hint}known: {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = config_from_dict(hint, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to the annotated type, or explain why not."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: cannot interpret {value!r} as {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value  # YAML reads "1e-3" as a string
            if hint is int:
                if float(number) != int(float(number)):
                    raise ValueError
                return int(float(number))
            return float(number)
        except (TypeError, ValueError, OverflowError):  # int("inf") overflows
            raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans: a switch's words
            return "on" if value else "off"
        return str(value)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if args and origin is tuple and len(args) == len(value):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        return list(value) if origin is list else tuple(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings to a nested config dict (values parsed as YAML, then typed)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        path = _resolve_key(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"override {item!r}: the value is not valid YAML ({problem})") from None
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if isinstance(node.get(path[-1]), dict) and isinstance(value, dict):
            node[path[-1]] = {**node[path[-1]], **value}
        else:
            node[path[-1]] = value
    return data


def _resolve_key(key: str) -> list[str]:
    """``optim.lr`` -> [optim, lr]; a bare ``lr`` is found in whichever section defines it.
    Keys below a dict field (``model.overrides.d_model``) pass through unchecked."""
    fields = _field_paths(TrainConfig)
    if key in fields:
        return key.split(".")
    matches = [p for p in fields if p.split(".")[-1] == key]
    if len(matches) == 1:
        return matches[0].split(".")
    if len(matches) > 1:
        raise ValueError(f"override key {key!r} is ambiguous: use one of {matches}")
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in fields and (fields[head] is dict or typing.get_origin(fields[head]) is dict):
            return parts
    close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown config key {key!r}; {hint}known keys: {', '.join(sorted(fields))}")


def _field_paths(cls, prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_field_paths(hint, f"{prefix}{name}."))
        else:
            out[prefix + name] = hint
    return out


def env_overrides() -> list[str]:
    """The ``key=value`` items of ``$HELIX_OVERRIDES`` (split like a shell command line)."""
    text = os.environ.get(ENV_OVERRIDES, "")
    try:
        return shlex.split(text)
    except ValueError as err:
        raise ValueError(f"{ENV_OVERRIDES}={text!r} cannot be split into key=value items: {err}") from None


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; malformed YAML is a ValueError naming the file and line."""
    with open(path) as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{where}: malformed YAML: {problem}") from None


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the preset/YAML file (if any), then ``key=value`` overrides, then those of
    ``$HELIX_OVERRIDES``."""
    data: dict = {}
    source = "config"
    if name_or_path:
        path = resolve_preset(name_or_path)
        source = str(path)
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides or [])
    env = env_overrides()
    if env:
        try:
            data = apply_overrides(data, env)
        except ValueError as err:
            raise ValueError(f"{ENV_OVERRIDES}: {err}") from None
    try:
        return TrainConfig.from_dict(data)
    except TypeError as err:  # a list where a number belongs, etc.
        raise ValueError(f"invalid {source}: {err}") from None
    except ValueError as err:
        if name_or_path and str(err).startswith(("unknown config field", "config section")):
            # overrides never bring unknown fields (their keys are checked first): the file did
            raise ValueError(f"{source}: {err}") from None
        raise
