"""Preset lookup: cheap (no torch), so ``helix --help`` can list the presets.

A preset is a YAML file: a user's ``./configs/<name>.yaml`` in the working directory first (it shadows
a shipped preset of the same name), then the package's ``helix/configs/<name>.yaml`` (package data).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_PRESETS = Path(__file__).resolve().parents[1] / "configs"
"""The presets shipped inside the package (``helix/configs/*.yaml``, package data of the wheel)."""


def preset_dirs() -> tuple[Path, ...]:
    """Where preset names are looked up: ``./configs`` in the working directory first (a user's own
    presets there shadow the shipped ones of the same name), then the package's presets."""
    return Path.cwd() / "configs", PACKAGE_PRESETS


def resolve_preset(name_or_path: str) -> Path:
    """A YAML path, or a preset name looked up in ``./configs`` then the package's presets."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    for folder in preset_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no preset named {name_or_path!r}; available: {', '.join(list_presets()) or 'none found'} "
        f"(searched {', '.join(str(d) for d in preset_dirs())})"
    )


def list_presets() -> list[str]:
    names = set()
    for folder in preset_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)
