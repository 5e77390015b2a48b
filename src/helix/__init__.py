"""helix: parameter-matched Mamba / HELIX / attention audio classifiers.

Imports point one way (checked by import-linter, contract in pyproject.toml):
utils <- ops <- layers/frontends <- models/data <- core <- training/inference/reporting <- commands <- cli.
"""

from helix.version import __version__


def load(checkpoint, device="cpu", **options):
    """Load a trained model for inference: ``helix.load("run/best.pt").predict("clip.wav")``.

    ``checkpoint``: a ``.pt`` checkpoint from ``helix train``, a ``.safetensors`` file or a
    ``save_pretrained``-style folder from ``helix export``. Loading never runs code from the file
    (``.pt`` files are read with ``weights_only=True``). ``options`` go to
    :func:`helix.inference.predict.load_predictor` (e.g. ``batch_size``).
    """
    from helix.inference.predict import load_predictor

    return load_predictor(checkpoint, device=device, **options)
