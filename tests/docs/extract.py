"""The commands a Markdown document shows, in reading order.

What counts as a command:
- every logical line of a fenced block tagged ``bash``/``sh``/``shell`` or left untagged (a listing
  that is not meant to be run says so with ``text``); comment-only lines are dropped, lines ending
  in ``\\`` continue onto the next one, and trailing ``# ...`` comments stay (bash ignores them);
- every fenced ``python`` block, as one script;
- in the rows of a table with a ``command`` column, every inline code span that starts with
  ``helix `` or ``torchrun `` (other tables only mention commands).

A command is skipped only where the document says so: ``<!-- docs-test: skip (reason) -->`` on
its own line right before a fenced block (blank lines between are allowed) skips the whole block;
the same comment inside a table row skips that row's inline commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_TAGS = {"", "bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<tag>[\w+-]*)")
INLINE = re.compile(r"`(?P<cmd>(?:helix|torchrun) [^`]+)`")


@dataclass(frozen=True)
class Snippet:
    """One runnable piece of a document: a shell command or a Python script."""

    doc: str
    line: int
    lang: str  # "bash" or "python"
    text: str
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def short(self, width: int = 90) -> str:
        text = " ".join(self.text.split()) if self.lang == "bash" else f"python block ({self.text.count(chr(10)) + 1} lines)"
        return text if len(text) <= width else text[: width - 3] + "..."


class DocFormatError(ValueError):
    """A document the extractor cannot read unambiguously (an unclosed fence, a stray marker)."""


def shell_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``(line number, command)`` for each logical command of a shell block."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in lines:
        line = raw.rstrip()
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].rstrip())
            continue
        pending.append(line)
        out.append((start, " ".join(part.strip() for part in pending)))
        pending = []
    if pending:
        out.append((start, " ".join(part.strip() for part in pending)))
    return out


def extract(text: str, doc: str) -> list[Snippet]:
    """Every :class:`Snippet` of ``text`` (a Markdown document named ``doc``), in order."""
    snippets: list[Snippet] = []
    lines = text.splitlines()
    marker: tuple[int, str] | None = None  # (line, reason) waiting for its block
    commands_table = False  # inside a table whose header has a "command" column
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        if line.lstrip().startswith("|") and not (i and lines[i - 1].lstrip().startswith("|")):
            commands_table = any(cell.strip().lower() in {"command", "commands"} for cell in line.split("|"))
        fence = FENCE.match(line)
        found = MARKER.search(line)
        if fence:
            tag = fence.group("tag").lower()
            body: list[tuple[int, str]] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group("fence")):
                body.append((i + 1, lines[i]))
                i += 1
            if i == len(lines):
                raise DocFormatError(f"{doc}:{number}: code block opened here is never closed")
            skip = marker[1] if marker else None
            if marker and tag not in SHELL_TAGS | {"python"}:
                raise DocFormatError(f"{doc}:{marker[0]}: skip marker before a {tag!r} block, which is never run")
            marker = None
            if tag in SHELL_TAGS:
                for start, cmd in shell_commands(body):
                    snippets.append(Snippet(doc, start, "bash", cmd, skip))
            elif tag == "python":
                code = "\n".join(text for _, text in body) + "\n"
                snippets.append(Snippet(doc, number + 1, "python", code, skip))
        elif line.lstrip().startswith("|"):
            if not commands_table:
                i += 1
                continue
            reason = found.group("reason") if found else None
            for m in INLINE.finditer(line):
                snippets.append(Snippet(doc, number, "bash", m.group("cmd").strip(), reason))
        elif found:
            if marker:
                raise DocFormatError(f"{doc}:{marker[0]}: skip marker not followed by a code block")
            marker = (number, found.group("reason"))
        elif line.strip() and marker:
            raise DocFormatError(f"{doc}:{marker[0]}: skip marker not followed by a code block")
        i += 1
    if marker:
        raise DocFormatError(f"{doc}:{marker[0]}: skip marker not followed by a code block")
    return snippets


def extract_file(path: Path, root: Path) -> list[Snippet]:
    return extract(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
