"""Train / val / test splits by ratio, optionally stratified by a meta field, always seeded."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

SPLITS = ("train", "val", "test")


def _cut(items: list[Any], ratios: tuple[float, float, float]) -> dict[str, list[Any]]:
    """Largest-remainder allocation so counts add up exactly and small groups still reach test."""
    n = len(items)
    exact = [r * n for r in ratios]
    counts = [int(x) for x in exact]
    order = sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    out, start = {}, 0
    for name, count in zip(SPLITS, counts):
        out[name] = items[start : start + count]
        start += count
    return out


def split_by_ratio(
    records: list[dict[str, Any]],
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    stratify_by: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Shuffle with ``seed`` and cut into train/val/test.

    With ``stratify_by`` each value of ``meta[stratify_by]`` is cut separately, so every
    category (or fact) is spread over the splits in the same proportions. Remainders
    rotate between strata, so small strata do not all round toward train.
    """
    rng = random.Random(seed)
    if not stratify_by:
        shuffled = list(records)
        rng.shuffle(shuffled)
        return _cut(shuffled, ratios)
    strata: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        strata[str(record.get("meta", {}).get(stratify_by))].append(record)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    carry = [0.0, 0.0, 0.0]
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n = len(group)
        wanted = [r * n + c for r, c in zip(ratios, carry)]
        counts = [max(0, math.floor(w)) for w in wanted]
        while sum(counts) > n:  # only possible when carries are negative
            counts[max(range(3), key=lambda i: counts[i] - wanted[i])] -= 1
        while sum(counts) < n:
            counts[max(range(3), key=lambda i: wanted[i] - counts[i])] += 1
        carry = [w - c for w, c in zip(wanted, counts)]
        start = 0
        for name, count in zip(SPLITS, counts):
            out[name].extend(group[start : start + count])
            start += count
    for name in SPLITS:
        rng.shuffle(out[name])
    return out


def split_by_group(
    records: list[dict[str, Any]],
    group_by: str,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> dict[str, list[dict[str, Any]]]:
    """Whole groups (e.g. one conversation's turns, one ticket thread) go to one split.

    Groups are shuffled with ``seed`` and assigned greedily to the split that is furthest
    below its target row count, so ratios hold approximately even with uneven group
    sizes. A record without the field forms a group of its own.
    """
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for index, record in enumerate(records):
        value = record.get("meta", {}).get(group_by)
        groups[f"v:{value}" if value is not None else f"row:{index}"].append(record)
    keys = list(groups)
    rng.shuffle(keys)
    total = len(records)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for key in keys:
        group = groups[key]
        # the split with the largest deficit against its target after adding this group
        deficits = [ratios[i] * total - len(out[name]) for i, name in enumerate(SPLITS)]
        best = max((i for i in range(3) if ratios[i] > 0), key=lambda i: deficits[i])
        out[SPLITS[best]].extend(group)
    for name in SPLITS:
        rng.shuffle(out[name])
    return out
