"""``helix data``: download, prepare and list the corpora (a thin layer over helix.data.recipes).

    helix data list
    helix data download esc50 --root data/esc50
    helix data prepare esc50 --root data/esc50 [--skip-bad]
    helix data download librispeech --root data/librispeech --subset train-clean-360
    helix data prepare folder --root my_sounds                  # my_sounds/<class>/**/*.wav
    helix data prepare csv --root my_sounds --csv labels.csv     # path,label[,split|fold][,group]

``--root`` defaults to ``$HELIX_DATA_DIR/<name>`` (``data/<name>`` when the variable is unset);
``--mirror`` defaults to ``$HELIX_MIRROR`` (the official hosts when unset).
"""

from __future__ import annotations

import os
from pathlib import Path

from helix.data.recipes import OWN_DATA, get_recipe, list_recipes


def _data_dir() -> Path:
    return Path(os.environ.get("HELIX_DATA_DIR", "data"))


def _root(args) -> Path:
    if args.name in OWN_DATA and not args.root:
        raise ValueError(f"helix data {args.name} needs --root DIR, the folder holding your audio files")
    return Path(args.root) if args.root else _data_dir() / args.name


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="download, prepare and list datasets",
        description="Download, prepare (decode, check, write a manifest) and list the corpora.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    names = list_recipes()

    p = sub.add_parser("list", help="show each dataset's status on disk")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"datasets to show (default: all of {', '.join(names)})")
    p.add_argument("--data-dir", help="folder holding one folder per dataset (default: $HELIX_DATA_DIR or data)")
    p.add_argument("--root", help="dataset folder, with exactly one NAME")
    p.set_defaults(func=_list)

    for verb, helptext in (("download", "download and unpack a corpus (resumable)"),
                           ("prepare", "decode and check every file, write the manifest")):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name", choices=names, metavar="NAME", help=f"one of {', '.join(names)}")
        p.add_argument("--root", help="dataset folder (default: $HELIX_DATA_DIR/NAME)")
        p.add_argument("--subset",
                       help="LibriSpeech subset (default train-clean-100) or VoxPopuli language (default en)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if verb == "download":
            p.add_argument("--mirror", default=os.environ.get("HELIX_MIRROR") or None,
                           help="base URL serving the official file names, e.g. an OpenSLR mirror; it may "
                                "publish helix-checksums.json for its own copies (default: $HELIX_MIRROR)")
            p.add_argument("--keep-archives", action="store_true", help="keep archives after unpacking")
            p.set_defaults(func=_download)
        else:
            p.add_argument("--skip-bad", action="store_true",
                           help="leave unreadable files out (each listed in helix/prepare-report*.txt) "
                                "instead of stopping")
            p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
            p.add_argument("--csv", help="csv only: the file listing path,label[,split|fold][,group]; paths "
                                         "relative to --root")
            p.add_argument("--seed", type=int, help="folder/csv: seed of the split drawn when none is given (0)")
            p.add_argument("--validation", type=float, help="folder/csv: validation fraction of that split (0.1)")
            p.add_argument("--test", type=float, help="folder/csv: test fraction of that split (0.1)")
            p.set_defaults(func=_prepare)


def _list(args) -> int:
    names = args.names or [n for n in list_recipes() if n not in OWN_DATA]
    for name in names:
        get_recipe(name)  # an unknown name fails here, listing the known ones
    if args.root and len(names) != 1:
        raise ValueError("--root needs exactly one dataset name, e.g. `helix data list esc50 --root DIR`")
    base = Path(args.data_dir) if args.data_dir else _data_dir()
    width = max(len(n) for n in names)
    for name in names:
        recipe = get_recipe(name)
        root = Path(args.root) if args.root else base / name
        print(f"{name:<{width}}  {root}  {recipe.status(root)}")
    return 0


def _download(args) -> int:
    recipe = get_recipe(args.name)
    root = _root(args)
    recipe.download(root, args.subset, mirror=args.mirror, keep_archives=args.keep_archives,
                    progress=not args.no_progress)
    print(f"{recipe.title} downloaded to {root}; next: {recipe.command('prepare', root, args.subset)}")
    return 0


def _prepare(args) -> int:
    recipe = get_recipe(args.name)
    root = _root(args)
    own = {"csv": args.csv, "seed": args.seed, "validation": args.validation, "test": args.test}
    if args.name not in OWN_DATA:
        given = [f"--{k}" for k, v in own.items() if v is not None]
        if given:
            raise ValueError(f"{' '.join(given)}: only for `helix data prepare folder|csv`")
        own = {}
    elif args.name != "csv":
        if args.csv:
            raise ValueError("--csv is for `helix data prepare csv`; the folder recipe reads class folders")
        del own["csv"]
    result = recipe.prepare(root, args.skip_bad, subset=args.subset, workers=args.workers,
                            progress=not args.no_progress, **own)
    print(f"{recipe.title}: {result.items} files, {result.classes} classes, {result.hours:.2f} h -> {result.manifest}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable file(s), each listed in {result.report}")
    if args.name in OWN_DATA:
        _describe_own(result.manifest)
    return 0


def _describe_own(manifest: Path) -> None:
    """The split and the clip length training will use: what the user checks before training."""
    from collections import Counter

    from helix.data.labels import is_multilabel
    from helix.data.manifest import read_manifest
    from helix.data.tasks import suggest_clip_seconds

    rows = read_manifest(manifest)
    durations = sorted(r["duration"] for r in rows)
    if any(r["fold"] for r in rows):
        folds = Counter(r["fold"] for r in rows)
        print("folds: " + ", ".join(f"{k}: {n}" for k, n in sorted(folds.items())))
    else:
        splits = Counter(r["split"] for r in rows)
        print("split: " + ", ".join(f"{s} {splits[s]}" for s in ("train", "validation", "test")))
    print(f"durations: min {durations[0]:.2f} s, median {durations[len(durations) // 2]:.2f} s, "
          f"max {durations[-1]:.2f} s -> clip length {suggest_clip_seconds(durations):g} s when training")
    if is_multilabel(rows):
        print("multi-label: some files carry several labels (items get a label vector)")
