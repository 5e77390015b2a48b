"""Tiny corpora in each corpus's exact on-disk layout, and a loopback HTTP server for downloads.

Audio is real: WAV/FLAC/OGG written with soundfile, short enough that a whole corpus is a few
hundred kilobytes. Each utterance/clip holds a tone whose frequency encodes its identity, so tests
can tell which file a stitched or concatenated waveform came from.
"""

from __future__ import annotations

import csv
import gzip
import http.server
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(T,) or (T, C) sine; channel c is scaled by 1/(c+1) so a mono mix is predictable."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x / (c + 1) for c in range(channels)], axis=1)


def write_audio(path: Path, seconds: float, sr: int, freq: float = 440.0, channels: int = 1,
                subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, freq, channels), sr, subtype=subtype)
    return path


# -- ESC-50: ESC-50-master/{audio/*.wav, meta/esc50.csv}, 44.1 kHz mono ---------------------------
ESC50_CLASSES = ("dog", "rain", "crow")


def make_esc50(root: Path, folds: int = 5, per_fold: int = 1, seconds: float = 0.25) -> Path:
    corpus = root / "ESC-50-master"
    rows = []
    for fold in range(1, folds + 1):
        for target, category in enumerate(ESC50_CLASSES):
            for take in range(per_fold):
                name = f"{fold}-{1000 + 10 * target + take}-A-{target}.wav"
                write_audio(corpus / "audio" / name, seconds, 44100, freq=300 + 100 * target)
                rows.append([name, fold, target, category, "False", f"{1000 + target}", "A"])
    (corpus / "meta").mkdir(parents=True)
    with open(corpus / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return corpus


def add_esc50_row(corpus: Path, name: str, fold: int = 1, category: str = "dog") -> Path:
    """Append a metadata row for ``audio/<name>`` (the file itself is the caller's business)."""
    with open(corpus / "meta" / "esc50.csv", "a", newline="") as f:
        csv.writer(f).writerow([name, fold, 0, category, "False", "1", "A"])
    return corpus / "audio" / name


# -- UrbanSound8K: UrbanSound8K/{audio/fold<k>/*.wav, metadata/UrbanSound8K.csv}, mixed formats ----
US8K_CLASSES = ("dog_bark", "siren", "street_music")
# the real corpus keeps its Freesound originals' formats; so do these
US8K_FORMATS = ((44100, 1, "PCM_16"), (48000, 2, "PCM_24"), (22050, 1, "PCM_U8"), (96000, 2, "FLOAT"))


def make_urbansound8k(root: Path, folds: int = 4, seconds: float = 0.3) -> Path:
    corpus = root / "UrbanSound8K"
    rows = []
    for fold in range(1, folds + 1):
        for class_id, name in enumerate(US8K_CLASSES):
            sr, ch, subtype = US8K_FORMATS[(fold + class_id) % len(US8K_FORMATS)]
            fname = f"{100 + fold}-{class_id}-0-{fold}.wav"
            write_audio(corpus / "audio" / f"fold{fold}" / fname, seconds, sr, freq=500, channels=ch, subtype=subtype)
            rows.append([fname, 100 + fold, 0.0, seconds, 1, fold, class_id, name])
    (corpus / "metadata").mkdir(parents=True)
    with open(corpus / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(rows)
    return corpus


# -- Speech Commands v0.02: flat, <word>/<hash>_nohash_<n>.wav + lists + _background_noise_ ---------
SC_WORDS = ("no", "up", "yes")


def make_speechcommands(root: Path, per_word: int = 6, seconds: float = 1.0) -> Path:
    """Per word: files 0..per_word-1; #0 in the validation list, #1 in the testing list."""
    val, test = [], []
    for w, word in enumerate(SC_WORDS):
        for n in range(per_word):
            rel = f"{word}/{n:08x}_nohash_0.wav"
            # the last clip of each word is shorter than a second, as many real ones are
            write_audio(root / rel, seconds if n < per_word - 1 else 0.6 * seconds, 16000, freq=200 + 150 * w + 10 * n)
            (val if n == 0 else test if n == 1 else []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    write_audio(root / "_background_noise_" / "white_noise.wav", 2.0, 16000, freq=1000)
    write_audio(root / "_background_noise_" / "running_tap.wav", 1.5, 16000, freq=900)
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    return root


# -- LibriSpeech: LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac --------------------
def make_librispeech(root: Path, subset: str = "train-clean-100", speakers=(19, 26, 103), chapters: int = 2,
                     utts: int = 3, seconds: float = 0.5) -> Path:
    corpus = root / "LibriSpeech"
    for s, spk in enumerate(speakers):
        for c in range(chapters):
            chap = 100 + c
            folder = corpus / subset / str(spk) / str(chap)
            lines = []
            for u in range(utts):
                stem = f"{spk}-{chap}-{u:04d}"
                write_audio(folder / f"{stem}.flac", seconds, 16000, freq=librispeech_freq(s, c, u))
                lines.append(f"{stem} SOME WORDS")
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    (corpus / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET |MINUTES| NAME\n")
    return corpus


def librispeech_freq(s: int, c: int, u: int) -> float:
    return 200.0 + 300 * s + 60 * c + 15 * u


# -- VoxPopuli: raw sessions + asr_<lang>.tsv.gz, or the segmented official output -------------------
def voxpopuli_rows(speakers=("1001", "1002", "1003"), sessions: int = 2, per_session: int = 2):
    """(session_id, id_, speaker, split, vad) of a tiny corpus; plus one segment without a speaker."""
    rows = []
    for s in range(sessions):
        sid = f"2019{s + 1:02d}15-0900-PLENARY-{s + 3}"
        for k, spk in enumerate(speakers):
            for j in range(per_session):
                start = 0.1 + 0.5 * (k * per_session + j)
                vad = [(round(start, 2), round(start + 0.2, 2)), (round(start + 0.25, 2), round(start + 0.4, 2))]
                rows.append((sid, f"en_2019{s + 1:02d}15-09:{k}{j}:00_{j}", spk, ("train", "dev", "test")[j % 3], vad))
        rows.append((sid, "en_nobody_0", "None", "train", [(0.0, 0.1)]))
    return rows


def make_voxpopuli_raw(root: Path, lang: str = "en", **kw) -> Path:
    rows = voxpopuli_rows(**kw)
    for sid in sorted({r[0] for r in rows}):
        write_audio(root / "raw_audios" / "original" / sid[:4] / f"{sid}_original.ogg", 4.0, 16000, freq=330)
    out = root / "transcribed_data" / lang
    out.mkdir(parents=True)
    header = ["id_", "session_id", "id", "split", "vad", "speaker_id", "gender", "is_gold_transcript",
              "accent", "original_text", "normed_text", "start_time", "end_time"]
    with gzip.open(out / f"asr_{lang}.tsv.gz", "wt", newline="") as f:
        w = csv.writer(f, delimiter="|")
        w.writerow(header)
        for sid, id_, spk, split, vad in rows:
            w.writerow([id_, sid, f"{sid}-{id_}", split, str(vad), spk, "female", "True", "None",
                        'He said "yes".', "he said yes", vad[0][0], vad[-1][1]])
    return root


def make_voxpopuli_processed(root: Path, lang: str = "en", **kw) -> Path:
    out = root / "transcribed_data" / lang
    lines = {s: ["id\traw_text\tnormalized_text\tspeaker_id\tsplit\tgender"] for s in ("train", "dev", "test")}
    for n, (sid, id_, spk, split, vad) in enumerate(voxpopuli_rows(**kw)):
        stem = f"{sid}-{id_}"
        write_audio(out / sid[:4] / f"{stem}.ogg", sum(b - a for a, b in vad), 16000, freq=250 + 40 * n)
        lines[split].append(f'{stem}\tHe said "yes".\the said yes\t{spk}\t{split}\tmale')
    for split, text in lines.items():
        (out / f"asr_{split}.tsv").write_text("\n".join(text) + "\n")
    return root


# -- archives ---------------------------------------------------------------------------------------
def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` with its own name as the top-level entry (like GitHub's archives)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent).as_posix())
    return archive


def tar_folder(folder: Path, archive: Path, flat: bool = False) -> Path:
    """tar.gz of ``folder`` (its contents at the top when ``flat``, like Speech Commands)."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=p.name if flat else f"{folder.name}/{p.name}")
    return archive


# -- loopback HTTP server ---------------------------------------------------------------------------
class FixtureServer:
    """Serves files from ``directory`` on 127.0.0.1 with HTTP Range support.

    ``cut[name] = n`` makes the next response for ``name`` stop after ``n`` body bytes and drop the
    connection (one shot); ``unavailable[name] = k`` answers the next ``k`` requests (after a
    pending cut) with 503; ``throttle`` (seconds per 16 KiB) slows every body down, so a client can
    be killed mid-transfer. ``send_length=False`` leaves out Content-Length (the body ends when the
    connection closes, as with a streaming server), so a cut looks like a complete answer; a 206
    still says the total in Content-Range. ``requests`` logs (path, Range header or None, status, body bytes sent
    -- or about to be: a client may hang up early).
    """

    def __init__(self, directory: Path, support_range: bool = True, throttle: float = 0.0, send_length: bool = True):
        self.directory = Path(directory)
        self.support_range = support_range
        self.send_length = send_length
        self.throttle = throttle
        self.cut: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}
        self.requests: list[tuple[str, str | None, int, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server._serve(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll interval keeps shutdown (once per test) fast
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def _serve(self, h) -> None:
        name = h.path.lstrip("/").split("?")[0]
        path = self.directory / name
        rng = h.headers.get("Range")
        # each request is logged before its response goes out, so a client that has its answer
        # always finds the request in the log
        if not path.is_file():
            self.requests.append((name, rng, 404, 0))
            h.send_error(404)
            return
        if self.unavailable.get(name) and name not in self.cut:
            self.unavailable[name] -= 1
            self.requests.append((name, rng, 503, 0))
            h.send_error(503)
            return
        data = path.read_bytes()
        start, status = 0, 200
        if rng and self.support_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.requests.append((name, rng, 416, 0))
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        body = data[start:]
        limit = self.cut.pop(name, None)
        sent = body if limit is None else body[:limit]
        self.requests.append((name, rng, status, len(sent)))
        h.send_response(status)
        if self.send_length:
            h.send_header("Content-Length", str(len(body)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        step = 16384 if self.throttle else len(sent) or 1
        for i in range(0, len(sent), step):
            h.wfile.write(sent[i : i + step])
            h.wfile.flush()
            time.sleep(self.throttle)
        if limit is not None:
            # an abrupt end mid-body, as when a connection drops
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "FixtureServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
