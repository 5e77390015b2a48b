"""The extractor finds exactly the commands a reader would paste, and honours only explicit skips."""

from __future__ import annotations

import pytest

from .extract import DocFormatError, extract, extract_file
from .sandbox import REPO

DOC = """# title

Run `helix data list` in prose: not a command.

```bash
# a comment line
helix data download esc50 --root data/esc50   # trailing comment stays
helix train --config esc50 \\
    --model helix_raw
```

```
helix report runs/grid-esc50
```

```text
RUN_DIR/config.yaml    not a command
```

<!-- docs-test: skip (needs a CUDA GPU) -->

```bash
helix bench --device cuda
```

| task | command |
| --- | --- |
| params | `helix params --num-classes 10` and `torchrun --standalone -m helix.cli train` |
| bench | `helix bench --device cuda` <!-- docs-test: skip (needs a CUDA GPU) --> |
| name | `helix_raw` |

| field | meaning |
| --- | --- |
| `to_dict()` | the form `helix predict --format json` prints: a mention, not a command |

```python
import helix
print(helix)
```
"""


def test_extract_commands_in_reading_order():
    got = [(s.line, s.lang, s.text, s.skip) for s in extract(DOC, "x.md")]
    assert got == [
        (7, "bash", "helix data download esc50 --root data/esc50   # trailing comment stays", None),
        (8, "bash", "helix train --config esc50 --model helix_raw", None),
        (13, "bash", "helix report runs/grid-esc50", None),
        (23, "bash", "helix bench --device cuda", "needs a CUDA GPU"),
        (28, "bash", "helix params --num-classes 10", None),
        (28, "bash", "torchrun --standalone -m helix.cli train", None),
        (29, "bash", "helix bench --device cuda", "needs a CUDA GPU"),
        (37, "python", "import helix\nprint(helix)\n", None),
    ]


@pytest.mark.parametrize("text, message", [
    ("```bash\nhelix data list\n", "x.md:1: code block opened here is never closed"),
    ("<!-- docs-test: skip (why) -->\nsome prose\n```bash\nhelix data list\n```\n",
     "x.md:1: skip marker not followed by a code block"),
    ("<!-- docs-test: skip (why) -->\n```text\nlisting\n```\n", "x.md:1: skip marker before a 'text' block"),
])
def test_ambiguous_documents_are_refused(text, message):
    with pytest.raises(DocFormatError, match=message):
        extract(text, "x.md")


def test_every_document_parses_and_has_commands():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    counts = {p.name: len(extract_file(p, REPO)) for p in docs}
    assert counts["README.md"] > 5 and counts["training.md"] > 5, counts
