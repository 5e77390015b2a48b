"""The one list of names: backbones (with their layer patterns and display labels) and frontends.

Plain data with no imports, so every tier (frontends, models, reporting, commands) and ``helix
--help`` can read it. Registered model names are ``<backbone>_<frontend>`` (plus Audio Mamba's
``aum_<size>``, see :mod:`helix.models.aum`).
"""

BACKBONES = {"pure_mamba": "MMMMMM", "helix": "MMMAMM", "pure_attention": "AAAAAA"}
"""Backbone name -> the paper's layer pattern (M = BiMamba block, A = attention block)."""
BACKBONE_LABELS = {"pure_mamba": "Pure Mamba", "helix": "HELIX", "pure_attention": "Pure Attention"}
"""Backbone name -> the label tables and plots use."""
FRONTENDS = ("raw", "mel")
"""Raw waveform (Conv1d k=s=160 + LayerNorm) and 128-bin log-mel 16x16 patches."""


def split_model_name(name: str) -> tuple[str, str]:
    """``helix_raw`` -> (``helix``, ``raw``); names without a frontend suffix -> (name, "-")."""
    for frontend in FRONTENDS:
        if name.endswith("_" + frontend):
            return name[: -len(frontend) - 1], frontend
    return name, "-"
