"""What several commands share: argument groups, input collection, progress, output, failures.

Not a command itself (the leading underscore keeps it out of ``helix.cli``'s discovery). Heavy
modules (torch, soundfile, tqdm) are imported inside the functions, so ``helix --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``train`` and ``grid`` share; each maps onto a config field."""
    from helix.training.presets import list_presets

    p.add_argument("--config", metavar="PRESET_OR_PATH",
                   help=f"preset name ({', '.join(list_presets()) or 'none found'}) or a YAML file")
    p.add_argument("--epochs", type=int, help="optim.epochs")
    p.add_argument("--batch-size", type=int, help="optim.batch_size: global batch per optimizer step")
    p.add_argument("--data-root", metavar="DIR", help="data.root: folder with the prepared dataset")
    p.add_argument("--device", help="device: auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--folds", metavar="K[,K...]", help="run only these folds of a fold dataset")
    p.add_argument("--threads", type=int, metavar="N",
                   help="cpu_threads: PyTorch threads on CPU (default: picked from the model size and free cores)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any config field, e.g. optim.lr=1e-3 augment.mixup_alpha=0 model.overrides.d_model=128")


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Named flags as ``key=value`` strings (applied before the generic ones, which win)."""
    pairs = [("optim.epochs", args.epochs), ("optim.batch_size", args.batch_size), ("data.root", args.data_root),
             ("device", args.device), ("seed", args.seed), ("cpu_threads", args.threads),
             ("model.name", getattr(args, "model", None)),
             ("out_dir", getattr(args, "out", None)), ("data.fold", getattr(args, "fold", None))]
    return [f"{k}={v}" for k, v in pairs if v is not None]


def parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--folds expects comma-separated fold numbers, got {text!r}") from None


def add_window_args(p) -> None:
    """Options shared by predict, embed and verify."""
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="window length (default: the checkpoint's training clip length)")
    p.add_argument("--hop", type=float, metavar="SECONDS", help="hop between windows (default: half the window)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def collect_inputs(paths: list[str]) -> list[str]:
    """Files as given, folders expanded to their audio files (sorted); raises for a folder with none."""
    from helix.data.audio import AUDIO_EXTENSIONS

    out = []
    for p in paths:
        if Path(p).is_dir():
            found = sorted(f for f in Path(p).rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under folder {p}")
            out.extend(str(f) for f in found)
        else:
            out.append(p)  # missing or unsupported files fail later, in the failure list
    return out


def progress_bar(files: list, quiet: bool, desc: str = "predict"):
    """A tqdm bar over seconds of audio (durations from the file headers; unreadable ones count 0)."""
    import soundfile as sf
    from tqdm import tqdm

    total = 0.0
    for f in files:
        if not os.path.isfile(f):
            continue  # missing, a folder, or a FIFO that sf.info would block on: it fails later, by name
        with contextlib.suppress(Exception):
            total += sf.info(str(f)).duration
    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=round(total, 1), unit=" s audio", desc=desc, dynamic_ncols=True,
                disable=True if quiet else None, file=sys.stderr)


def say(message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def report_failures(failures: list, total: int) -> int:
    """List failures on stderr; the exit status (1 if any)."""
    if not failures:
        return 0
    say(f"{len(failures)} of {total} input(s) failed:")
    for f in failures:
        say(f"  {f.error}" if f.source in str(f.error) else f"  {f.source}: {f.error}")
    return 1


@contextlib.contextmanager
def open_output(path: str | None, inputs: list = ()):
    """stdout, or a text file that replaces ``path`` only once the block succeeds (refused when it is
    one of ``inputs``)."""
    from helix.utils.io import atomic_write

    if path is None:
        yield sys.stdout
    else:
        with atomic_write(path, "w", inputs, newline="") as f:
            yield f


def guard_stdout(run_command):
    """Wrap a command so that a reader closing stdout early (``helix predict ... | head``) ends it
    quietly with status 141 (128 + SIGPIPE, what a shell reports) instead of a BrokenPipeError."""

    def wrapped(args) -> int:
        try:
            status = run_command(args)
            sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
            return status
        except BrokenPipeError:
            # later flushes (interpreter exit) would fail again: point stdout at /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 141

    wrapped.__doc__ = run_command.__doc__
    return wrapped
