"""Manifests: the one file that ``prepare`` writes and loading reads.

A manifest is a tab-separated text file, one audio file per row, with the columns of
:data:`MANIFEST_FIELDS`:

- ``path``: the audio file, stored relative to the dataset root (so a dataset folder can move).
- ``label``: the class name (a word, a sound category, a speaker id); class indices are the sorted
  order of the names (:func:`class_names`), derived from the data, never hard-coded. A multi-label
  file holds several names joined by ``;`` (:mod:`helix.data.labels`).
- ``split``: the split the corpus itself defines (``train``/``validation``/``test`` for Speech
  Commands, ``train``/``dev``/``test`` for VoxPopuli, the subset name for LibriSpeech), empty for
  k-fold corpora; for the
  user's own corpora the split given in their CSV or the one prepare drew (:mod:`helix.data.splits`).
- ``fold``: the predefined fold (1..K) of k-fold corpora (ESC-50, UrbanSound8K), 0 otherwise.
- ``speaker``: speaker id where the corpus has one (the ``group`` of a user's CSV), else empty.
- ``duration`` (s), ``sample_rate`` (Hz), ``frames``, ``channels``: measured by decoding the file.

The first line, ``#helix-manifest v1 root=<dir>``, names the root relative to the manifest's own
folder, so reading resolves every row against the root wherever the reader runs from. Paths are
compared as written, never with symlinks resolved: a symlinked folder inside the root that points
elsewhere stays a path under the root. Writes are atomic (temporary file + rename), so a manifest on
disk is always complete, and get the permissions the umask allows, like any new file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from helix.utils.io import atomic_write

__all__ = [
    "MANIFEST_FIELDS",
    "ManifestError",
    "atomic_write_text",
    "class_names",
    "read_manifest",
    "relative_to_root",
    "write_manifest",
]

MANIFEST_FIELDS = ("path", "label", "split", "fold", "speaker", "duration", "sample_rate", "frames", "channels")
_TYPES = {"fold": int, "duration": float, "sample_rate": int, "frames": int, "channels": int}
_HEADER = "#helix-manifest v1 root="


class ManifestError(ValueError):
    """A manifest that cannot be read: wrong header, wrong columns, or a malformed row."""


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`helix.utils.io.atomic_write`: never half-written,
    permissions from the umask."""
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return Path(path)


def relative_to_root(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` (absolute, or relative to the current folder) relative to ``root``, POSIX-style.

    Compared lexically (``os.path.abspath``), not with symlinks resolved, so a file reached through
    a symlinked folder inside the root is stored as it is seen there. ManifestError if the path
    lies outside the root.
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise ManifestError(f"{path} is not inside the dataset root {root}")
    return Path(rel).as_posix()


def write_manifest(path: str | os.PathLike, rows: Iterable[dict[str, Any]], root: str | os.PathLike) -> Path:
    """Write ``rows`` (dicts with every field of :data:`MANIFEST_FIELDS`) atomically to ``path``.

    Row paths are ordinary paths (absolute, or relative to the current folder, like ``root``)
    and must lie inside ``root``; they are stored relative to ``root``.
    """
    path = Path(path)
    rel_root = Path(os.path.relpath(os.path.abspath(root), os.path.abspath(path.parent))).as_posix()
    lines = [_HEADER + rel_root, "\t".join(MANIFEST_FIELDS)]
    for row in rows:
        values = dict(row)
        values["path"] = relative_to_root(values["path"], root)
        if isinstance(values.get("duration"), float):
            values["duration"] = f"{values['duration']:.6f}"
        cells = [str(values[k]) for k in MANIFEST_FIELDS]
        if any("\t" in c or "\n" in c for c in cells):
            raise ManifestError(f"manifest value contains a tab or newline: {cells}")
        lines.append("\t".join(cells))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a manifest; returns one dict per row with absolute ``path`` and typed numbers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        if not header.startswith(_HEADER):
            raise ManifestError(f"{path} is not a helix manifest (first line {header[:60]!r})")
        # lexical, like the write: ".." from <root>/helix is <root> even where helix/ is a symlink
        root = os.path.abspath(path.parent / header[len(_HEADER) :])
        columns = f.readline().rstrip("\n").split("\t")
        if tuple(columns) != MANIFEST_FIELDS:
            raise ManifestError(f"{path}: columns {columns} differ from {list(MANIFEST_FIELDS)}")
        rows = []
        for lineno, line in enumerate(f, start=3):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != len(MANIFEST_FIELDS):
                raise ManifestError(f"{path}:{lineno}: expected {len(MANIFEST_FIELDS)} columns, got {len(cells)}")
            row: dict[str, Any] = dict(zip(MANIFEST_FIELDS, cells))
            try:
                for key, cast in _TYPES.items():
                    row[key] = cast(row[key])
            except ValueError as err:
                raise ManifestError(f"{path}:{lineno}: {err}") from None
            row["path"] = os.path.join(root, row["path"])
            rows.append(row)
    if rows and not os.path.exists(rows[0]["path"]):
        _refuse_doubled_root(path, root, rows[0]["path"])
    return rows


def _refuse_doubled_root(path: Path, root: str, first: str) -> None:
    """Name the cause when a manifest comes from a helix that stored paths relative to the current folder.

    Those rows repeat the root's spelling (``data/esc50/ESC-50-master/...`` under ``data/esc50``):
    the file exists once a leading part of the stored path is dropped. One stat per part, and only
    when the first file is missing.
    """
    parts = Path(os.path.relpath(first, root)).parts
    for k in range(1, len(parts)):
        if os.path.exists(os.path.join(root, *parts[k:])):
            raise ManifestError(
                f"{path} was written by an older helix from a relative --root: its paths repeat the root "
                f"({'/'.join(parts[:k])}/...). Run `helix data prepare` for this root again"
            )


def class_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Sorted distinct non-empty label names of ``rows`` (``a;b`` counts as ``a`` and ``b``): index = class id."""
    return sorted({name for r in rows for name in r["label"].split(";") if name})
