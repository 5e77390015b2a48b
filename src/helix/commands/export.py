"""``helix export CHECKPOINT --format FORMAT``: a deployable model, or weights to share safely.

    helix export runs/esc50/best.pt --format onnx            # -> runs/esc50/best.onnx
    helix export runs/esc50/best.pt --format torchscript -o model.ts.pt
    helix export runs/esc50/best.pt --format safetensors -o model.safetensors
    helix export runs/esc50/best.pt --format pretrained -o esc50-model/   # config.json + model.safetensors

ONNX and TorchScript graphs map waveforms (batch, samples) float32 at the checkpoint's rate to
logits and carry the class names; before anything is kept they are run on random audio and compared
with the PyTorch model (see helix.inference.export). safetensors files and pretrained folders hold
the weights plus the model description, cannot run code when loaded, and ``helix.load`` reads them.
The output never replaces the checkpoint, and its name must fit the format.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript, safetensors or a pretrained folder",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint (.pt, .safetensors or a pretrained folder)")
    p.add_argument("--format", choices=("onnx", "torchscript", "safetensors", "pretrained"), required=True,
                   help="onnx / torchscript: a graph for deployment; safetensors: one file of weights and "
                        "metadata; pretrained: a folder with config.json and model.safetensors")
    p.add_argument("-o", "--output", help="output path (default: next to the checkpoint, .onnx / .ts.pt / "
                                          ".safetensors / _pretrained)")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="input length to trace at (default: the checkpoint's training clip length)")
    p.add_argument("--lengths", action="store_true",
                   help="onnx / torchscript: the graph also takes lengths (batch,) int64, samples per clip, "
                        "so a zero-padded batch of clips of different lengths scores each clip as if alone")
    p.set_defaults(func=run)


def run(args) -> int:
    from helix.inference.export import ATOL, RTOL, export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.output, args.window, lengths=args.lengths)
    if result.format in ("safetensors", "pretrained"):
        print(f"wrote {result.path} ({result.format}: weights, class names, sample rate, model options; "
              "load it with helix.load)")
        return 0
    diffs = ", ".join(f"{n} samples: {d:.2e}" for n, d in result.max_abs_diff.items())
    print(f"wrote {result.path} ({result.format}{', inputs wave and lengths' if result.lengths else ''})")
    print(f"max |exported - PyTorch| on random audio: {diffs} (tolerance atol {ATOL:g} + rtol {RTOL:g})")
    if result.dynamic_length:
        print("inputs: any batch size and any length (checked at 1.5x the traced length)")
    else:
        print(f"inputs: any batch size, exactly {result.num_samples} samples (this model's graph depends "
              "on the input length)")
    return 0
