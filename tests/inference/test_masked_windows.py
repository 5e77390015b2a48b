"""run_windows(masked=True): each window's real length reaches the model, so audio shorter than one
window is scored as itself, not with its zero padding (issue 12)."""

import numpy as np
import torch

from helix.inference.windows import run_windows
from helix.models import create_model


def test_short_audio_is_scored_as_itself_with_masked_windows():
    torch.manual_seed(0)
    model = create_model("helix_raw", num_classes=3, d_model=16, d_state=4, n_heads=2, scan_backend="reference").eval()
    short = (np.random.default_rng(0).standard_normal(1700) * 0.3).astype(np.float32)
    full = (np.random.default_rng(1).standard_normal(4000) * 0.3).astype(np.float32)
    seen = []

    def forward(x, lengths):
        seen.append(lengths.tolist())
        with torch.no_grad():
            return {"logits": model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()}

    out = list(run_windows(forward, [("short", [short]), ("full", [full])], window=4000, hop=4000, masked=True))
    assert seen == [[1700, 4000]]
    with torch.no_grad():
        alone = model(torch.from_numpy(short)[None]).numpy()[0]
        padded = model(torch.from_numpy(np.pad(short, (0, 2300)))[None]).numpy()[0]
    np.testing.assert_allclose(out[0].sums["logits"], alone, atol=1e-5)
    assert np.abs(padded - alone).max() > 1e-4  # what unmasked windows scored
