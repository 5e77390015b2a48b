"""Archives: integrity checks (read every member through) and safe extraction.

Extraction unpacks into a temporary folder next to the destination and merges it into place only
when every member was read; a member whose path would land outside the destination is refused.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 20


class ArchiveError(RuntimeError):
    """An archive that cannot be unpacked (corrupt, cut short, or with members escaping the folder)."""


def archive_problem(path: str | os.PathLike, name: str) -> str | None:
    """Why ``path`` (an archive called ``name``) is not whole, or None; reads it to the end.

    Zip: the central directory and every member's CRC. Tar (any compression): every member read
    through. ``.gz``: the whole stream and its trailer. Other names cannot be checked: None.
    """
    lower = name.lower()
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return f"member {bad} fails its CRC" if bad else None
        if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if member.isfile():
                        data = tar.extractfile(member)
                        while data.read(CHUNK_BYTES * 8):
                            pass
            return None
        if lower.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while f.read(CHUNK_BYTES * 8):
                    pass
            return None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as err:
        return str(err) or type(err).__name__
    return None


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True) -> None:
    """Unpack a ``.zip``/``.tar``/``.tar.gz``/``.tgz`` into ``dest``, merging with what is there.

    Members that would land outside ``dest`` (absolute paths, ``..``, links out) are refused.
    Unpacks into a temporary folder first so a failure leaves ``dest`` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".helix-extract-{archive.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    tmp.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, progress)
        else:
            _extract_tar(archive, tmp, progress)
        for entry in sorted(tmp.iterdir()):
            _merge_move(entry, dest / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Counted:
    """A read-only file that reports bytes read to a progress bar."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, n=-1):
        data = self.f.read(n)
        self.bar.update(len(data))
        return data


def _extract_tar(archive: Path, tmp: Path, progress: bool) -> None:
    # stream mode ("r|*"): one pass over the compressed bytes, however many members
    bar = tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"extract {archive.name}", disable=not progress, leave=False)
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=_Counted(raw, bar), mode="r|*") as tar:
            for member in tar:
                # "data" refuses absolute paths, "..", and links that point outside tmp
                tar.extract(member, tmp, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"cannot extract {archive}: {err}") from None
    finally:
        bar.close()


def _extract_zip(archive: Path, tmp: Path, progress: bool) -> None:
    root = tmp.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress, leave=False):
                target = (tmp / info.filename).resolve()
                if root not in target.parents and target != root:
                    raise ArchiveError(f"{archive} holds {info.filename!r}, which points outside the dataset folder")
                zf.extract(info, tmp)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        raise ArchiveError(f"cannot extract {archive}: {err}") from None


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; folders merge (LibriSpeech subsets share ``LibriSpeech/``)."""
    if src.is_dir() and dst.is_dir():
        for entry in src.iterdir():
            _merge_move(entry, dst / entry.name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)
