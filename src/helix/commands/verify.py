"""``helix verify CHECKPOINT TRIALS``: speaker verification on a trial list (EER, minDCF).

    helix verify runs/vox/best.pt voxceleb1_test.txt --root VoxCeleb1/wav --scores scores.txt

TRIALS holds lines ``label enroll_path test_path`` (VoxCeleb format; 1 = same speaker), paths relative
to ``--root`` (default: the trial list's folder). Scores are cosine similarities of file embeddings
(mean of window embeddings); minDCF uses p_target = 0.01 and C_miss = C_fa = 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from helix.commands._common import add_window_args, guard_stdout, open_output, progress_bar, report_failures, say
from helix.utils.io import check_output


def register(sub) -> None:
    p = sub.add_parser("verify", help="speaker verification on a trial list: cosine scoring, EER, minDCF",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint (e.g. a speaker-ID model)")
    p.add_argument("trials", help="trial list: 'label enroll_path test_path' per line")
    p.add_argument("--root", help="folder the trial paths are relative to (default: the trial list's folder)")
    p.add_argument("--scores", help="write 'score label enroll test' per trial to this file")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_window_args(p)
    p.set_defaults(func=run)


@guard_stdout
def run(args) -> int:
    from helix.inference.predict import load_predictor
    from helix.inference.verify import read_trials, score_trials, verification_metrics

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    trials = read_trials(args.trials)
    root = Path(args.root) if args.root else Path(args.trials).parent
    files = list(dict.fromkeys(str(root / p) for t in trials for p in (t.enroll, t.test)))
    inputs = [args.checkpoint, args.trials, *files]
    if args.scores:
        check_output(args.scores, inputs, what="scores file")  # before anything is opened
    predictor = load_predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
    predictor.window(args.window, args.hop)  # validate before decoding anything
    with progress_bar(files, args.quiet, "verify") as bar:
        scores, labels, kept, failures = score_trials(predictor, trials, root, window_seconds=args.window,
                                                      hop_seconds=args.hop, progress=bar.update)
    if failures:
        say(f"{len(trials) - len(kept)} of {len(trials)} trial(s) skipped: they use a file that failed")
    if args.scores:
        with open_output(args.scores, inputs) as f:
            for s, t in zip(scores, kept):
                f.write(f"{s:.6f} {t.label} {t.enroll} {t.test}\n")
    if len(kept):
        metrics = verification_metrics(scores, labels)
        metrics["files_failed"] = len(failures)
        if args.json:
            print(json.dumps(metrics, indent=1))
        else:
            print(f"trials {metrics['trials']} ({metrics['targets']} target, {metrics['nontargets']} non-target)")
            print(f"EER     {100 * metrics['eer']:.2f} %  (threshold {metrics['eer_threshold']:.4f})")
            print(f"minDCF  {metrics['min_dcf']:.4f}  (p_target {metrics['p_target']}, C_miss {metrics['c_miss']:g}, "
                  f"C_fa {metrics['c_fa']:g}; threshold {metrics['min_dcf_threshold']:.4f})")
    else:
        say("no trial could be scored")
    status = report_failures(failures, len(files))
    return status or (0 if len(kept) else 1)
