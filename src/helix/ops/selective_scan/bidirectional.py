"""Both directions of a bidirectional Mamba layer as one scan over stacked channels.

Layout (what :class:`helix.layers.bimamba.BiMambaBlock` produces with its stacked projections):
u, delta, z (B, 2E, L) with channels [0, E) the forward direction and [E, 2E) the backward one;
A (2E, N); D, delta_bias (2E,); B, C (B, 2, N, L), index 0 forwards and 1 backwards. Every tensor is
in natural time order: the backward half is scanned from t = L-1 down to 0, and its output is
returned in natural order too, i.e. exactly Flip(scan(Flip(.))) without the two flips.

With ``lengths`` (B,) the backward half starts at each clip's own last valid token: it reverses
within the clip (padding stays where it is), and everything past a clip's end is zero.

The Triton kernels index time backwards for the second half (one launch per kernel for both
directions); this module holds the reference, which does reverse copies, as the specification and CPU path.
"""

from __future__ import annotations

import torch

from helix.ops.lengths import check_token_lengths, reverse_within
from helix.ops.selective_scan.reference import selective_scan_reference


def _half(x, i, E):
    return None if x is None else x[..., i * E:(i + 1) * E] if x.dim() == 1 else x[:, i * E:(i + 1) * E]


def selective_scan_bidirectional_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                           delta_softplus=False, lengths=None) -> torch.Tensor:
    """(B, 2E, L) -> (B, 2E, L): forward scan of the first half, time-reversed scan of the second
    (reversed within each clip's ``lengths`` when given)."""
    if u.dim() != 3 or u.shape[1] % 2:
        raise ValueError(f"u must be (B, 2E, L) with an even channel count, got {tuple(u.shape)}")
    if B.dim() != 4 or B.shape[1] != 2 or C.shape != B.shape:
        raise ValueError(f"B and C must be (B, 2, N, L), got {tuple(B.shape)} and {tuple(C.shape)}")
    E = u.shape[1] // 2
    lengths = check_token_lengths(lengths, u.shape[0], u.shape[2])
    outs = []
    for i in range(2):
        def flip(x):
            return reverse_within(x, lengths, -1) if (x is not None and i == 1) else x

        y = selective_scan_reference(
            flip(_half(u, i, E)), flip(_half(delta, i, E)), A[i * E:(i + 1) * E], flip(B[:, i]),
            flip(C[:, i]), _half(D, i, E), flip(_half(z, i, E)), _half(delta_bias, i, E), delta_softplus,
            lengths)
        outs.append(flip(y))
    return torch.cat(outs, dim=1)
