"""What the recipes over the user's own files share (:mod:`.folder`, :mod:`.csv`).

Nothing is downloaded; ``prepare`` decodes and checks every file like the corpus recipes, then
draws the split the data did not bring (:mod:`helix.data.splits`) and records it in the manifest.
The split parameters go into ``helix/summary.json``; a rerun of prepare with the same parameters
keeps the split of every file it already had and places only new files, so adding recordings never
moves a test file into training.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from helix.data.labels import split_label
from helix.data.manifest import ManifestError, atomic_write_text, read_manifest, relative_to_root
from helix.data.recipes.base import DatasetLayoutError, PrepareError, PrepareResult, Recipe
from helix.data.splits import SPLITS, SplitError, split_fractions, stratified_split

__all__ = ["OwnRecipe"]


class OwnRecipe(Recipe):
    """Base of the folder and CSV recipes: options per call, no download, the split made at prepare."""

    #: seed of the split prepare draws
    seed: int = 0
    #: fraction of the files prepare puts in validation (taken from train when only train/test are given)
    validation: float = 0.1
    #: fraction of the files prepare puts in test
    test: float = 0.1

    def configured(self, **options: Any) -> "OwnRecipe":
        """A copy with ``options`` (``seed``, ``validation``, ``test``, and the recipe's own) set."""
        out = copy.copy(self)
        for key, value in options.items():
            if not hasattr(self, key) or key.startswith("_"):
                raise ValueError(f"{self.name} takes no option {key!r}")
            if value is not None:
                setattr(out, key, value)
        split_fractions(out.validation, out.test)  # checked before any file is decoded
        return out

    def prepare(self, root, skip_bad: bool = False, *, subset=None, workers=None, progress=True,
                **options: Any) -> PrepareResult:
        """Decode and check every file, draw the split where none is given, write the manifest."""
        return Recipe.prepare(self.configured(**options), root, skip_bad, subset=subset, workers=workers,
                              progress=progress)

    def sources(self, subset):
        return []

    def download(self, root, subset=None, **kwargs) -> Path:
        raise ValueError(f"{self.title} is made of your own files: there is nothing to download; run "
                         f"`{self.command('prepare', root)}`")

    def locate(self, root: Path, subset) -> Path:
        if not root.is_dir():
            raise DatasetLayoutError(f"{root} is not a folder; expected {self.layout_help}")
        return root

    def _check_downloaded(self, root: Path, subset) -> None:
        self.locate(root, subset)

    def status(self, root, subset=None) -> str:
        root = Path(root)
        if self.manifest_path(root).is_file() and self._summary_path(root, None).is_file():
            return super().status(root)
        if root.is_dir():
            return f"found, not prepared: run `{self.command('prepare', root)}`"
        return f"missing: {root} is not a folder"

    def _bad_message(self, root: Path, subset, bad: list[tuple[str, str]], report: Path) -> str:
        shown = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        return (f"{len(bad)} file(s) or folder(s) of the {self.title} at {root} cannot be used:\n{shown}{more}\n"
                f"Full list: {report}. Fix or remove them, or run `{self.command('prepare', root)} --skip-bad` "
                "to leave them out of the manifest")

    # -- the split ------------------------------------------------------------------------------
    def _split_record(self, made: str) -> dict[str, Any]:
        return {"made": made, "seed": self.seed, "validation": self.validation, "test": self.test}

    def arrange(self, root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(r["fold"] for r in rows):
            self._made = "folds given"
            return rows
        given = {r["split"] for r in rows} - {""}
        if {"train", "validation", "test"} <= given:
            self._made = "given"
            return rows
        if given:  # train and test given: validation is drawn from train
            self._made = "validation from train"
            part = [r for r in rows if r["split"] == "train"]
            n = len(rows)
            fractions = {"train": 1.0, "validation": min(0.5, self.validation * n / max(1, len(part))), "test": 0.0}
            fractions["train"] -= fractions["validation"]
        else:
            self._made = "drawn"
            part = rows
            fractions = split_fractions(self.validation, self.test)
        recorded = self._recorded(root)
        rel = [relative_to_root(r["path"], root) for r in part]
        try:
            splits = stratified_split(
                [split_label(r["label"]) for r in part], [r["speaker"] for r in part], fractions=fractions,
                seed=self.seed, fixed=[recorded.get(p, "") if fractions.get(recorded.get(p)) else "" for p in rel],
                names=rel,
            )
        except SplitError as err:
            # the old manifest no longer describes the folder: it must not look prepared
            self.manifest_path(root).unlink(missing_ok=True)
            self._summary_path(root, None).unlink(missing_ok=True)
            raise PrepareError(f"{self.title} at {root}: {err}") from None
        for r, s in zip(part, splits):
            r["split"] = s
        return rows

    def _recorded(self, root: Path) -> dict[str, str]:
        """Root-relative path -> split of the previous prepare, when it drew its split the same way."""
        try:
            summary = json.loads(self._summary_path(root, None).read_text())
            if summary.get("split") != self._split_record(self._made):
                return {}
            old = read_manifest(self.manifest_path(root))
        except (OSError, ValueError, ManifestError):
            return {}
        return {relative_to_root(r["path"], root): r["split"] for r in old if r["split"] in SPLITS}

    def _write_summary(self, root: Path, subset, result: PrepareResult) -> None:
        super()._write_summary(root, subset, result)
        path = self._summary_path(root, subset)
        summary = json.loads(path.read_text())
        summary["split"] = self._split_record(getattr(self, "_made", "given"))
        atomic_write_text(path, json.dumps(summary, indent=1) + "\n")


def check_label_names(names, where: str) -> None:
    """Refuse a class name the manifest cannot hold (``;`` separates names; tabs and newlines separate cells)."""
    for name in names:
        if any(c in name for c in ";\t\n\r"):
            raise DatasetLayoutError(f"{where}: class name {name!r} contains ';', a tab or a newline")
