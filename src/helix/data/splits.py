"""A seeded, stratified, group-aware train/validation/test split, made once at ``prepare``.

Used for the user's own corpora (folder and CSV recipes) that come without a split. The split is
written into the manifest's ``split`` column, so every run reads the same one; it is never redrawn
at training time.

- **Stratified**: each label's files are divided in the split fractions (largest remainder, at
  least one *unit* per split), single- or multi-label alike. Multi-label sets use iterative
  stratification (Sechidis, Tsoumakas and Vlahavas, 2011): the label with the fewest unassigned
  units is placed first, each unit going where that label is still most wanted.
- **Group-aware**: files sharing a group (speaker, recording, session) form one unit and land in
  one split, so no group leaks from training into test.
- **Seeded**: the only randomness is one shuffle of the units with ``random.Random(seed)``.
- **Kept**: ``fixed`` pins units to a split already recorded (a rerun of prepare keeps the old
  split for the files it already had and places only the new ones).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Mapping, Sequence

__all__ = ["SPLITS", "SplitError", "split_fractions", "stratified_split"]

SPLITS = ("train", "validation", "test")


class SplitError(ValueError):
    """The data cannot be split as asked (a label with too few files or groups, a group in two splits)."""


def split_fractions(validation: float, test: float) -> dict[str, float]:
    """``{"train": 1 - validation - test, "validation": validation, "test": test}``, checked."""
    fractions = {"train": 1.0 - validation - test, "validation": float(validation), "test": float(test)}
    if not (0 <= validation < 1 and 0 <= test < 1 and fractions["train"] > 0):
        raise ValueError(f"validation ({validation}) and test ({test}) fractions must be in [0, 1) "
                         "and leave some files for training")
    return fractions


def _targets(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """``n`` files divided in ``fractions`` (largest remainder), at least one per split; n >= len(fractions)."""
    exact = {s: n * f for s, f in fractions.items()}
    out = {s: max(1, int(v)) for s, v in exact.items()}
    order = list(fractions)  # ties go to the earlier split (train first)
    while sum(out.values()) < n:
        s = max(order, key=lambda k: (exact[k] - out[k], -order.index(k)))
        out[s] += 1
    while sum(out.values()) > n:
        s = max((k for k in order if out[k] > 1), key=lambda k: (out[k] - exact[k], -order.index(k)))
        out[s] -= 1
    return out


def stratified_split(
    labels: Sequence[Sequence[str]],
    groups: Sequence[str] | None = None,
    *,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    fixed: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """The split of each item: ``labels[i]`` are item ``i``'s label names (one for single-label data).

    ``groups[i]`` (``""``: none) keeps items of one group together; ``fractions`` maps split name to
    fraction (default 80/10/10 train/validation/test; a zero-fraction split gets nothing);
    ``fixed[i]`` (``""``: free) pins an item, and with it its group, to a split; ``names[i]`` (file
    paths) are only used in error messages. SplitError when a label has fewer units than there
    are splits, when ``fixed`` puts one group in two splits, or when the result leaves a label out
    of a split.
    """
    fractions = dict(fractions or split_fractions(0.1, 0.1))
    fractions = {s: f for s, f in fractions.items() if f > 0}
    n = len(labels)
    groups = list(groups) if groups is not None else [""] * n
    fixed = list(fixed) if fixed is not None else [""] * n
    names = list(names) if names is not None else [f"item {i}" for i in range(n)]
    if not (len(groups) == len(fixed) == len(names) == n):
        raise ValueError("labels, groups, fixed and names must have one entry per item")

    # units: a group's items, or one ungrouped item
    unit_of: dict[str, int] = {}
    members: list[list[int]] = []
    for i, g in enumerate(groups):
        key = f"g:{g}" if g else f"i:{i}"
        if key not in unit_of:
            unit_of[key] = len(members)
            members.append([])
        members[unit_of[key]].append(i)
    counts = [Counter(name for i in m for name in labels[i]) for m in members]

    units_per_label: dict[str, list[int]] = defaultdict(list)
    for u, c in enumerate(counts):
        for name in c:
            units_per_label[name].append(u)
    k = len(fractions)
    short = sorted(name for name, us in units_per_label.items() if len(us) < k)
    if short:
        raise SplitError(_too_few(short, units_per_label, members, names, groups, fractions))

    assigned: list[str | None] = [None] * len(members)
    for u, m in enumerate(members):
        pinned = {fixed[i] for i in m if fixed[i]}
        if len(pinned) > 1:
            raise SplitError(f"group {groups[m[0]]!r} is recorded in {' and '.join(sorted(pinned))}; "
                             "a group must stay in one split")
        if pinned:
            assigned[u] = pinned.pop()
            if assigned[u] not in fractions:
                raise SplitError(f"{names[m[0]]} is recorded in split {assigned[u]!r}, which is not one of "
                                 f"{', '.join(fractions)}")

    # demand: files each split still wants, per label and in all
    demand = {name: _targets(sum(counts[u][name] for u in us), fractions) for name, us in units_per_label.items()}
    overall = {s: n * f for s, f in fractions.items()}
    present: dict[str, Counter] = {name: Counter() for name in units_per_label}
    for u, s in enumerate(assigned):
        if s is not None:
            _take(u, s, counts, members, demand, overall, present)

    order = list(range(len(members)))
    random.Random(seed).shuffle(order)
    rank = {u: r for r, u in enumerate(order)}
    remaining = {name: [u for u in us if assigned[u] is None] for name, us in units_per_label.items()}
    splits = list(fractions)
    while True:
        open_labels = [name for name, us in remaining.items() if us]
        if not open_labels:
            break
        label = min(open_labels, key=lambda name: (len(remaining[name]), name))
        # larger groups first: small ones then fill what the large ones leave
        queue = sorted(remaining[label], key=lambda u: (-len(members[u]), rank[u]))
        for pos, u in enumerate(queue):
            missing = [s for s in splits if present[label][s] == 0]
            # as many units left as splits still lacking the label: each must go to one of those
            choices = missing if missing and len(queue) - pos <= len(missing) else splits
            s = max(choices, key=lambda x: (demand[label][x], overall[x], -splits.index(x)))
            assigned[u] = s
            _take(u, s, counts, members, demand, overall, present)
        for name in units_per_label:
            remaining[name] = [u for u in remaining[name] if assigned[u] is None]

    lacking = [(name, s) for name in sorted(units_per_label) for s in splits if present[name][s] == 0]
    if lacking:
        shown = ", ".join(f"{name!r} in {s}" for name, s in lacking[:10])
        raise SplitError(f"no stratified split puts every label in every split here (missing: {shown}); "
                         "give the split yourself (a split column in the CSV)")
    out = [""] * n
    for u, m in enumerate(members):
        for i in m:
            out[i] = assigned[u]
    return out


def _take(u, s, counts, members, demand, overall, present) -> None:
    for name, c in counts[u].items():
        demand[name][s] -= c
        present[name][s] += 1
    overall[s] -= len(members[u])


def _too_few(short, units_per_label, members, names, groups, fractions) -> str:
    parts = []
    for name in short[:10]:
        us = units_per_label[name]
        files = [names[i] for u in us for i in members[u]]
        grouped = any(groups[i] for u in us for i in members[u])
        where = f" in {len(us)} group(s)" if grouped else ""
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        parts.append(f"{name!r} has {len(files)} file(s){where} ({shown})")
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    return (f"cannot split: each label needs at least {len(fractions)} "
            f"{'groups' if any(groups) else 'files'} (one for each of {', '.join(fractions)}); "
            + "; ".join(parts) + more + ". Add files, remove the class, or give the split yourself")
