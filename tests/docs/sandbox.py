"""A newcomer's machine in a temporary folder: helix installed from its wheel, corpora on a mirror.

- :func:`install_wheel` builds the wheel from a copy of the working tree and installs it into a
  fresh virtual environment. The environment sees the test interpreter's site-packages (torch,
  numpy, ...) through a plain path in a ``.pth`` file, so nothing is downloaded; a plain path does
  not run that folder's own ``.pth`` files, so the editable install of helix there stays invisible
  and ``import helix`` finds the wheel's copy (checked).
- :func:`serve_mirror` serves small archives in each corpus's official layout from a loopback HTTP
  server, with ``helix-checksums.json`` beside them, for ``HELIX_MIRROR``.
- :func:`run_snippet` runs one documented command the way a reader would: from the session folder,
  with the environment's ``bin`` first on ``PATH`` and ``HELIX_DATA_DIR`` unset.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .extract import Snippet

REPO = Path(__file__).resolve().parents[2]

# trains every documented preset in about a second: one epoch of a narrow model on short clips;
# the later of two settings wins, so these beat the documented ones (HELIX_OVERRIDES comes last)
TINY_OVERRIDES = ("optim.epochs=1 optim.batch_size=4 optim.grad_accum_steps=1 model.overrides.d_model=8 "
                  "model.overrides.d_state=2 data.clip_seconds=0.5 data.num_workers=0 device=cpu")
# the demo trains on synthetic clips generated in code: fewer of them, at its own batch size
DEMO_OVERRIDES = ("optim.epochs=1 model.overrides.d_model=8 model.overrides.d_state=2 data.task_kwargs.num_train=64 "
                  "data.task_kwargs.num_val=32 data.task_kwargs.num_test=32")


def overrides_for(snippet: Snippet) -> str:
    """The ``HELIX_OVERRIDES`` a documented command runs under."""
    return DEMO_OVERRIDES if "helix demo" in snippet.text else TINY_OVERRIDES

# copied into the wheel build: the working tree minus what is not part of the project (anywhere,
# or at the top: a src/helix/data package must not go the way of a top-level data/ folder)
_NOT_SOURCE = {".git", ".venv", ".pytest_cache", "__pycache__", ".mypy_cache", ".ruff_cache"}
_NOT_SOURCE_TOP = {"venv", "build", "dist", "runs", "data", ".whl"}


def _ignore(repo: Path):
    def ignore(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == repo
        return [n for n in names if n in _NOT_SOURCE or n.endswith(".egg-info") or (top and n in _NOT_SOURCE_TOP)]
    return ignore


def _corpora():
    """tests/data/corpora.py (the on-disk layouts the data tests use), loaded by path."""
    spec = importlib.util.spec_from_file_location("helix_test_corpora", REPO / "tests" / "data" / "corpora.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpora = _corpora()


def _check(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@dataclass
class Install:
    venv: Path
    python: Path
    bin: Path
    site: Path
    wheel: Path


def install_wheel(work: Path, repo: Path = REPO) -> Install:
    """Build helix's wheel from a copy of the working tree ``repo`` and install it into ``work/venv``."""
    src = work / "src"
    shutil.copytree(repo, src, ignore=_ignore(repo))
    _check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
            "-w", str(work / "wheel"), str(src)])
    wheel, = (work / "wheel").glob("helix_audio-*.whl")

    venv = work / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_check([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_outer_site.pth").write_text("".join(p + "\n" for p in sorted(outer)))
    # --ignore-installed: pip would otherwise see the editable helix-audio through the .pth
    _check([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
            str(wheel)])
    _console_scripts(venv / "bin", python)

    probe = _check([str(python), "-c", "import helix, sys; print(helix.__file__); print(sys.path)"],
                   cwd=work, env=clean_env(venv / "bin"))
    location = Path(probe.stdout.splitlines()[0]).resolve()
    if not location.is_relative_to(site.resolve()):
        raise RuntimeError(f"the new environment imports helix from {location}, not from the wheel in {site}")
    if str(repo / "src") in probe.stdout:
        raise RuntimeError(f"{repo / 'src'} leaked onto the new environment's sys.path")
    # the numba kernels compile on their first import into the wheel's own __pycache__ (cache=True):
    # once here, not once in each reader's first command (the demo's two workers would each compile)
    _check([str(python), "-c", "import helix.ops.selective_scan.cpu, helix.ops.causal_conv.cpu"],
           cwd=work, env=clean_env(venv / "bin"))
    return Install(venv, python, venv / "bin", site, wheel)


def _console_scripts(bindir: Path, python: Path) -> None:
    """The scripts pip would have put in ``bin`` had it installed helix's dependencies (torchrun)."""
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower() in {"helix-audio", "helix_audio"}:
            continue
        for ep in dist.entry_points.select(group="console_scripts"):
            script = bindir / ep.name
            if script.exists():
                continue
            module, _, attr = ep.value.partition(":")
            call = f"{module}.{attr}" if attr else module
            script.write_text(f"#!{python}\nimport sys\nimport {module}\nsys.exit({call}())\n")
            script.chmod(0o755)


def clean_env(bindir: Path, **extra: str) -> dict[str, str]:
    """A reader's shell: the environment's ``bin`` first, no helix variables from the test run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HELIX_", "PYTHON", "VIRTUAL_ENV", "CONDA", "PYTEST", "COV_"))}
    system = [p for p in env.get("PATH", os.defpath).split(os.pathsep)
              if p and not (Path(p) / "python").exists() and not (Path(p) / "helix").exists()]
    env["PATH"] = os.pathsep.join([str(bindir), *system, "/usr/bin", "/bin"])
    env["VIRTUAL_ENV"] = str(bindir.parent)
    # two sessions share two cores; one thread each keeps tiny models from thrashing
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", **extra)
    return env


# -- the mirror -------------------------------------------------------------------------------------
def build_mirror(folder: Path) -> Path:
    """Each corpus's archive under the name its official URL ends in, plus helix-checksums.json."""
    files = folder / "files"
    files.mkdir(parents=True)
    stage = folder / "stage"
    esc = corpora.make_esc50(stage / "esc50")
    corpora.zip_folder(esc, files / "master.zip")
    corpora.make_speechcommands(stage / "speechcommands")
    corpora.tar_folder(stage / "speechcommands", files / "speech_commands_v0.02.tar.gz", flat=True)
    for subset in ("train-clean-100", "train-clean-360"):
        libri = corpora.make_librispeech(stage / subset, subset=subset)
        corpora.tar_folder(libri, files / f"{subset}.tar.gz")
    us8k = corpora.make_urbansound8k(stage / "urbansound8k")
    corpora.tar_folder(us8k, files / "UrbanSound8K.tar.gz")
    sums = {p.name: {"size": p.stat().st_size, "md5": hashlib.md5(p.read_bytes()).hexdigest()}
            for p in sorted(files.iterdir())}
    (files / "helix-checksums.json").write_text(json.dumps(sums, indent=1) + "\n")
    shutil.rmtree(stage)
    return files


# -- the reader's own recordings ----------------------------------------------------------------------
def _tone(path: Path, seconds: float, sr: int = 16000, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _trials(folder: Path) -> None:
    wav = folder / "VoxCeleb1" / "wav"
    for spk, freq in (("id10001", 300.0), ("id10002", 700.0)):
        for utt in ("1", "2"):
            _tone(wav / spk / f"{utt}.wav", 1.0, freq=freq + 20 * int(utt))
    (folder / "voxceleb1_test.txt").write_text(
        "1 id10001/1.wav id10001/2.wav\n0 id10001/1.wav id10002/1.wav\n"
        "1 id10002/1.wav id10002/2.wav\n0 id10002/2.wav id10001/2.wav\n")


def _tags(folder: Path) -> None:
    """A multi-label CSV corpus: a low tone tagged ``engine``, a high one ``bird``, both mixed tagged
    ``bird;engine``; six clips of each."""
    lines = ["path,label"]
    for i in range(18):
        label, freqs = (("engine", (220,)), ("bird", (2400,)), ("bird;engine", (220, 2400)))[i % 3]
        for freq in freqs:
            _tone(folder / f"tmp{freq}.wav", 0.6 + 0.05 * (i % 4), freq=freq)
        waves = [sf.read(folder / f"tmp{freq}.wav")[0] for freq in freqs]
        sf.write(folder / f"clip{i:02d}.wav", sum(waves) / len(waves), 16000)
        lines.append(f"clip{i:02d}.wav,{label}")
    for tmp in folder.glob("tmp*.wav"):
        tmp.unlink()
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


#: files the documents assume the reader has (their own recordings); each is written into the
#: session folder just before the first command that names it
USER_FILES = {
    "recording.flac": lambda d: _tone(d / "recording.flac", 2.0, 44100),
    "dog_bark.flac": lambda d: _tone(d / "dog_bark.flac", 1.5, 22050),
    "clip.wav": lambda d: _tone(d / "clip.wav", 1.0),
    "long.flac": lambda d: _tone(d / "long.flac", 6.0),
    "long.wav": lambda d: _tone(d / "long.wav", 4.0),
    "a.wav": lambda d: _tone(d / "a.wav", 1.0, freq=300),
    "b.wav": lambda d: _tone(d / "b.wav", 1.0, freq=600),
    "my_audio/": lambda d: [_tone(d / "my_audio" / n, 1.2, freq=f) for n, f in (("x.wav", 300), ("y.flac", 800))],
    "recordings/": lambda d: [_tone(d / "recordings" / n, 1.0, freq=f) for n, f in (("r1.wav", 400), ("sub/r2.ogg", 900))],
    "wavs/": lambda d: [_tone(d / "wavs" / n, 1.0, freq=f) for n, f in (("s1.wav", 350), ("s2.wav", 650))],
    "voxceleb1_test.txt": _trials,
    # README "your own sounds": one folder per class, five files each (enough for a 3-way split)
    "my_sounds": lambda d: [_tone(d / "my_sounds" / c / f"{i}.wav", 0.6 + 0.1 * i, 16000 + 6050 * (i % 2), freq=f)
                            for c, f in (("hum", 250), ("whistle", 1800)) for i in range(5)],
    # docs/data.md "your own files": a CSV of multi-label tags (tags/labels.csv + 18 clips)
    "tags/": lambda d: _tags(d / "tags"),
}


def provide_user_files(snippet: Snippet, folder: Path) -> list[str]:
    made = []
    for name, make in USER_FILES.items():
        if name in snippet.text and not (folder / name.rstrip("/")).exists():
            make(folder)
            made.append(name)
    return made


# -- running ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    snippet: Snippet
    returncode: int
    output: str
    seconds: float
    cpu_seconds: float  # user + system time of the command's processes
    problem: str | None  # why it counts as failed, or None

    def describe(self) -> str:
        tail = "\n".join("      " + ln for ln in self.output.strip().splitlines()[-8:])
        return f"{self.snippet.where}: `{self.snippet.short()}` -> {self.problem}\n{tail}"


def run_snippet(snippet: Snippet, folder: Path, env: dict[str, str], python: Path, scratch: Path,
                timeout: float = 300.0) -> Outcome:
    provide_user_files(snippet, folder)
    env = {**env, "HELIX_OVERRIDES": overrides_for(snippet)}
    if snippet.lang == "python":
        script = scratch / f"{snippet.doc.replace('/', '_')}_{snippet.line}.py"
        script.write_text(snippet.text)
        cmd = [str(python), str(script)]
    else:
        cmd = ["bash", "-o", "pipefail", "-c", snippet.text]
    start, cpu = time.perf_counter(), _children_cpu()
    try:
        res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        return Outcome(snippet, -1, out, time.perf_counter() - start, _children_cpu() - cpu,
                       f"still running after {timeout:.0f} s")
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    output = res.stdout + res.stderr
    problem = None
    if res.returncode:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        problem = f"exit status {res.returncode}: {lines[-1] if lines else '(no message)'}"
    elif "Traceback (most recent call last)" in res.stderr:
        problem = "a traceback on stderr although the exit status is 0"
    elif snippet.lang == "bash":
        problem = _missing_promised_output(snippet, folder)
    return Outcome(snippet, res.returncode, output, seconds, cpu, problem)


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _missing_promised_output(snippet: Snippet, folder: Path) -> str | None:
    """A ``# -> path`` comment promises that the command writes ``path``: hold it to that."""
    _, sep, comment = snippet.text.partition("# ->")
    if not sep:
        return None
    target = comment.split()[0] if comment.split() else ""
    if "/" in target or "." in target:
        if not (folder / target).exists():
            return f"finished, but {target} (promised by its comment) does not exist"
    return None
