"""Down- or up-sample records by a category field to target ratios (e.g. billing:returns = 1:1.2)."""

from __future__ import annotations

import copy
import math
import random
from collections import defaultdict
from typing import Any


def balance(
    records: list[dict[str, Any]], by: str, ratios: dict[str, float], mode: str = "down", seed: int = 42
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns ``(kept, dropped, added)``.

    ``down`` keeps the largest sample that meets the ratios exactly (up to rounding);
    the dropped rows are returned so they can be reported. ``up`` repeats rows of the
    smaller categories (sampled with replacement, tagged ``meta.upsampled_from``) until
    the ratios hold. Categories missing from ``ratios`` are left as they are.
    """
    if mode not in ("down", "up"):
        raise ValueError(f"balance mode must be 'down' or 'up', got {mode!r}")
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    untouched = []
    for record in records:
        value = record.get("meta", {}).get(by)
        if value is not None and str(value) in ratios:
            groups[str(value)].append(record)
        else:
            untouched.append(record)
    missing = [name for name in ratios if not groups.get(name)]
    if missing:
        raise ValueError(f"balance: no rows with {by} = {', '.join(missing)}; present: {sorted(groups)}")
    if mode == "down":
        scale = min(len(groups[name]) / ratio for name, ratio in ratios.items())
    else:
        scale = max(len(groups[name]) / ratio for name, ratio in ratios.items())
    kept, dropped, added = list(untouched), [], []
    for name, ratio in ratios.items():
        rows = groups[name]
        target = math.floor(scale * ratio + 1e-9) if mode == "down" else math.ceil(scale * ratio - 1e-9)
        if target <= len(rows):
            order = list(range(len(rows)))
            rng.shuffle(order)
            keep_idx = set(order[:target])
            kept.extend(r for i, r in enumerate(rows) if i in keep_idx)
            dropped.extend(r for i, r in enumerate(rows) if i not in keep_idx)
        else:
            kept.extend(rows)
            for number in range(target - len(rows)):
                copy_ = copy.deepcopy(rng.choice(rows))
                source = copy_["meta"].get("origin", "?")
                copy_["meta"]["upsampled_from"] = source
                copy_["meta"]["origin"] = f"{source}+up{number + 1}"
                added.append(copy_)
            kept.extend(added[-(target - len(rows)):] if target > len(rows) else [])
    return kept, dropped, added
