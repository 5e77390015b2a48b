"""UrbanSound8K (Salamon et al., 2014): 8,732 urban sound excerpts (<= 4 s), 10 classes, 10 folds.

Source: Zenodo record 1203745, ``UrbanSound8K.tar.gz`` (md5 published on the record). It unpacks to
``UrbanSound8K/audio/fold<k>/*.wav`` and ``UrbanSound8K/metadata/UrbanSound8K.csv`` (columns
slice_file_name, fsID, start, end, salience, fold, classID, class). The excerpts keep the sample
rate, bit depth and channel count of their Freesound originals; loading resamples and mixes down.

Folds come from the CSV; the label is the ``class`` column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from helix.data.download import Source
from helix.data.recipes.base import DatasetLayoutError, Item, ListedOnce, Recipe, find_corpus, listed_path, parse_fold

URL = "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz"
MD5 = "9aa69802bbf37fb986f71ec1483a196e"
META = "metadata/UrbanSound8K.csv"
FOLDS = 10


class UrbanSound8K(Recipe):
    name = "urbansound8k"
    title = "UrbanSound8K"
    layout_help = "UrbanSound8K/metadata/UrbanSound8K.csv and UrbanSound8K/audio/fold1..fold10/*.wav"

    def sources(self, subset):
        return [Source(URL, "UrbanSound8K.tar.gz", md5=MD5)]

    def locate(self, root: Path, subset) -> Path:
        corpus = find_corpus(root, META, ["UrbanSound8K"])
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
            need = {"slice_file_name", "fold", "class"}
            if not need <= set(reader.fieldnames or ()):
                raise DatasetLayoutError(f"{meta} lacks columns {sorted(need - set(reader.fieldnames or ()))}")
            listed = ListedOnce(meta)
            for lineno, row in enumerate(reader, start=2):
                fold = parse_fold(row["fold"], FOLDS, meta, lineno)
                path = listed_path(corpus / "audio" / f"fold{fold}", row["slice_file_name"], meta, lineno)
                listed.add(row["slice_file_name"], lineno, f"fold {fold}, {row['class']}")
                if not path.exists():
                    bad.append((str(path), f"listed in {meta} line {lineno} but missing"))
                    continue
                items.append(Item(str(path), row["class"], fold=fold))
        return items, bad


RECIPE = UrbanSound8K()
