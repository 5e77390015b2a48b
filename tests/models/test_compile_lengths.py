"""Variable-length batches under torch.compile(fullgraph=True): the lengths check reads no values
back while tracing, so a model called with lengths compiles without a graph break and matches eager."""

from __future__ import annotations

import pytest
import torch

from helix.models import create_model


@pytest.mark.parametrize("name,T", [("helix_raw", 1600), ("pure_mamba_mel", 4000)])
def test_model_with_lengths_compiles_fullgraph_and_matches_eager(name, T):
    torch.manual_seed(0)
    model = create_model(name, 3, d_model=16, d_state=4, pattern="MA" if name.startswith("helix") else "MM")
    wave = torch.randn(2, T, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([T, T * 5 // 8])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(wave, lengths), model(wave, lengths), rtol=1e-5, atol=1e-5)
        # clip 1 alone: the defining property of the lengths API, through the compiled graph
        torch.testing.assert_close(compiled(wave, lengths)[1], model(wave[1:, :int(lengths[1])])[0],
                                   rtol=1e-4, atol=1e-5)
