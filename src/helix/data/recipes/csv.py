"""Your own sounds listed in a CSV file: columns ``path,label`` and optionally ``split`` or ``fold``, ``group``.

    helix data prepare csv --root DIR --csv FILE [--seed 0] [--validation 0.1] [--test 0.1] [--skip-bad]

- ``path``: the audio file, relative to ``DIR`` (an absolute path must lie inside ``DIR``).
- ``label``: the class name, or several joined by ``;`` for multi-label tagging (``bird;rain``).
- ``split`` (optional): ``train``, ``validation`` or ``test`` on every row; with only ``train`` and
  ``test`` given, prepare draws validation from train. Without it prepare draws a seeded,
  stratified split once and records it in the manifest (:mod:`helix.data.recipes.own`).
- ``fold`` (optional, instead of ``split``): predefined folds 1..K (K >= 3) for cross-validation.
- ``group`` (optional): speaker, recording or session id; a group is kept within one split or fold.

Other columns are ignored. Refused, naming the CSV line: a path outside ``DIR``, a path listed twice,
an empty label, labels that differ only in case, an unknown split name, a row with a split while
another has none, a group in two splits. Named as bad files (stop, or left out with ``--skip-bad``):
a listed file that is missing, and every file that does not decode.
"""

from __future__ import annotations

import csv
import os
import posixpath
from pathlib import Path

from helix.data.labels import case_clashes, join_labels, split_label
from helix.data.recipes.base import DatasetLayoutError, Item, ListedOnce
from helix.data.recipes.own import OwnRecipe, check_label_names
from helix.data.splits import SPLITS


def _inside(root: Path, name: str, meta: Path, lineno: int) -> str:
    """``name`` as a normalised POSIX path relative to ``root``; refused if it leaves the root."""
    if not name:
        raise DatasetLayoutError(f"{meta} line {lineno}: empty path")
    rel = os.path.relpath(os.path.abspath(name), os.path.abspath(root)) if os.path.isabs(name) else name
    rel = posixpath.normpath(rel.replace(os.sep, "/"))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + "/") or posixpath.isabs(rel):
        raise DatasetLayoutError(f"{meta} line {lineno}: path {name!r} points outside the dataset folder {root}; "
                                 "the CSV may only name files inside it")
    return rel


class CSVRecipe(OwnRecipe):
    name = "csv"
    title = "CSV dataset"
    layout_help = "a CSV file with columns path,label[,split|fold][,group], paths relative to DIR"
    #: the CSV file (``--csv``)
    csv: str | None = None

    def command(self, verb: str, root, subset=None) -> str:
        return super().command(verb, root, subset) + (f" --csv {self.csv}" if self.csv else " --csv FILE")

    def list_items(self, corpus: Path, subset):
        if not self.csv:
            raise DatasetLayoutError("the csv dataset needs its file: --csv FILE (columns path,label, "
                                     "optionally split or fold, and group)")
        meta = Path(self.csv)
        if not meta.is_file():
            raise DatasetLayoutError(f"{meta}: CSV file not found")
        rows = self._read(meta, corpus)
        items, bad = [], []
        for lineno, rel, label, split, fold, group in rows:
            path = corpus / rel
            if not path.exists():  # a folder or FIFO in its place reaches the audio check, by name
                bad.append((str(path), f"listed in {meta} line {lineno} but missing"))
                continue
            items.append(Item(str(path), label, split=split, fold=fold, speaker=group))
        return items, bad

    def _read(self, meta: Path, root: Path) -> list[tuple[int, str, str, str, int, str]]:
        with open(meta, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in ("path", "label") if c not in header]
            if missing:
                raise DatasetLayoutError(f"{meta} line 1: no column {' or '.join(missing)} (the header has "
                                         f"{', '.join(header) or 'nothing'}; needs path,label)")
            if "split" in header and "fold" in header:
                raise DatasetLayoutError(f"{meta} line 1: give a split column or a fold column, not both")
            col = {name: header.index(name) for name in ("path", "label", "split", "fold", "group") if name in header}
            listed = ListedOnce(meta)
            first_line: dict[str, int] = {}
            out = []
            for cells in reader:
                lineno = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DatasetLayoutError(f"{meta} line {lineno}: {len(cells)} cells, the header has {len(header)}")
                get = {name: cells[i].strip() for name, i in col.items()}
                rel = _inside(root, get["path"], meta, lineno)
                names = split_label(get["label"])
                if not names:
                    raise DatasetLayoutError(f"{meta} line {lineno}: {get['path']} has no label")
                check_label_names(names, f"{meta} line {lineno}")
                for name in names:
                    first_line.setdefault(name, lineno)
                listed.add(rel, lineno, get["label"])
                split = get.get("split", "").lower()
                if split and split not in SPLITS:
                    raise DatasetLayoutError(f"{meta} line {lineno}: unknown split {get['split']!r}; use "
                                             f"{', '.join(SPLITS)} (or leave the split column out)")
                fold = 0
                if get.get("fold"):
                    try:
                        fold = int(get["fold"])
                    except ValueError:
                        fold = -1
                    if fold < 1:
                        raise DatasetLayoutError(f"{meta} line {lineno}: fold {get['fold']!r} is not an integer >= 1")
                out.append((lineno, rel, join_labels(names), split, fold, get.get("group", "")))
        if not out:
            raise DatasetLayoutError(f"{meta}: no rows")
        clashes = case_clashes(first_line)
        if clashes:
            shown = "; ".join(" and ".join(f"{n!r} (line {first_line[n]})" for n in c) for c in clashes)
            raise DatasetLayoutError(f"{meta}: labels differ only in case: {shown}; write each label one way")
        self._check_partition(meta, out, "split" in col, "fold" in col)
        return out

    @staticmethod
    def _check_partition(meta: Path, rows, has_split: bool, has_fold: bool) -> None:
        """Every row in a split (or fold) once any is; enough of them; no group in two of them."""
        key = 3 if has_split else 4
        values = [r[key] for r in rows]
        if not any(values):
            return
        empty = next((r[0] for r in rows if not r[key]), None)
        if empty is not None:
            what = "split" if has_split else "fold"
            raise DatasetLayoutError(f"{meta} line {empty}: no {what}, while other rows give one; give every row one")
        if has_split and not {"train", "test"} <= set(values):
            raise DatasetLayoutError(f"{meta}: the split column names only {', '.join(sorted(set(values)))}; it needs "
                                     "train and test (validation is drawn from train when absent)")
        if has_fold and len(set(values)) < 3:
            raise DatasetLayoutError(f"{meta}: folds {sorted(set(values))}: cross-validation needs at least 3 "
                                     "(test, validation and training folds)")
        seen: dict[str, tuple[object, int]] = {}
        for r in rows:
            if not r[5]:
                continue
            was, line = seen.setdefault(r[5], (r[key], r[0]))
            if was != r[key]:
                raise DatasetLayoutError(f"{meta} line {r[0]}: group {r[5]!r} is in {r[key]} here and in {was} on "
                                         f"line {line}; a group must stay in one {'split' if has_split else 'fold'}")


RECIPE = CSVRecipe()
