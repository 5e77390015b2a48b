"""Resumable downloads and safe extraction, with completion markers written last.

A file downloads into ``<dest>.part``. An interrupted transfer (dropped connection, killed
process) resumes from the bytes already on disk with an HTTP ``Range`` request; a server that
ignores ``Range`` is detected (it answers 200, not 206) and the file restarts from zero. The file
gets its final name only after its size and checksum (where the source publishes one) match; when
neither is known and the server announced no length either, an archive is read through (zip CRCs,
every tar member) first, so a transfer that stopped early is never taken for a whole file.

A mirror (``--mirror`` / ``HELIX_MIRROR``) serves the official file names; it may publish its own
``helix-checksums.json`` (``{"<file name>": {"size": int, "md5": "hex"}}``), whose values then
replace the official ones for the files it serves.

An archive unpacks into a temporary folder beside its destination, then moves into place; one that
fails to unpack is deleted (and the message says so), so the next run downloads it again. The
dataset root records the state in ``<root>/helix/downloads/``: ``<archive>.extracting`` while
unpacking and ``<archive>.complete`` (written last), so a half-extracted dataset never looks
complete and ``prepare`` refuses it.
"""

from __future__ import annotations

import hashlib
import http.client
import dataclasses
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from helix.data.archives import ArchiveError, archive_problem, extract_archive
from helix.data.manifest import atomic_write_text

__all__ = [
    "ChecksumError",
    "DownloadError",
    "Source",
    "download_file",
    "extract_archive",
    "fetch_source",
    "mirror_checksums",
    "source_state",
]

CHUNK_BYTES = 1 << 20
#: pause before retry n is n times this (seconds)
RETRY_WAIT = 2.0
# statuses that will not change by asking again
_FATAL_HTTP = {400, 401, 403, 404, 410, 451}
#: what a mirror serves beside the corpus files to vouch for its own copies
MIRROR_CHECKSUMS = "helix-checksums.json"


class DownloadError(RuntimeError):
    """A download that failed: unreachable, refused, interrupted too often, or the wrong size."""


class ChecksumError(DownloadError):
    """A downloaded file whose checksum differs from the one its source publishes."""


class _ArchiveCut(ConnectionError):
    """A transfer of unannounced length that ended before its archive did (maybe a dropped link)."""

    def __init__(self, problem: str):
        super().__init__(f"the archive ends early ({problem})")


@dataclass(frozen=True)
class Source:
    """One file of a corpus as its publisher serves it.

    ``extract_to``: folder (relative to the dataset root) the archive unpacks into; ``None`` means
    the file is used as it is and moves to ``place`` (relative to the root).
    """

    url: str
    filename: str
    md5: str | None = None
    size: int | None = None
    extract_to: str | None = "."
    place: str | None = None

    @property
    def remote_name(self) -> str:
        """The file name in the official URL: the name a mirror serves it under."""
        return os.path.basename(urllib.parse.urlparse(self.url).path)

    def url_from(self, mirror: str | None) -> str:
        """The official URL, or the same file name under ``mirror`` (e.g. an OpenSLR mirror)."""
        if not mirror:
            return self.url
        return mirror.rstrip("/") + "/" + self.remote_name

    def checked_by(self, checksums: dict[str, dict]) -> "Source":
        """This source with the size and md5 a mirror publishes for it, where it publishes them."""
        own = checksums.get(self.remote_name)
        if own is None:
            return self
        return dataclasses.replace(self, md5=own.get("md5"), size=own.get("size"))


def _user_agent() -> str:
    from helix.version import __version__

    return f"helix/{__version__}"


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 5,
    retry_wait: float | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present; verify ``size`` and ``md5``.

    Returns ``dest``. An existing ``dest`` is trusted (it was verified before it got its name).
    Raises :class:`DownloadError` (or :class:`ChecksumError`) with the URL and what to do.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    # with no published size or md5, only the server's announced length says a transfer is whole
    announced = False
    unchecked = md5 is None and size is None
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _user_agent()}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            total = _transfer(urllib.request.Request(url, headers=headers), part, have, size, timeout, progress)
            got = part.stat().st_size
            if total is not None and got < total:
                raise ConnectionError(f"connection closed after {got} of {total} bytes")
            announced = announced or total is not None
            if unchecked and not announced and (problem := archive_problem(part, dest.name)):
                # an end of stream without a length may be a dropped connection: ask for the rest
                raise _ArchiveCut(problem)
            break
        except urllib.error.HTTPError as exc:
            err = exc
            if err.code == 416 and have:
                remote = (err.headers.get("Content-Range") or "").rpartition("/")[2]
                if not remote.isdigit() or int(remote) == have:
                    break  # nothing after our offset: the part is whole; the checks below decide
                part.unlink()  # the remote file is shorter than what we hold: it changed, start over
            elif err.code in _FATAL_HTTP:
                raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
            reason = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            err, reason = exc, str(getattr(exc, "reason", exc))
        # only attempts that brought no new bytes count: a flaky link that keeps progressing finishes
        if (part.stat().st_size if part.exists() else 0) <= have:
            if isinstance(err, _ArchiveCut):
                break  # a whole answer, no longer than the last, still broken: refused and deleted below
            failures += 1
        if failures > retries:
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"download of {url} failed {failures} times (last: {reason}). Run the same command again: "
                f"it resumes from the {kept} bytes kept in {part}"
            )
        time.sleep((RETRY_WAIT if retry_wait is None else retry_wait) * failures)
    _verify(part, dest, url, md5, size)
    if unchecked and not announced and (problem := archive_problem(part, dest.name)):
        part.unlink()
        raise DownloadError(
            f"{dest.name} from {url} is not a whole archive ({problem}) and the server announced no size to "
            "resume against; the partial file was deleted: run the command again to download it afresh"
        )
    os.replace(part, dest)
    return dest


def _transfer(request, part: Path, have: int, size: int | None, timeout: float, progress: bool) -> int | None:
    """Stream one response into ``part``; return the file's full size when the server says it."""
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        if have and resp.status == 206:
            total = _content_range_total(resp.headers.get("Content-Range"), have)
        else:
            # 200 to a Range request: the server cannot resume, so the file starts over
            have = 0
            total = int(length) if length is not None else None
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{request.full_url} is {total} bytes; the source publishes {size}")
        with open(part, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=not progress, leave=False,
        ) as bar:
            # read1: whatever has arrived, so a slow link still lands bytes on disk as it goes
            while chunk := resp.read1(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    return total


def _content_range_total(header: str | None, have: int) -> int | None:
    """``bytes 100-999/1000`` -> 1000, after checking the server resumed where we asked."""
    if not header or not header.startswith("bytes "):
        raise ConnectionError(f"206 response without a usable Content-Range ({header!r})")
    span, _, total = header[6:].partition("/")
    if int(span.split("-")[0]) != have:
        raise ConnectionError(f"server resumed at {span}, asked for {have}-")
    return None if total == "*" else int(total)


def _verify(part: Path, dest: Path, url: str, md5: str | None, size: int | None) -> None:
    got = part.stat().st_size if part.exists() else 0
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{dest.name} from {url} is {got} bytes, the source publishes {size}; the partial file was "
            "deleted: run the command again to download it afresh"
        )
    if md5 is not None:
        actual = file_md5(part)
        if actual != md5.lower():
            # a resumed file with a wrong checksum stays wrong however often it resumes: start over
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{dest.name} from {url} has md5 {actual}, the source publishes {md5}; the corrupt "
                "download was deleted: run the command again to download it afresh"
            )


def file_md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES * 8):
            h.update(block)
    return h.hexdigest()


def _marker_dir(root: Path) -> Path:
    return root / "helix" / "downloads"


def source_state(source: Source, root: str | os.PathLike) -> str:
    """``complete``, ``extracting`` (interrupted), ``partial`` (a ``.part`` on disk) or ``absent``."""
    root = Path(root)
    markers = _marker_dir(root)
    if (markers / f"{source.filename}.extracting").exists():
        return "extracting"
    if (markers / f"{source.filename}.complete").exists():
        return "complete"
    if (root / "downloads" / f"{source.filename}.part").exists() or (root / "downloads" / source.filename).exists():
        return "partial"
    return "absent"


def mirror_checksums(mirror: str, *, timeout: float = 60.0) -> dict[str, dict]:
    """The ``{file name: {"size", "md5"}}`` a mirror publishes in ``helix-checksums.json``; {} if none.

    A mirror that serves its own copies (a fixture server, an institute's cache of repacked
    archives) vouches for them here; without the file its copies are checked against the
    official values.
    """
    url = mirror.rstrip("/") + "/" + MIRROR_CHECKSUMS
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": _user_agent()}),
                                    timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            return {}
        raise DownloadError(f"cannot read {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DownloadError(f"cannot reach the mirror {mirror}: {getattr(err, 'reason', err)}") from None
    try:
        sums = json.loads(raw)
        if not isinstance(sums, dict):
            raise ValueError("not a JSON object")
        for name, entry in sums.items():
            size, md5 = entry.get("size"), entry.get("md5")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"{name}: size must be a whole number of bytes")
            if not isinstance(md5, str) or len(md5) != 32 or any(c not in "0123456789abcdefABCDEF" for c in md5):
                raise ValueError(f"{name}: md5 must be 32 hex digits")
    except (ValueError, AttributeError) as err:
        raise DownloadError(f"{url} is malformed ({err}); expected "
                            '{"<file name>": {"size": <bytes>, "md5": "<hex>"}}') from None
    return {name: {"size": e["size"], "md5": e["md5"].lower()} for name, e in sums.items()}


def fetch_source(
    source: Source,
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    checksums: dict[str, dict] | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    retry_wait: float | None = None,
) -> None:
    """Download ``source`` into ``<root>/downloads/``, unpack or place it, then mark it complete.

    With a ``mirror``, ``checksums`` (default: what :func:`mirror_checksums` finds there) replace
    the official size and md5 of the files the mirror vouches for.
    """
    root = Path(root)
    markers = _marker_dir(root)
    extracting = markers / f"{source.filename}.extracting"
    complete = markers / f"{source.filename}.complete"
    if complete.exists() and not extracting.exists():
        return
    if mirror:
        source = source.checked_by(mirror_checksums(mirror) if checksums is None else checksums)
    url = source.url_from(mirror)
    archive = download_file(
        url, root / "downloads" / source.filename, md5=source.md5, size=source.size,
        progress=progress, retry_wait=retry_wait,
    )
    markers.mkdir(parents=True, exist_ok=True)
    atomic_write_text(extracting, url + "\n")
    if source.extract_to is not None:
        try:
            extract_archive(archive, root / source.extract_to, progress=progress)
        except ArchiveError as err:
            # kept, the same broken archive would fail every rerun: the next run fetches a fresh one
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{err}; the archive was deleted: run the command again to download it afresh") \
                from None
    else:
        target = root / (source.place or source.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, target)
    record = {"url": url, "md5": source.md5, "bytes": archive.stat().st_size,
              "completed": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(complete, json.dumps(record, indent=1) + "\n")
    extracting.unlink()
    if not keep_archive:
        archive.unlink()
