"""ESC-50 (Piczak, 2015): 2,000 five-second environmental clips, 50 classes, 5 predefined folds.

Source: the public GitHub archive of karolpiczak/ESC-50, which unpacks to ``ESC-50-master/`` with
``audio/*.wav`` and ``meta/esc50.csv`` (columns filename, fold, target, category, esc10, src_file,
take). GitHub generates the archive on the fly: it publishes no checksum and cannot resume, so an
interrupted download of it restarts (it is ~600 MB).

Folds come from ``meta/esc50.csv``; the label is the ``category`` column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from helix.data.download import Source
from helix.data.recipes.base import DatasetLayoutError, Item, ListedOnce, Recipe, find_corpus, listed_path, parse_fold

URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
META = "meta/esc50.csv"
FOLDS = 5


class ESC50(Recipe):
    name = "esc50"
    title = "ESC-50"
    layout_help = "ESC-50-master/meta/esc50.csv and ESC-50-master/audio/*.wav (or those two folders in --root)"

    def sources(self, subset):
        return [Source(URL, "ESC-50-master.zip")]

    def locate(self, root: Path, subset) -> Path:
        corpus = find_corpus(root, META, ["ESC-50-master", "ESC-50"])
        if corpus is None:
            raise self.layout_error(root, subset, f"no {META}")
        if not (corpus / "audio").is_dir():
            raise self.layout_error(root, subset, f"{corpus / META} exists but {corpus / 'audio'} does not")
        return corpus

    def list_items(self, corpus: Path, subset):
        items, bad = [], []
        meta = corpus / META
        with open(meta, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = {"filename", "fold", "category"}
            if not need <= set(reader.fieldnames or ()):
                raise DatasetLayoutError(f"{meta} lacks columns {sorted(need - set(reader.fieldnames or ()))}")
            listed = ListedOnce(meta)
            for lineno, row in enumerate(reader, start=2):
                path = listed_path(corpus / "audio", row["filename"], meta, lineno)
                fold = parse_fold(row["fold"], FOLDS, meta, lineno)
                listed.add(row["filename"], lineno, f"fold {fold}, {row['category']}")
                if not path.exists():  # a FIFO or folder in its place is refused by the check, by name
                    bad.append((str(path), f"listed in {meta} line {lineno} but missing"))
                    continue
                items.append(Item(str(path), row["category"], fold=fold))
        return items, bad


RECIPE = ESC50()
