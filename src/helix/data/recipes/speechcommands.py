"""Speech Commands v0.02 (Warden, 2018): 105,829 one-second utterances of 35 words.

Source: ``speech_commands_v0.02.tar.gz`` from download.tensorflow.org (no published checksum; the
size the server reports is checked). The archive unpacks flat: one folder per word, holding
16 kHz 16-bit WAVs, plus ``validation_list.txt``, ``testing_list.txt`` and ``_background_noise_/``.

Splits exactly as the dataset defines them: a file listed in ``validation_list.txt`` is validation,
in ``testing_list.txt`` test, every other file is train. The classes are the word folders found on
disk (35 in v0.02); ``_background_noise_`` is not a class -- its recordings are checked like the
rest and listed in the manifest with split ``background_noise`` and no label, for noise
augmentation (``[r for r in read_manifest(m) if r["split"] == "background_noise"]``).
"""

from __future__ import annotations

import os
from pathlib import Path

from helix.data.download import Source
from helix.data.recipes.base import HELIX_FOLDERS, DatasetLayoutError, Item, Recipe, find_corpus, listed_path

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
NOISE_DIR = "_background_noise_"
NOISE_SPLIT = "background_noise"


class SpeechCommands(Recipe):
    name = "speechcommands"
    title = "Speech Commands v0.02"
    layout_help = "one folder per word holding .wav files, validation_list.txt and testing_list.txt side by side"
    required_splits = ("train", "validation", "test")

    def sources(self, subset):
        return [Source(URL, "speech_commands_v0.02.tar.gz")]

    def locate(self, root: Path, subset) -> Path:
        # flat in --root as the archive unpacks, or in the folder torchaudio's copy uses
        corpus = find_corpus(root, LISTS["validation"],
                             ["speech_commands_v0.02", "SpeechCommands/speech_commands_v0.02"])
        if corpus is None:
            raise self.layout_error(root, subset, f"no {LISTS['validation']}")
        if not (corpus / LISTS["test"]).is_file():
            raise self.layout_error(root, subset, f"{corpus / LISTS['validation']} exists but {LISTS['test']} does not")
        return corpus

    def list_items(self, corpus: Path, subset):
        split_of: dict[str, str] = {}
        where: dict[str, str] = {}
        for split, name in LISTS.items():
            with open(corpus / name, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    rel = line.strip()
                    if not rel:
                        continue
                    listed_path(corpus, rel, corpus / name, lineno)
                    if split_of.get(rel, split) != split:
                        # in both lists it would be scored as validation and test at once
                        raise DatasetLayoutError(
                            f"{rel} is listed in both {where[rel]} and {corpus / name} line {lineno}: "
                            "a file belongs to one split"
                        )
                    split_of[rel] = split
                    where.setdefault(rel, f"{corpus / name} line {lineno}")
        items, seen = [], set()
        words = sorted(e.name for e in os.scandir(corpus)
                       if e.is_dir() and not e.name.startswith(("_", ".")) and e.name not in HELIX_FOLDERS)
        for word in words:
            for entry in sorted(os.scandir(corpus / word), key=lambda e: e.name):
                if entry.name.startswith(".") or entry.is_dir():  # a FIFO here is refused by name
                    continue
                rel = f"{word}/{entry.name}"
                seen.add(rel)
                items.append(Item(entry.path, word, split=split_of.get(rel, "train")))
        bad = [(str(corpus / rel), f"listed in {LISTS[split]} but missing")
               for rel, split in split_of.items() if rel not in seen]
        noise = corpus / NOISE_DIR
        if noise.is_dir():
            # no label: these are not a class; the folder also ships a README
            items += [Item(str(p), "", split=NOISE_SPLIT) for p in sorted(noise.iterdir())
                      if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in (".md", ".txt")]
        return items, bad


RECIPE = SpeechCommands()
