"""The ``helix`` command line: a thin layer over the library.

Each subcommand lives in ``helix.commands.<name>`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed namespace, returning an exit status).

A user's mistake (a bad value, a missing or unwritable file, a full disk, malformed YAML) ends
with one line, ``helix: error: <what and where>``, and exit status 1; Ctrl-C with exit status 130.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import re
import sys

import yaml

import helix
import helix.commands
from helix.utils.interrupts import handling_interrupts

_RST_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj):`~?([^`]+)`")


def plain_text(text: str | None) -> str | None:
    """Docstring markup -> terminal text: ``:func:`x``` -> ``x``, double backticks -> single."""
    if not text:
        return text
    return _RST_ROLE.sub(r"`\1`", text).replace("``", "`")


def _tidy_help(parser: argparse.ArgumentParser) -> None:
    """Strip reStructuredText from every description and help string, recursively, and give each
    subcommand without a description its one-line help as description."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        action.help = plain_text(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description:
                    sub.description = helps.get(name)
                _tidy_help(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helix",
        description="Audio classification with Mamba, HELIX and attention backbones.",
    )
    parser.add_argument("--version", action="version", version=f"helix {helix.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(helix.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not a command
            continue
        module = importlib.import_module(f"helix.commands.{info.name}")
        module.register(sub)
    _tidy_help(parser)
    return parser


def describe_os_error(err: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` -> ``x: no space left on device (disk full)``."""
    what = err.strerror.lower() if err.strerror else str(err)
    if err.errno == errno.ENOSPC:
        what += " (the disk is full: free space or choose another --out)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what += " (not writable: choose another --out, or fix the folder's permissions)"
    names = [n for n in (err.filename, err.filename2) if n]
    return f"{' -> '.join(map(str, names))}: {what}" if names else what


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with handling_interrupts():  # a Ctrl-C is never lost, nor turned into a writer's error
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\nhelix: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``helix ... | head``): stop quietly; point stdout at /dev/null so
        # the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        print(f"helix: error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, yaml.YAMLError) as err:
        # user-facing failures carry their own message; tracebacks are for bugs
        print(f"helix: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
