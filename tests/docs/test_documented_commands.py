"""Every command in README.md and docs/*.md, run verbatim by a newcomer with the wheel installed.

Two readers, each in an empty folder of their own: one pastes the README's commands in order, the
other works through docs/data.md, training.md, inference.md (then any other doc) in order, so each
document's commands find what the earlier ones wrote. Downloads come from a loopback mirror of
small archives in each corpus's official layout (``HELIX_MIRROR``); training commands run as
documented but tiny (``HELIX_OVERRIDES``, applied after the command line). Files the documents
assume the reader owns (``recording.flac``, ``my_audio/``, ...) appear just before the first command
that names them. A command fails the test when it exits non-zero, prints a traceback, or does not
write the file its ``# -> path`` comment promises.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .extract import Snippet, extract_file
from .sandbox import REPO, TINY_OVERRIDES, Install, build_mirror, clean_env, corpora, install_wheel, run_snippet

FIRST_DOCS = ["docs/data.md", "docs/training.md", "docs/inference.md"]


def reading_order() -> dict[str, list[str]]:
    rest = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
    return {"readme": ["README.md"],
            "docs": [d for d in FIRST_DOCS if (REPO / d).exists()] + [d for d in rest if d not in FIRST_DOCS]}


def session_snippets(name: str) -> list[Snippet]:
    return [s for doc in reading_order()[name] for s in extract_file(REPO / doc, REPO)]


SKIPPED = [s for name in reading_order() for s in session_snippets(name) if s.skip]


@pytest.fixture(scope="session")
def installed(tmp_path_factory, worker_id):
    """One wheel and environment for both readers, built by whichever ``pytest -n`` worker asks
    first (the other waits on the lock): the numba kernels then compile once into its
    site-packages, not once per reader. Each reader still works in an empty folder of its own."""
    if worker_id == "master":
        return install_wheel(tmp_path_factory.mktemp("docs-wheel"))
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every worker of this run
    with open(shared / "docs-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "docs-wheel.json"
        if record.exists():
            return Install(**{k: Path(v) for k, v in json.loads(record.read_text()).items()})
        done = install_wheel(shared / "docs-wheel")
        record.write_text(json.dumps({k: str(v) for k, v in vars(done).items()}))
        return done


@pytest.fixture(scope="session")
def mirror(tmp_path_factory):
    with corpora.FixtureServer(build_mirror(tmp_path_factory.mktemp("docs-mirror"))) as server:
        yield server.url


def _check_overrides(installed, env, folder) -> None:
    """Training at the documented size would take hours: make sure the tiny settings apply."""
    res = subprocess.run([str(installed.bin / "helix"), "train", "--config", "esc50", "--print-config"],
                         cwd=folder, env=env, capture_output=True, text=True)
    try:
        epochs = yaml.safe_load(res.stdout)["optim"]["epochs"]
    except Exception:  # noqa: BLE001 (any unreadable answer is reported below)
        epochs = None
    if res.returncode:
        last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
        pytest.fail(f"the installed wheel's `helix train --config esc50 --print-config` fails (exit "
                    f"{res.returncode}): {last}", pytrace=False)
    if epochs != 1:
        pytest.fail(f"HELIX_OVERRIDES is not applied: with 'optim.epochs=1 ...' the resolved config has "
                    f"epochs={epochs!r}; the documented trainings would run at full size", pytrace=False)


# about 25 and 45 CLI processes, each importing torch (~1.5 s of CPU apiece); the seconds are what
# each took on the 2-core VM, for tests/conftest.py to start them on different workers
@pytest.mark.parametrize("session", [pytest.param("readme", marks=pytest.mark.slow(seconds=70)),
                                     pytest.param("docs", marks=pytest.mark.slow(seconds=190))])
def test_documented_commands_work(session, installed, mirror, tmp_path):
    reader = tmp_path / "reader"
    scratch = tmp_path / "scratch"
    reader.mkdir()
    scratch.mkdir()
    env = clean_env(installed.bin, HELIX_MIRROR=mirror, HELIX_OVERRIDES=TINY_OVERRIDES)
    _check_overrides(installed, env, scratch)

    start = time.perf_counter()
    outcomes = []
    for snippet in session_snippets(session):
        if snippet.skip:
            continue
        outcome = run_snippet(snippet, reader, env, installed.python, scratch)
        outcomes.append(outcome)
        print(f"{outcome.seconds:6.1f} s {outcome.cpu_seconds:6.1f} s cpu  {'FAIL' if outcome.problem else 'ok  '}  "
              f"{snippet.where}  {snippet.short()}")
    print(f"{len(outcomes)} commands in {time.perf_counter() - start:.1f} s, "
          f"{sum(o.cpu_seconds for o in outcomes):.1f} s of CPU")
    failed = [o for o in outcomes if o.problem]
    assert outcomes, f"no runnable command found in {reading_order()[session]}"
    if failed:
        pytest.fail(f"{len(failed)} of {len(outcomes)} documented command(s) fail for a reader of "
                    f"{', '.join(reading_order()[session])}:\n" + "\n".join(o.describe() for o in failed),
                    pytrace=False)


@pytest.mark.parametrize("snippet", SKIPPED, ids=[f"{s.where} {s.short(40)}" for s in SKIPPED])
def test_skipped_command(snippet):
    """One line per command a document exempts (``<!-- docs-test: skip (reason) -->``), for the report."""
    pytest.skip(f"{snippet.where} `{snippet.short()}` is not run: {snippet.skip}")
