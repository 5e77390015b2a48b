"""VoxPopuli recipe: the official segmented layout, or the raw sessions cut by prepare itself."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from helix.data.manifest import read_manifest
from helix.data.recipes import DatasetLayoutError, PrepareError, get_recipe

from .corpora import make_voxpopuli_processed, make_voxpopuli_raw, voxpopuli_rows

VOX = get_recipe("voxpopuli")


def test_official_sources():
    sources = VOX.sources("en")
    assert sources[0].url == "https://dl.fbaipublicfiles.com/voxpopuli/annotations/asr/asr_en.tsv.gz"
    assert sources[0].place == "transcribed_data/en/asr_en.tsv.gz"
    years = [s.filename for s in sources[1:]]
    assert years[0] == "original_2009.tar" and years[-1] == "original_2020.tar" and len(years) == 12
    assert all(s.extract_to == "raw_audios" for s in sources[1:])


def test_processed_layout_speakers_from_metadata(tmp_path):
    root = make_voxpopuli_processed(tmp_path / "vox")
    result = VOX.prepare(root, progress=False)
    rows = read_manifest(result.manifest)
    # the segments without a speaker ("None") are left out
    assert result.classes == 3 and result.items == 12
    assert {r["speaker"] for r in rows} == {"1001", "1002", "1003"}
    assert {r["split"] for r in rows} == {"train", "dev"}
    assert all(r["label"] == r["speaker"] for r in rows)


def test_raw_sessions_are_cut_like_the_official_script(tmp_path):
    root = make_voxpopuli_raw(tmp_path / "vox")
    assert VOX.status(root).startswith("found (official layout), not prepared")
    result = VOX.prepare(root, progress=False)
    assert result.classes == 3 and result.items == 12
    out = root / "transcribed_data" / "en"
    assert (out / "asr_train.tsv").read_text().startswith("id\traw_text\tnormalized_text\tspeaker_id\tsplit\tgender\n")
    sid, id_, spk, split, vad = voxpopuli_rows()[1]
    seg = out / sid[:4] / f"{sid}-{id_}.ogg"
    x, sr = sf.read(seg)
    assert sr == 16000 and len(x) == sum(int(b * sr) - int(a * sr) for a, b in vad)
    raw, _ = sf.read(root / "raw_audios" / "original" / sid[:4] / f"{sid}_original.ogg")
    a, b = vad[0]
    expected = raw[int(a * sr) : int(b * sr)]
    assert np.corrcoef(x[: len(expected)], expected)[0, 1] > 0.95  # the same audio (Vorbis re-encoded)
    # rerunning does not cut again
    mtime = seg.stat().st_mtime_ns
    VOX.prepare(root, progress=False)
    assert seg.stat().st_mtime_ns == mtime


def test_missing_session_recording(tmp_path):
    root = make_voxpopuli_raw(tmp_path / "vox")
    sid = voxpopuli_rows()[0][0]
    (root / "raw_audios" / "original" / sid[:4] / f"{sid}_original.ogg").unlink()
    with pytest.raises(PrepareError, match=rf"{sid}-.*\.ogg: listed in .*asr_\w+\.tsv but missing"):
        VOX.prepare(root, progress=False)
    assert VOX.prepare(root, skip_bad=True, progress=False).items == 6


def test_neither_layout(tmp_path):
    (tmp_path / "vox" / "transcribed_data" / "en").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError,
                       match=r"missing transcribed_data/en/asr_train\.tsv.*helix data download voxpopuli"):
        VOX.prepare(tmp_path / "vox", progress=False)


def test_a_segment_cut_short_is_refused(tmp_path):
    """An Ogg that lost its last pages decodes as a shorter file; prepare must call it truncated."""
    root = make_voxpopuli_processed(tmp_path / "vox")
    segment = next((root / "transcribed_data" / "en").rglob("*.ogg"))
    noise = (0.3 * np.random.default_rng(0).standard_normal(4 * 16000)).astype(np.float32)
    sf.write(segment, noise, 16000, format="OGG", subtype="VORBIS")  # many pages: a cut keeps some
    segment.write_bytes(segment.read_bytes()[: int(segment.stat().st_size * 0.8)])
    with pytest.raises(PrepareError, match=rf"{segment.name}: file is truncated \(libsndfile: Ogg"):
        VOX.prepare(root, progress=False)
