"""helix.data.download against a real HTTP server on 127.0.0.1: resume, checksums, extraction."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

from helix.data.archives import ArchiveError
from helix.data.download import (
    ChecksumError,
    DownloadError,
    Source,
    download_file,
    extract_archive,
    fetch_source,
    source_state,
)

from .corpora import FixtureServer, make_speechcommands, tar_folder, zip_folder

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB: several read chunks


@pytest.fixture
def served(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "blob.bin").write_bytes(PAYLOAD)
    return site


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_plain_download_verifies_and_renames(served, tmp_path):
    with FixtureServer(served) as srv:
        out = download_file(f"{srv.url}/blob.bin", tmp_path / "dl" / "blob.bin", md5=_md5(PAYLOAD),
                            size=len(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "blob.bin.part").exists()
    assert srv.requests == [("blob.bin", None, 200, len(PAYLOAD))]


def test_dropped_connection_resumes_with_range(served, tmp_path):
    with FixtureServer(served) as srv:
        srv.cut["blob.bin"] = 300_000
        out = download_file(f"{srv.url}/blob.bin", tmp_path / "blob.bin", md5=_md5(PAYLOAD), retry_wait=0,
                            progress=False)
    assert out.read_bytes() == PAYLOAD
    (first, _, s1, n1), (second, rng, s2, n2) = srv.requests
    assert (s1, n1) == (200, 300_000)
    assert rng == "bytes=300000-" and s2 == 206 and n2 == len(PAYLOAD) - 300_000  # only the rest travelled


def test_failed_run_keeps_its_bytes_for_the_next_call(served, tmp_path):
    dest = tmp_path / "blob.bin"
    with FixtureServer(served) as srv:
        srv.cut["blob.bin"] = 123_456
        srv.unavailable["blob.bin"] = 2  # after the drop the server is down for a while
        with pytest.raises(DownloadError, match=r"Run the same command again: it resumes from the 123456 bytes"):
            download_file(f"{srv.url}/blob.bin", dest, retries=1, retry_wait=0, progress=False)
        assert (tmp_path / "blob.bin.part").stat().st_size == 123_456 and not dest.exists()
        download_file(f"{srv.url}/blob.bin", dest, md5=_md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert srv.requests[-1][1:] == ("bytes=123456-", 206, len(PAYLOAD) - 123_456)


def test_killed_process_resumes(served, tmp_path):
    dest = tmp_path / "blob.bin"
    part = tmp_path / "blob.bin.part"
    with FixtureServer(served, throttle=0.01) as srv:
        code = ("from helix.data.download import download_file; "
                f"download_file({srv.url + '/blob.bin'!r}, {str(dest)!r}, progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 20
        while (not part.exists() or part.stat().st_size < 100_000) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        kept = part.stat().st_size
        assert 100_000 <= kept < len(PAYLOAD) and not dest.exists()
        srv.throttle = 0.0
        download_file(f"{srv.url}/blob.bin", dest, md5=_md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert srv.requests[-1][1] == f"bytes={kept}-"


def test_server_without_range_support_restarts_cleanly(served, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:5000])
    with FixtureServer(served, support_range=False) as srv:
        out = download_file(f"{srv.url}/blob.bin", tmp_path / "blob.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD  # not the 5000 stale bytes + the whole file
    assert srv.requests[0][2] == 200


def test_complete_part_file_gets_416_and_is_verified(served, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    with FixtureServer(served) as srv:
        out = download_file(f"{srv.url}/blob.bin", tmp_path / "blob.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and srv.requests[0][2] == 416


def test_checksum_mismatch_fails_clearly_and_discards_the_file(served, tmp_path):
    with FixtureServer(served) as srv:
        with pytest.raises(ChecksumError) as info:
            download_file(f"{srv.url}/blob.bin", tmp_path / "blob.bin", md5="0" * 32, progress=False)
    msg = str(info.value)
    assert "blob.bin" in msg and _md5(PAYLOAD) in msg and "0" * 32 in msg and "run the command again" in msg
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_size_mismatch_and_missing_file(served, tmp_path):
    with FixtureServer(served) as srv:
        with pytest.raises(DownloadError, match=f"is {len(PAYLOAD)} bytes; the source publishes 10"):
            download_file(f"{srv.url}/blob.bin", tmp_path / "a.bin", size=10, progress=False)
        with pytest.raises(DownloadError, match=r"nothing\.bin failed: HTTP 404"):
            download_file(f"{srv.url}/nothing.bin", tmp_path / "b.bin", progress=False)
    assert [r[2] for r in srv.requests].count(404) == 1  # a 404 is not retried


def test_progressing_transfers_are_not_counted_as_failures(served, tmp_path):
    with FixtureServer(served) as srv:
        srv.cut["blob.bin"] = 1000
        out = download_file(f"{srv.url}/blob.bin", tmp_path / "blob.bin", retries=0, retry_wait=0, progress=False)
    assert out.read_bytes() == PAYLOAD


def test_unreachable_server_is_retried_then_reported(tmp_path):
    with pytest.raises(DownloadError, match=r"failed 2 times"):
        download_file("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", retries=1, retry_wait=0, timeout=2,
                      progress=False)


def test_extract_refuses_paths_outside_the_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(ArchiveError, match="outside the dataset folder"):
        extract_archive(evil, tmp_path / "out", progress=False)
    assert not (tmp_path / "outside.txt").exists()
    evil_tar = tmp_path / "evil.tar"
    with tarfile.open(evil_tar, "w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        tar.addfile(info)
    with pytest.raises(ArchiveError, match="cannot extract"):
        extract_archive(evil_tar, tmp_path / "out2", progress=False)


def test_fetch_writes_the_completion_marker_last(tmp_path):
    corpus = make_speechcommands(tmp_path / "src", per_word=2)
    site = tmp_path / "site"
    site.mkdir()
    tar_folder(corpus, site / "sc.tar.gz", flat=True)
    source = Source("http://example.invalid/data/sc.tar.gz", "sc.tar.gz")
    root = tmp_path / "root"
    with FixtureServer(site) as srv:
        fetch_source(source, root, mirror=srv.url, progress=False, retry_wait=0)
        assert source_state(source, root) == "complete"
        assert (root / "yes" / "00000000_nohash_0.wav").is_file() and (root / "validation_list.txt").is_file()
        assert not (root / "downloads" / "sc.tar.gz").exists()  # archive removed once unpacked
        fetch_source(source, root, mirror=srv.url, progress=False)  # complete: no second transfer
    assert [r[0] for r in srv.requests] == ["helix-checksums.json", "sc.tar.gz"]


def test_failed_extraction_never_looks_complete(tmp_path):
    corpus = make_speechcommands(tmp_path / "src", per_word=2)
    site = tmp_path / "site"
    site.mkdir()
    whole = tar_folder(corpus, tmp_path / "whole.tar.gz", flat=True).read_bytes()
    (site / "sc.tar.gz").write_bytes(whole[: len(whole) // 2])  # a broken archive, served in full
    source = Source("http://example.invalid/sc.tar.gz", "sc.tar.gz")
    root = tmp_path / "root"
    with FixtureServer(site) as srv:
        with pytest.raises(DownloadError, match="cannot extract .*the archive was deleted: run the command again"):
            fetch_source(source, root, mirror=srv.url, progress=False)
        assert source_state(source, root) == "extracting"
        assert not (root / "helix" / "downloads" / "sc.tar.gz.complete").exists()
        assert not (root / "validation_list.txt").exists()  # nothing half-unpacked in place
        # the broken archive is gone, so the rerun fetches a fresh (now whole) copy
        assert not (root / "downloads" / "sc.tar.gz").exists()
        (site / "sc.tar.gz").write_bytes(whole)
        fetch_source(source, root, mirror=srv.url, progress=False)
    assert source_state(source, root) == "complete" and (root / "validation_list.txt").is_file()


def _sc_site(tmp_path, name="sc.tar.gz"):
    corpus = make_speechcommands(tmp_path / "src", per_word=3)
    site = tmp_path / "site"
    site.mkdir()
    return site, tar_folder(corpus, site / name, flat=True).read_bytes()


@pytest.mark.parametrize("support_range", [True, False])
def test_drop_without_length_or_checksum_is_not_taken_as_complete(tmp_path, support_range):
    """No published size or md5 and no Content-Length: only reading the archive tells a cut."""
    site, whole = _sc_site(tmp_path)
    source = Source("http://example.invalid/sc.tar.gz", "sc.tar.gz")
    root = tmp_path / "root"
    with FixtureServer(site, support_range=support_range, send_length=False) as srv:
        srv.cut["sc.tar.gz"] = len(whole) // 2
        fetch_source(source, root, mirror=srv.url, progress=False, retry_wait=0)
    assert source_state(source, root) == "complete" and (root / "no" / "00000002_nohash_0.wav").is_file()
    transfers = [r for r in srv.requests if r[0] == "sc.tar.gz"]
    assert len(transfers) == 2 and transfers[0][3] == len(whole) // 2
    if support_range:
        assert transfers[1][1:3] == (f"bytes={len(whole) // 2}-", 206)  # only the rest travelled


@pytest.mark.parametrize("support_range", [True, False])
@pytest.mark.parametrize("make_broken", [
    lambda whole: whole[: len(whole) // 2],  # a tar.gz cut short
    lambda whole: whole[:-2000] + bytes(2000),  # the right length, the end overwritten
])
def test_lengthless_broken_archive_is_deleted_and_a_rerun_downloads_again(tmp_path, make_broken, support_range):
    site, whole = _sc_site(tmp_path)
    (site / "sc.tar.gz").write_bytes(make_broken(whole))
    source = Source("http://example.invalid/sc.tar.gz", "sc.tar.gz")
    root = tmp_path / "root"
    with FixtureServer(site, send_length=False, support_range=support_range) as srv:
        with pytest.raises(DownloadError, match=r"sc\.tar\.gz from .* is not a whole archive .*the partial file "
                                                r"was deleted: run the command again"):
            fetch_source(source, root, mirror=srv.url, progress=False, retry_wait=0)
        assert not list((root / "downloads").iterdir())  # neither the file nor a .part is kept
        assert source_state(source, root) == "absent"
        assert len(srv.requests) <= 3  # checksums, the file, one try for the rest: no retry loop
        (site / "sc.tar.gz").write_bytes(whole)  # the server is fixed
        fetch_source(source, root, mirror=srv.url, progress=False, retry_wait=0)
    assert source_state(source, root) == "complete"


def test_zip_integrity_is_checked_member_by_member(tmp_path):
    from helix.data.archives import archive_problem

    folder = tmp_path / "ESC-50-master"
    (folder / "audio").mkdir(parents=True)
    (folder / "audio" / "a.wav").write_bytes(PAYLOAD)
    good = zip_folder(folder, tmp_path / "good.zip")
    assert archive_problem(good, "master.zip") is None
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 10] = bytes(10)  # inside a.wav (stored): the directory is intact
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    assert "a.wav" in archive_problem(tmp_path / "bad.zip", "master.zip")
    (tmp_path / "cut.zip").write_bytes(good.read_bytes()[: len(data) // 2])
    assert archive_problem(tmp_path / "cut.zip", "master.zip")  # no central directory


def test_mirror_publishes_its_own_checksums(tmp_path):
    import json

    site, whole = _sc_site(tmp_path, "speech.tar.gz")
    # the official source publishes an md5 that the mirror's repacked copy does not have
    source = Source("https://official.invalid/data/speech.tar.gz", "speech.tar.gz", md5="0" * 32, size=1)
    sums = site / "helix-checksums.json"
    sums.write_text(json.dumps({"speech.tar.gz": {"size": len(whole), "md5": _md5(whole)}}))
    with FixtureServer(site) as srv:
        fetch_source(source, tmp_path / "a", mirror=srv.url, progress=False)
        assert source_state(source, tmp_path / "a") == "complete"
        # the mirror's values are checked like official ones
        sums.write_text(json.dumps({"speech.tar.gz": {"size": len(whole), "md5": "f" * 32}}))
        with pytest.raises(ChecksumError, match="f" * 32):
            fetch_source(source, tmp_path / "b", mirror=srv.url, progress=False)
        # without the file, the official values apply
        sums.unlink()
        with pytest.raises(DownloadError, match="the source publishes 1"):
            fetch_source(source, tmp_path / "c", mirror=srv.url, progress=False)
        for bad in ("[1, 2]", '{"speech.tar.gz": {"size": "big", "md5": "x"}}', "{nope"):
            sums.write_text(bad)
            with pytest.raises(DownloadError, match=r"helix-checksums\.json is malformed"):
                fetch_source(source, tmp_path / "d", mirror=srv.url, progress=False)
