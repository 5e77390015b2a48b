"""VoxPopuli transcribed speech (Wang et al., 2021), used here for speaker identification.

Official release (github.com/facebookresearch/voxpopuli, files on dl.fbaipublicfiles.com):

1. ``audios/original_<year>.tar`` for 2009-2020 (``download_audios --subset asr``) unpack to
   ``raw_audios/original/<year>/<session>_original.ogg``: whole plenary sessions, 16 kHz Ogg Vorbis.
2. ``annotations/asr/asr_<lang>.tsv.gz`` ('|'-separated: id_, session_id, split, vad, speaker_id,
   gender, original_text, normed_text, ...) says which voice-activity spans of which session form
   each segment.
3. ``get_asr_data --lang <lang>`` cuts the segments to
   ``transcribed_data/<lang>/<year>/<session>-<id_>.ogg`` and writes
   ``transcribed_data/<lang>/asr_{train,dev,test}.tsv`` (tab-separated: id, raw_text,
   normalized_text, speaker_id, split, gender).

``helix data download voxpopuli`` fetches 1 and 2 (no checksums are published; sizes are checked).
``prepare`` does step 3 itself when its output is missing -- the same cut, written the same way --
so a copy processed by hand with the official scripts and one downloaded by helix look alike.
Speaker labels are the ``speaker_id`` column; segments without one ("None") are left out of the
manifest. English has 1,313 speakers; the count comes from the data.
"""

from __future__ import annotations

import ast
import csv
import gzip
import multiprocessing
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from helix.data.download import Source
from helix.data.manifest import atomic_write_text
from helix.data.recipes.base import Item, Recipe, listed_path

BASE_URL = "https://dl.fbaipublicfiles.com/voxpopuli"
YEARS = tuple(range(2009, 2021))
LANGUAGES = ("en", "de", "fr", "es", "pl", "it", "ro", "hu", "cs", "nl", "fi", "hr", "sk", "sl", "et", "lt")
SPLITS = ("train", "dev", "test")
_HEADER = ("id", "raw_text", "normalized_text", "speaker_id", "split", "gender")
_NO_SPEAKER = {"", "none", "None", "null"}


class VoxPopuli(Recipe):
    name = "voxpopuli"
    title = "VoxPopuli"
    subsets = LANGUAGES
    default_subset = "en"
    layout_help = ("transcribed_data/<lang>/asr_{train,dev,test}.tsv with transcribed_data/<lang>/<year>/*.ogg "
                   "(the official get_asr_data output), or raw_audios/original/<year>/*_original.ogg with "
                   "transcribed_data/<lang>/asr_<lang>.tsv.gz (the official downloads)")

    def sources(self, subset):
        audio = [Source(f"{BASE_URL}/audios/original_{y}.tar", f"original_{y}.tar", extract_to="raw_audios")
                 for y in YEARS]
        meta = Source(f"{BASE_URL}/annotations/asr/asr_{subset}.tsv.gz", f"asr_{subset}.tsv.gz",
                      extract_to=None, place=f"transcribed_data/{subset}/asr_{subset}.tsv.gz")
        return [meta, *audio]

    def _lists(self, root: Path, lang: str) -> list[Path]:
        return [root / "transcribed_data" / lang / f"asr_{s}.tsv" for s in SPLITS]

    def locate(self, root: Path, subset) -> Path:
        lists = self._lists(root, subset)
        if all(p.is_file() for p in lists):
            return root
        missing = [str(p.relative_to(root)) for p in lists if not p.is_file()]
        raise self.layout_error(root, subset, f"missing {', '.join(missing)}")

    def is_present(self, root: Path, subset) -> bool:
        meta = root / "transcribed_data" / subset / f"asr_{subset}.tsv.gz"
        return (meta.is_file() and (root / "raw_audios" / "original").is_dir()) or super().is_present(root, subset)

    def before_prepare(self, root: Path, subset, workers, progress) -> None:
        if all(p.is_file() for p in self._lists(root, subset)):
            return
        meta = root / "transcribed_data" / subset / f"asr_{subset}.tsv.gz"
        raw = root / "raw_audios" / "original"
        if meta.is_file() and raw.is_dir():
            cut_segments(root, subset, workers=workers, progress=progress)

    def list_items(self, corpus: Path, subset):
        items, bad = [], []
        out_root = corpus / "transcribed_data" / subset
        for tsv in self._lists(corpus, subset):
            with open(tsv, encoding="utf-8", newline="") as f:
                # transcripts hold quotes; only tabs separate
                reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                for lineno, row in enumerate(reader, start=2):
                    speaker = row["speaker_id"].strip()
                    if speaker in _NO_SPEAKER:
                        continue
                    path = listed_path(out_root / row["id"][:4], f"{row['id']}.ogg", tsv, lineno)
                    if not path.exists():
                        bad.append((str(path), f"listed in {tsv} but missing (cut from raw_audios/original/"
                                               f"{row['id'][:4]}/ by prepare, or by the official get_asr_data)"))
                        continue
                    items.append(Item(str(path), speaker, split=row["split"], speaker=speaker))
        return items, bad


def _cut_session(task: tuple[str, list[tuple[str, list[tuple[float, float]]]]]) -> list[tuple[str, str]]:
    """Worker: cut the segments of one session recording; return (segment, reason) failures."""
    in_path, segments = task
    todo = [(out, spans) for out, spans in segments if not os.path.exists(out)]
    if not todo:
        return []
    try:
        with sf.SoundFile(in_path) as f:
            sr = f.samplerate
            for out, spans in todo:
                parts = []
                for start, end in spans:
                    f.seek(min(int(start * sr), f.frames))
                    parts.append(f.read(max(0, min(int(end * sr), f.frames) - int(start * sr)), dtype="float32"))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                tmp = out + ".tmp"
                # written under a temporary name: an existing segment is always a whole one
                sf.write(tmp, np.concatenate(parts), sr, format="OGG", subtype="VORBIS")
                os.replace(tmp, out)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        return [(out, f"cannot cut from {in_path}: {err}") for out, _ in todo]
    return []


def cut_segments(root: Path, lang: str, *, workers: int | None = None, progress: bool = True) -> list[tuple[str, str]]:
    """The official ``get_asr_data`` step: raw sessions + asr_<lang>.tsv.gz -> segments + split lists."""
    out_root = root / "transcribed_data" / lang
    sessions: dict[str, list] = defaultdict(list)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    with gzip.open(out_root / f"asr_{lang}.tsv.gz", "rt", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="|"):
            if r["split"] not in SPLITS:
                continue
            sid = r["session_id"]
            in_path = root / "raw_audios" / "original" / sid[:4] / f"{sid}_original.ogg"
            out = out_root / sid[:4] / f"{sid}-{r['id_']}.ogg"
            spans = [(float(a), float(b)) for a, b in ast.literal_eval(r["vad"])]
            sessions[str(in_path)].append((str(out), spans))
            cells = (out.stem, r["original_text"], r["normed_text"], r["speaker_id"], r["split"], r["gender"])
            lines[r["split"]].append("\t".join(c.replace("\t", " ") for c in cells))
    tasks = sorted(sessions.items())
    failures: list[tuple[str, str]] = []
    n = min(workers or os.cpu_count() or 1, max(1, len(tasks)))
    bar = tqdm(total=len(tasks), desc="cut sessions", unit="session", disable=not progress, leave=False)
    if n > 1:
        with multiprocessing.get_context("fork").Pool(n) as pool:
            for res in pool.imap_unordered(_cut_session, tasks):
                failures += res
                bar.update()
    else:
        for task in tasks:
            failures += _cut_session(task)
            bar.update()
    bar.close()
    # the split lists last: their presence says the cut finished
    for split in SPLITS:
        atomic_write_text(out_root / f"asr_{split}.tsv", "\n".join(["\t".join(_HEADER), *lines[split]]) + "\n")
    return failures


RECIPE = VoxPopuli()
