"""The prepare stage: raw files -> ``<run>/data/{train,val,test}.jsonl`` plus rejects.

    seektune prepare examples/customer-service/recipe.yaml

Every row read is either kept (in exactly one split) or rejected with its origin, step
and reason in ``<run>/data/rejects.jsonl``; ``kept + rejected == read`` is asserted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from seektune.data.formats import FormatError, to_record
from seektune.data.io import RawRow, Reject, read_rows, write_jsonl
from seektune.data.split import SPLITS, split_by_ratio
from seektune.recipe import Recipe, save_resolved


def load_records(recipe: Recipe) -> tuple[list[dict[str, Any]], list[Reject], int]:
    """All rows of the recipe's data paths as records; unreadable or malformed rows as rejects."""
    spec = recipe.data
    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    read = 0
    for item in read_rows(spec.paths):
        read += 1
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        assert isinstance(item, RawRow)
        try:
            records.append(
                to_record(
                    item.data,
                    item.origin,
                    fmt=spec.format,
                    columns=spec.columns,
                    meta_fields=spec.meta_fields,
                    system_prompt=spec.system_prompt,
                )
            )
        except FormatError as exc:
            rejects.append(Reject(item.origin, "format", exc.reason, exc.detail, item.data))
    return records, rejects, read


def run(recipe: Recipe) -> Path:
    """Read, convert and split the data; returns the run directory."""
    if not recipe.data.paths:
        raise ValueError("the recipe has no data.paths; add the files to train on")
    run_dir = recipe.run_dir
    save_resolved(recipe, run_dir)
    data_dir = run_dir / "data"
    records, rejects, read = load_records(recipe)
    if not records:
        raise ValueError(f"no usable rows in {recipe.data.paths}: all {read} rows were rejected (see rejects below)")
    split = recipe.data.split
    splits = split_by_ratio(records, (split.train, split.val, split.test), split.seed, split.stratify_by)
    kept = sum(len(rows) for rows in splits.values())
    assert kept + len(rejects) == read, f"row accounting broke: kept {kept} + rejected {len(rejects)} != read {read}"
    for name in SPLITS:
        write_jsonl(data_dir / f"{name}.jsonl", splits[name])
    write_jsonl(data_dir / "rejects.jsonl", [r.to_dict() for r in rejects])
    summary = {
        "read": read,
        "kept": kept,
        "rejected": len(rejects),
        "rejected_by_reason": dict(Counter(r.reason for r in rejects)),
        "splits": {name: len(splits[name]) for name in SPLITS},
        "sources": recipe.data.paths,
    }
    (data_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return run_dir


def rejects_of(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "data" / "rejects.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
