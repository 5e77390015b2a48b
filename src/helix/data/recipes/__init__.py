"""Corpus recipes: one module per corpus, each exposing ``RECIPE`` (a :class:`Recipe`).

    recipe = get_recipe("esc50")
    recipe.download("data/esc50")            # resumable, checked, unpacked, marked complete
    recipe.prepare("data/esc50")             # decode + check every file, write the manifest
    get_recipe("csv").prepare("mine", csv="mine/labels.csv")   # your own files (split drawn once)
    rows = recipe.read_manifest("data/esc50")
"""

from __future__ import annotations

import importlib

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helix.data.recipes.base import Recipe

__all__ = ["OWN_DATA", "DatasetLayoutError", "Item", "PrepareError", "PrepareResult", "Recipe", "get_recipe",
           "list_recipes"]

# name -> module; imported on first use so `helix --help` stays fast
_MODULES = {
    "esc50": "helix.data.recipes.esc50",
    "urbansound8k": "helix.data.recipes.urbansound8k",
    "speechcommands": "helix.data.recipes.speechcommands",
    "librispeech": "helix.data.recipes.librispeech",
    "voxpopuli": "helix.data.recipes.voxpopuli",
    # the user's own files: nothing to download, the split drawn at prepare
    "folder": "helix.data.recipes.folder",
    "csv": "helix.data.recipes.csv",
}
#: recipes over the user's own files rather than a published corpus
OWN_DATA = ("folder", "csv")


def list_recipes() -> list[str]:
    """Names accepted by :func:`get_recipe` and ``helix data``."""
    return list(_MODULES)


def get_recipe(name: str) -> Recipe:
    """The recipe of corpus ``name``; ValueError listing the known names otherwise."""
    try:
        module = _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(_MODULES)}") from None
    return importlib.import_module(module).RECIPE


_BASE_NAMES = ("DatasetLayoutError", "Item", "PrepareError", "PrepareResult", "Recipe")


def __getattr__(name: str):
    # the base classes pull in decoding (numpy, soundfile): loaded on first use, not by `helix --help`
    if name in _BASE_NAMES:
        from helix.data.recipes import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
