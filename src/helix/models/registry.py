"""Model registry (timm style): ``create_model(name, num_classes, **overrides)``, ``list_models()``."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from helix.models.aum import AUM_SIZES, AudioMamba, AuMConfig
from helix.models.backbone import HelixClassifier
from helix.models.config import ModelConfig

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}
_CONFIG_CLASSES: dict[str, type] = {}

from helix.names import BACKBONES, FRONTENDS


def register_model(name: str, defaults: dict, builder: Callable[..., nn.Module], config_class: type) -> None:
    """Add model ``name``: ``builder(num_classes=..., **options)`` with ``defaults`` under the options,
    which are fields of the dataclass ``config_class``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = builder
    _DEFAULTS[name] = defaults
    _CONFIG_CLASSES[name] = config_class


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict:
    _check_name(name)
    return dict(_DEFAULTS[name])


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def model_config_class(name: str) -> type:
    """The config dataclass whose fields are the options of model ``name``."""
    _check_name(name)
    return _CONFIG_CLASSES[name]


def check_model_options(name: str, options: dict, prefix: str = "") -> None:
    """Validate ``create_model`` options without building the network: unknown names (with a
    suggestion) and wrong types or values raise ValueError, keys shown with ``prefix``."""
    import difflib

    cls = model_config_class(name)
    known = set(cls.__dataclass_fields__) - {"num_classes"}
    unknown = sorted(set(options) - known)
    if unknown:
        close = [c for k in unknown for c in difflib.get_close_matches(k, known, n=1, cutoff=0.6)]
        hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
        raise ValueError(f"{name} has no option(s) {[prefix + k for k in unknown]}; {hint}valid: {sorted(known)}")
    try:
        cls(num_classes=2, **{**_DEFAULTS[name], **options})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: {prefix}{err}") from None


def create_model(name: str, num_classes: int, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` are fields of its config (ModelConfig or AuMConfig)."""
    _check_name(name)
    return _REGISTRY[name](num_classes=num_classes, **{**_DEFAULTS[name], **overrides})


def _helix_builder(**kwargs) -> HelixClassifier:
    unknown = set(kwargs) - ModelConfig.field_names()
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; valid: {sorted(ModelConfig.field_names())}")
    return HelixClassifier(ModelConfig(**kwargs))


def _aum_builder(**kwargs) -> AudioMamba:
    valid = set(AuMConfig.__dataclass_fields__)
    unknown = set(kwargs) - valid
    if unknown:
        raise ValueError(f"unknown Audio Mamba option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    return AudioMamba(AuMConfig(**kwargs))


for _backbone, _pattern in BACKBONES.items():
    for _frontend in FRONTENDS:
        register_model(f"{_backbone}_{_frontend}", {"pattern": _pattern, "frontend": _frontend}, _helix_builder,
                       ModelConfig)
for _size, (_d, _depth) in AUM_SIZES.items():
    register_model(f"aum_{_size}", {"d_model": _d, "depth": _depth}, _aum_builder, AuMConfig)


def scale_pattern(pattern: str, depth: int) -> str:
    """Same layer mix at another depth: each attention layer keeps its relative position
    (``scale_pattern("MMMAMM", 4) == "MMAM"``); all-M and all-A stay pure."""
    if set(pattern) == {"A"}:
        return "A" * depth
    out = ["M"] * depth
    for i, kind in enumerate(pattern):
        if kind == "A":
            out[min(i * depth // len(pattern), depth - 1)] = "A"
    return "".join(out)
