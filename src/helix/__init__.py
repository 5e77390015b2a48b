"""helix: parameter-matched Mamba / HELIX / attention audio classifiers.

Imports point one way: ops <- layers <- models <- training/evaluation <- cli.
"""

__version__ = "0.1.0"


def load(checkpoint, device="cpu", **options):
    """Load a trained model for inference: ``helix.load("run/best.pt").predict("clip.wav")``.

    ``checkpoint``: a ``.pt`` checkpoint from ``helix train``, a ``.safetensors`` file or a
    ``save_pretrained``-style folder from ``helix export``. Loading never runs code from the file
    (``.pt`` files are read with ``weights_only=True``). ``options`` go to
    :func:`helix.evaluation.predict.load_predictor` (e.g. ``batch_size``).
    """
    from helix.evaluation.predict import load_predictor

    return load_predictor(checkpoint, device=device, **options)
