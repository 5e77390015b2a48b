"""What every corpus recipe shares: download, the checked prepare, and the on-disk status.

A recipe (one module per corpus) says where its files come from (:meth:`Recipe.sources`), where
the official layout puts things (:meth:`Recipe.locate`) and which files its metadata lists with
which labels and splits (:meth:`Recipe.list_items`). This module does the rest the same way for all:
decode and check every file in parallel, stop on the first prepare with bad files (or skip them
with ``skip_bad`` and list each in a report), then write the manifest atomically.

Folder layout under the dataset root ``DIR`` (the ``--root`` of the CLI)::

    DIR/<the corpus's official layout>     unpacked archives, or a copy placed there by hand
    DIR/downloads/                          archives while downloading (deleted once unpacked)
    DIR/helix/downloads/*.complete          written last by ``download``
    DIR/helix/manifest[-<subset>].tsv       written last by ``prepare``
    DIR/helix/prepare-report[-<subset>].txt every file prepare could not use, with the reason
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from helix.data.audio import AudioError, probe_audio
from helix.data.download import Source, fetch_source, mirror_checksums, source_state
from helix.data.manifest import atomic_write_text, class_names, read_manifest, write_manifest

__all__ = ["DatasetLayoutError", "Item", "PrepareError", "PrepareResult", "Recipe"]

# folders helix itself creates in a dataset root (never corpus content)
HELIX_FOLDERS = frozenset({"helix", "downloads"})
# files per task sent to a worker: large enough that pickling is noise, small enough to balance
_CHUNK = 256


class DatasetLayoutError(ValueError):
    """The dataset folder is missing, incomplete, or not in the corpus's official layout."""


class PrepareError(RuntimeError):
    """``prepare`` found files it cannot use (and ``skip_bad`` was not given)."""


@dataclass(frozen=True)
class Item:
    """One audio file the corpus metadata lists: ``path`` under the root as given, the rest as in the manifest."""

    path: str
    label: str
    split: str = ""
    fold: int = 0
    speaker: str = ""


@dataclass
class PrepareResult:
    manifest: Path
    items: int
    classes: int
    hours: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None


def _check(path: str) -> tuple[int, int, int] | str:
    """Worker: (frames, sample_rate, channels) of a fully decoded file, or why it is unusable."""
    try:
        info = probe_audio(path)
    except AudioError as err:
        return err.reason
    return info.frames, info.sample_rate, info.channels


def check_files(paths: Sequence[str], workers: int | None = None, progress: bool = True) -> list[Any]:
    """Decode every file in ``paths`` with ``workers`` processes; results in the order of ``paths``."""
    if workers is None:
        workers = min(os.cpu_count() or 1, max(1, len(paths) // _CHUNK))
    bar = tqdm(total=len(paths), desc="check audio", unit="file", disable=not progress, leave=False)
    try:
        if workers <= 1:
            out = []
            for p in paths:
                out.append(_check(p))
                bar.update()
            return out
        out = []
        # fork keeps start-up cheap; the workers only run probe_audio, which is fork-safe
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(workers) as pool:
            for result in pool.imap(_check, paths, chunksize=_CHUNK):
                out.append(result)
                bar.update()
        return out
    finally:
        bar.close()


class Recipe:
    """Base class: subclasses set the class attributes and implement the three hooks below."""

    name: str = ""
    title: str = ""
    #: selectable parts of the corpus (LibriSpeech subsets, VoxPopuli languages); () = one part
    subsets: tuple[str, ...] = ()
    default_subset: str | None = None
    #: what the official layout looks like, shown when a folder does not match it
    layout_help: str = ""
    #: splits the corpus defines that training needs; prepare refuses a manifest where one is empty
    required_splits: tuple[str, ...] = ()

    # -- hooks -------------------------------------------------------------------------------
    def sources(self, subset: str | None) -> list[Source]:
        raise NotImplementedError

    def locate(self, root: Path, subset: str | None) -> Path:
        """The folder holding the official layout inside ``root``; raise DatasetLayoutError if none."""
        raise NotImplementedError

    def list_items(self, corpus: Path, subset: str | None) -> tuple[list[Item], list[tuple[str, str]]]:
        """Files the metadata lists, plus (path, reason) for entries already known to be bad."""
        raise NotImplementedError

    def before_prepare(self, root: Path, subset: str | None, workers: int | None, progress: bool) -> None:
        """Optional step that builds the official layout from what was downloaded (VoxPopuli)."""

    def arrange(self, root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Optional step on the checked rows before they are written (the user's corpora draw their split)."""
        return rows

    # -- shared machinery --------------------------------------------------------------------
    def _subset(self, subset: str | None) -> str | None:
        if not self.subsets:
            if subset not in (None, ""):
                raise ValueError(f"{self.name} has no subsets (got {subset!r})")
            return None
        subset = subset or self.default_subset
        if subset not in self.subsets:
            raise ValueError(f"unknown {self.name} subset {subset!r}; choose from {', '.join(self.subsets)}")
        return subset

    def _suffix(self, subset: str | None) -> str:
        return f"-{subset}" if subset and len(self.subsets) > 1 else ""

    def manifest_path(self, root: str | os.PathLike, subset: str | None = None) -> Path:
        return Path(root) / "helix" / f"manifest{self._suffix(self._subset(subset))}.tsv"

    def report_path(self, root: str | os.PathLike, subset: str | None = None) -> Path:
        return Path(root) / "helix" / f"prepare-report{self._suffix(self._subset(subset))}.txt"

    def command(self, verb: str, root: str | os.PathLike, subset: str | None = None) -> str:
        sub = f" --subset {subset}" if subset and self.subsets and subset != self.default_subset else ""
        return f"helix data {verb} {self.name} --root {root}{sub}"

    def download(
        self,
        root: str | os.PathLike,
        subset: str | None = None,
        *,
        mirror: str | None = None,
        keep_archives: bool = False,
        progress: bool = True,
    ) -> Path:
        """Download and unpack the corpus into ``root`` (resumes; skips what is complete).

        ``mirror``: a base URL serving the official file names instead of the official hosts.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        sources = self.sources(self._subset(subset))
        pending = [s for s in sources if source_state(s, root) != "complete"]
        # asked once for all the files: a mirror's own checksums replace the official ones
        checksums = mirror_checksums(mirror) if mirror and pending else None
        for source in pending:
            fetch_source(source, root, mirror=mirror, checksums=checksums, keep_archive=keep_archives,
                         progress=progress)
        return root

    def read_manifest(self, root: str | os.PathLike, subset: str | None = None) -> list[dict[str, Any]]:
        path = self.manifest_path(root, subset)
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.title} at {root} is not prepared ({path} missing): "
                f"run `{self.command('prepare', root, subset)}`"
            )
        return read_manifest(path)

    def _check_downloaded(self, root: Path, subset: str | None) -> None:
        if not root.is_dir() or not any(root.iterdir()):
            raise DatasetLayoutError(
                f"{self.title} is not downloaded: {root} is missing or empty. Run "
                f"`{self.command('download', root, subset)}`, or unpack the official archive there by hand"
            )
        for source in self.sources(subset):
            if source_state(source, root) == "extracting":
                raise DatasetLayoutError(
                    f"{self.title} in {root} is incomplete: unpacking {source.filename} was interrupted. "
                    f"Run `{self.command('download', root, subset)}` to finish it"
                )

    def layout_error(self, root: Path, subset: str | None, missing: str) -> DatasetLayoutError:
        return DatasetLayoutError(
            f"{root} is not in the {self.title} layout: {missing}. Expected {self.layout_help}. "
            f"Run `{self.command('download', root, subset)}` to download it, or point --root at the folder "
            "that holds the unpacked archive"
        )

    def prepare(
        self,
        root: str | os.PathLike,
        skip_bad: bool = False,
        *,
        subset: str | None = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> PrepareResult:
        """Decode and check every listed file, then write the manifest (rerunnable, atomic)."""
        root = Path(root)
        subset = self._subset(subset)
        self._check_downloaded(root, subset)
        self.before_prepare(root, subset, workers, progress)
        corpus = self.locate(root, subset)
        items, bad = self.list_items(corpus, subset)
        if not items and not bad:
            raise self.layout_error(root, subset, f"no audio files found under {corpus}")
        results = check_files([it.path for it in items], workers=workers, progress=progress)
        rows = []
        for item, res in zip(items, results):
            if isinstance(res, str):
                bad.append((item.path, res))
                continue
            frames, rate, channels = res
            rows.append({
                "path": item.path, "label": item.label, "split": item.split, "fold": item.fold,
                "speaker": item.speaker, "duration": frames / rate, "sample_rate": rate,
                "frames": frames, "channels": channels,
            })
        report = self.report_path(root, subset)
        if bad:
            self._write_report(report, root, bad, skipped=skip_bad)
            if not skip_bad:
                # an older manifest no longer describes what is on disk: it must not look prepared
                self.manifest_path(root, subset).unlink(missing_ok=True)
                self._summary_path(root, subset).unlink(missing_ok=True)
                raise PrepareError(self._bad_message(root, subset, bad, report))
        elif report.exists():
            report.unlink()
        if not rows:
            raise PrepareError(f"{self.title} at {root}: no usable audio files found. Expected {self.layout_help}")
        rows = self.arrange(root, rows)
        empty = [s for s in self.required_splits if not any(r["split"] == s for r in rows)]
        if empty:
            self.manifest_path(root, subset).unlink(missing_ok=True)
            self._summary_path(root, subset).unlink(missing_ok=True)
            raise PrepareError(
                f"{self.title} at {root}: the {' and '.join(empty)} split(s) would be empty "
                f"({len(rows)} usable files, none in {', '.join(empty)}); check the split lists"
            )
        manifest = write_manifest(self.manifest_path(root, subset), rows, root)
        result = PrepareResult(
            manifest=manifest, items=len(rows), classes=len(class_names(rows)),
            hours=sum(r["duration"] for r in rows) / 3600, skipped=bad, report=report if bad else None,
        )
        self._write_summary(root, subset, result)
        return result

    def _bad_message(self, root: Path, subset: str | None, bad: list[tuple[str, str]], report: Path) -> str:
        shown = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        return (
            f"{len(bad)} file(s) of {self.title} cannot be used:\n{shown}{more}\n"
            f"Full list: {report}. To fix: restore the files (`{self.command('download', root, subset)}` "
            f"fetches a fresh copy), or run `{self.command('prepare', root, subset)} --skip-bad` to leave them "
            "out of the manifest"
        )

    def _write_report(self, path: Path, root: Path, bad: list[tuple[str, str]], skipped: bool) -> None:
        head = "skipped (--skip-bad)" if skipped else "refused; prepare stopped"
        lines = [f"# {self.title} at {root}: {len(bad)} file(s) {head}", "# path\treason"]
        lines += [f"{p}\t{why}" for p, why in bad]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def _summary_path(self, root: Path, subset: str | None) -> Path:
        return root / "helix" / f"summary{self._suffix(subset)}.json"

    def _write_summary(self, root: Path, subset: str | None, result: PrepareResult) -> None:
        summary = {"items": result.items, "classes": result.classes, "hours": round(result.hours, 3),
                   "skipped": len(result.skipped), "subset": subset,
                   "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(self._summary_path(root, subset), json.dumps(summary, indent=1) + "\n")

    def status(self, root: str | os.PathLike, subset: str | None = None) -> str:
        """One line on what is on disk at ``root``, naming the next command to run."""
        root = Path(root)
        subset = self._subset(subset)
        states = [source_state(s, root) for s in self.sources(subset)]
        summary = self._summary_path(root, subset)
        if summary.is_file() and self.manifest_path(root, subset).is_file() and "extracting" not in states:
            s = json.loads(summary.read_text())
            skipped = f", {s['skipped']} skipped" if s["skipped"] else ""
            return f"prepared: {s['items']} files, {s['classes']} classes, {s['hours']:.1f} h{skipped}"
        if "extracting" in states:
            return f"incomplete (unpacking interrupted): run `{self.command('download', root, subset)}`"
        if "partial" in states:
            return f"partly downloaded: run `{self.command('download', root, subset)}` to resume"
        if states and all(s == "complete" for s in states):
            return f"downloaded, not prepared: run `{self.command('prepare', root, subset)}`"
        if not self.is_present(root, subset):
            return f"not downloaded: run `{self.command('download', root, subset)}`"
        return f"found (official layout), not prepared: run `{self.command('prepare', root, subset)}`"

    def is_present(self, root: Path, subset: str | None) -> bool:
        """Whether ``root`` holds the corpus in a layout ``prepare`` accepts."""
        try:
            self.locate(root, subset)
        except DatasetLayoutError:
            return False
        return True


def listed_path(base: Path, name: str, meta: Path, lineno: int) -> Path:
    """``base / name`` for a file name read from line ``lineno`` of ``meta``.

    A name that is absolute or climbs with ``..`` would read a file outside the dataset root:
    refused, naming the line (DatasetLayoutError).
    """
    parts = Path(name).parts
    if not name.strip() or Path(name).is_absolute() or os.pardir in parts or "\\" in name:
        raise DatasetLayoutError(f"{meta} line {lineno}: path {name!r} points outside the dataset folder; "
                                 "metadata may only name files inside it")
    return base / name


def parse_fold(value: str, folds: int, meta: Path, lineno: int) -> int:
    """The fold number in ``value``, checked to be one of 1..``folds`` (DatasetLayoutError naming the line)."""
    try:
        fold = int(value)
    except ValueError:
        raise DatasetLayoutError(f"{meta} line {lineno}: fold {value!r} is not an integer") from None
    if not 1 <= fold <= folds:
        raise DatasetLayoutError(f"{meta} line {lineno}: fold {fold} is outside 1..{folds}")
    return fold


class ListedOnce:
    """Remembers where each file name was listed; a second listing is refused, naming both lines.

    A clip in two folds (or with two labels) would leak test clips into training.
    """

    def __init__(self, meta: Path):
        self.meta = meta
        self.first: dict[str, tuple[int, str]] = {}

    def add(self, name: str, lineno: int, what: str) -> None:
        if name in self.first:
            line, was = self.first[name]
            raise DatasetLayoutError(
                f"{self.meta} line {lineno}: {name} is listed a second time ({what}; first on line {line}: {was}); "
                "each file may appear once"
            )
        self.first[name] = (lineno, what)


def find_corpus(root: Path, marker: str, candidates: Iterable[str]) -> Path | None:
    """The first of ``root`` / ``root/<candidate>`` that contains ``marker`` (a relative path)."""
    for base in (root, *(root / c for c in candidates)):
        if (base / marker).exists():
            return base
    return None

