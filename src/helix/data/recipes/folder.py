"""Your own sounds in class folders: ``DIR/<class>/**/*.{wav,flac,ogg,mp3}``, the label is the folder name.

    helix data prepare folder --root DIR [--seed 0] [--validation 0.1] [--test 0.1] [--skip-bad]

Files may sit at any depth under their class folder and may differ in sample rate, channel count
and length (they are mixed to mono and resampled when loaded). Hidden files and folders (``.*``,
e.g. macOS ``._x.wav``) and ``DIR/helix/`` (helix's own outputs) are not read. A seeded stratified
split is drawn once and recorded in the manifest (:mod:`helix.data.recipes.own`).

Refused, by name: two class folders that differ only in case (``Dog``, ``dog``); a class name with
``;``; a class with too few files to reach train, validation and test. Named as bad files (stop, or
left out with ``--skip-bad``): audio directly in ``DIR`` (no class), a class folder without audio,
and every file that does not decode.
"""

from __future__ import annotations

import os
from pathlib import Path

from helix.data.labels import case_clashes
from helix.data.recipes.base import DatasetLayoutError, Item
from helix.data.recipes.own import OwnRecipe, check_label_names

EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` at any depth, sorted; symlinked folders followed once."""
    out, seen = [], set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(top) / f for f in files if not f.startswith(".") and f.lower().endswith(EXTENSIONS)]
    return sorted(out)


class Folder(OwnRecipe):
    name = "folder"
    title = "audio folder"
    layout_help = "one folder per class: DIR/<class>/**/*.wav (also .flac, .ogg, .mp3)"

    def list_items(self, corpus: Path, subset):
        entries = sorted(p for p in corpus.iterdir() if not p.name.startswith(".") and p.name != "helix")
        classes = [p for p in entries if p.is_dir()]
        check_label_names([p.name for p in classes], str(corpus))
        clashes = case_clashes(p.name for p in classes)
        if clashes:
            shown = "; ".join(" and ".join(c) for c in clashes)
            raise DatasetLayoutError(f"{corpus}: class folders differ only in case ({shown}); merge them into "
                                     "one folder or rename one")
        bad = [(str(p), "audio file directly in the dataset folder: put it in its class folder")
               for p in entries if p.is_file() and p.name.lower().endswith(EXTENSIONS)]
        items = []
        for folder in classes:
            files = _audio_files(folder)
            if not files:
                bad.append((str(folder), f"class folder holds no audio files ({', '.join(EXTENSIONS)})"))
            items += [Item(str(f), folder.name) for f in files]
        return items, bad


RECIPE = Folder()
