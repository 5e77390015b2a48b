"""LibriSpeech (Panayotov et al., 2015), used here for closed-set speaker identification.

Source: OpenSLR resource 12, one archive per subset with the md5s OpenSLR publishes. Each unpacks
to ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz FLAC) next
to ``<speaker>-<chapter>.trans.txt``. ``train-clean-100`` (the default) holds 251 speakers,
``train-clean-360`` 921; the count always comes from the folders found.

The manifest lists every utterance with label = speaker = the speaker folder and split = the
subset; the per-speaker train/validation/test split and the stitching live in
:mod:`helix.data.derived`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from helix.data.download import Source
from helix.data.recipes.base import Item, Recipe, find_corpus

BASE_URL = "https://www.openslr.org/resources/12"
# from https://www.openslr.org/resources/12/md5sum.txt
MD5 = {
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
}
_UTTERANCE = re.compile(r"^(\d+)-(\d+)-(\d+)\.\w+$")


class LibriSpeech(Recipe):
    name = "librispeech"
    title = "LibriSpeech"
    subsets = tuple(MD5)
    default_subset = "train-clean-100"
    layout_help = "LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac"

    def sources(self, subset):
        return [Source(f"{BASE_URL}/{subset}.tar.gz", f"{subset}.tar.gz", md5=MD5[subset])]

    def locate(self, root: Path, subset) -> Path:
        corpus = find_corpus(root, subset, ["LibriSpeech"])
        if corpus is None:
            raise self.layout_error(root, subset, f"no {subset}/ folder")
        return corpus

    def list_items(self, corpus: Path, subset):
        items, bad = [], []
        top = corpus / subset
        # a speaker or chapter folder may be a symlink to another disk
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames.sort()
            rel = Path(dirpath).relative_to(top).parts
            for name in sorted(filenames):
                if name.endswith(".trans.txt") or name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                m = _UTTERANCE.match(name)
                if len(rel) != 2:
                    bad.append((path, f"not inside a <speaker>/<chapter>/ folder of {top}"))
                elif not m or (m.group(1), m.group(2)) != rel:
                    bad.append((path, f"name does not match its folders {rel[0]}/{rel[1]} "
                                      "(expected <speaker>-<chapter>-<utterance>.flac)"))
                else:
                    items.append(Item(path, rel[0], split=subset, speaker=rel[0]))
        return items, bad


RECIPE = LibriSpeech()
