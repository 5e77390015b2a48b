"""``helix probe CHECKPOINT --data-root DIR -o OUT_DIR``: a linear probe on frozen embeddings.

    helix probe runs/my_sounds/best.pt --data-root my_sounds -o runs/my_sounds_probe
    helix probe runs/esc50/helix_raw/fold1/best.pt --data-root data/esc50 --fold 2 -o probes/esc50_fold2

Every clip of the prepared manifest's train, validation and test parts is embedded with the frozen
checkpoint (the vector ``helix embed`` writes); a logistic regression on the standardised training
embeddings is fitted for each C of ``--grid``, validation picks C (accuracy, or mAP for multi-label
data), and the test part is scored once with it. Writes OUT_DIR/probe.json (scores, C, the grid,
class names) and OUT_DIR/probe.safetensors (weight, bias, mean, scale). Clips that cannot be read
are named and left out; they make the exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from helix.commands._common import add_window_args, progress_bar, report_failures, say
from helix.utils.io import atomic_write, check_output


def register(sub) -> None:
    p = sub.add_parser("probe", help="linear probe on a checkpoint's frozen embeddings of a prepared dataset",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint (.pt, .safetensors or a pretrained folder)")
    p.add_argument("--data-root", metavar="DIR", help="a prepared dataset folder (reads DIR/helix/manifest*.tsv)")
    p.add_argument("--manifest", metavar="PATH", help="the manifest to read (default: the one under --data-root)")
    p.add_argument("--fold", type=int, metavar="K",
                   help="fold corpora: test on fold K, validate on the next fold, train on the rest (default: the first)")
    p.add_argument("--grid", default="0.001,0.01,0.1,1,10,100", metavar="C[,C...]",
                   help="inverse regularisation strengths tried; validation picks one (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="folder for probe.json and probe.safetensors")
    add_window_args(p)
    p.set_defaults(func=run)


def find_manifest(data_root: str | None, manifest: str | None) -> Path:
    """``--manifest`` as given, or the one manifest under ``DATA_ROOT/helix``."""
    if manifest:
        return Path(manifest)
    if not data_root:
        raise ValueError("give --data-root DIR (a prepared dataset) or --manifest PATH")
    folder = Path(data_root) / "helix"
    found = sorted(folder.glob("manifest*.tsv"))
    if not found:
        raise ValueError(f"{data_root} is not prepared ({folder}/manifest.tsv missing): run "
                         f"`helix data prepare <recipe> --root {data_root}` first")
    if len(found) > 1 and folder / "manifest.tsv" not in found:
        raise ValueError(f"{folder} holds several manifests ({', '.join(p.name for p in found)}): "
                         "choose one with --manifest")
    return folder / "manifest.tsv" if folder / "manifest.tsv" in found else found[0]


def parse_grid(text: str) -> list[float]:
    try:
        grid = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--grid expects comma-separated positive numbers, got {text!r}") from None
    if not grid or any(not c > 0 for c in grid):
        raise ValueError(f"--grid expects comma-separated positive numbers, got {text!r}")
    return grid


def run(args) -> int:
    from helix.core.metrics import format_pct
    from helix.data.manifest import read_manifest
    from helix.inference.predict import load_predictor
    from helix.inference.probe import probe_manifest, probe_parts, save_probe

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    grid = parse_grid(args.grid)
    manifest = find_manifest(args.data_root, args.manifest)
    inputs = [args.checkpoint, manifest, *([args.data_root] if args.data_root else [])]
    out = check_output(args.output, inputs, what="probe folder", folder=True)
    # the parts are checked before the model loads: a wrong --fold fails at once
    parts, _, _ = probe_parts(read_manifest(manifest), args.fold, where=str(manifest))
    files = [r["path"] for rows in parts.values() for r in rows]
    inputs += files
    for name in ("probe.json", "probe.safetensors"):
        check_output(out / name, inputs, what="probe output")
    predictor = load_predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
    with progress_bar(files, args.quiet, "probe") as bar:
        report, probe, failures = probe_manifest(predictor, manifest, fold=args.fold, grid=grid,
                                                 window_seconds=args.window, hop_seconds=args.hop,
                                                 progress=bar.update)
    out.mkdir(parents=True, exist_ok=True)
    save_probe(out / "probe.safetensors", probe, inputs)
    with atomic_write(out / "probe.json", "w", inputs) as f:
        f.write(json.dumps(report, indent=1) + "\n")
    name = report["metric_name"]
    lines = [f"C={report['C']:g} chosen on validation ({len(grid)} tried); "
             f"{report['embedding_dim']}-dim embeddings, {len(report['class_names'])} classes"]
    for split in ("train", "validation", "test"):
        s = report[split]
        lines.append(f"  {split:<10} {name} (%) {format_pct(s['value']):>6}  ({s['n']} clips)")
    if report["chance_acc"]:
        lines.append(f"  chance     {name} (%) {format_pct(report['chance_acc']):>6}")
    print("\n".join(lines))
    say(f"wrote {out / 'probe.json'} and {out / 'probe.safetensors'}")
    return report_failures(failures, len(files))
