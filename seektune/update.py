"""Continual learning: teach a trained run new data without forgetting the old.

    seektune update runs/customer-service --data examples/customer-service/data/update/faq_en_new.jsonl
    seektune update runs/customer-service --feedback runs/customer-service/feedback.sqlite
    seektune update runs/customer-service --data new.jsonl --replay 0     # no replay: see what is forgotten

The update is a new run directory (``<run>-update-N`` unless ``--out``) whose recipe is the
old run's with the new data (and ``train.max_steps`` unset: epochs decide), starting from the
old run's weights (its adapter keeps
training; a full / freeze run's model is the new base). The new rows are prepared with the
old run's data settings; ``update.replay`` x (new training rows) rows of the old run's
training split are mixed with the new training rows (marked ``meta.replay``) into a derived
split, ``data/train.replay.jsonl``, which the update trains on (``train.jsonl`` stays as
prepare wrote it), drawn round-robin over the old split's groups (its ``stratify_by`` /
``group_by`` field, else ``category``), so what the model already knew keeps being rehearsed.

Then both models answer both test splits, and ``update.json`` reports the gain on the new
split beside the forgetting on the old one (the old split's metric before minus after).
Feedback from ``seektune serve`` can be the new data: its corrections and up-rated answers
(``seektune feedback export --to sft``) all train, and since a handful of corrections
leaves nothing to hold out, the "new" figures are then measured on those rows themselves.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from seektune.data.io import read_jsonl, write_jsonl
from seektune.recipe import Recipe, apply_overrides, validate_recipe
from seektune.runs import RunDir, run_of

log = logging.getLogger(__name__)

SCORED = ("fact_accuracy", "rougeL", "bleu")
REPLAY_SPLIT = "train.replay"  # new rows (repeated) + replayed old rows: what the update trains on
NEW_ROWS_SPLIT = "new_train"  # the new rows once each: scored when nothing was held out


def next_out(run_dir: Path) -> Path:
    """``<run>-update-1``, or the next number not taken yet."""
    n = 1
    while (candidate := run_dir.with_name(f"{run_dir.name}-update-{n}")).exists():
        n += 1
    return candidate


def update_recipe(run_dir: Path, data: list[Path], out: Path, overrides: list[str] | None = None,
                  from_feedback: bool = False) -> Recipe:
    """The old run's recipe, pointed at the new data and starting from the old run's weights."""
    old_run = RunDir(run_dir)
    old = old_run.recipe()
    raw = old.model_dump(mode="json")
    raw["output_dir"] = str(out)
    raw["stages"] = None
    raw["objective"] = "sft"
    raw["data"]["paths"] = [str(Path(p).resolve()) for p in data]
    raw["data"]["format"] = "auto" if raw["data"]["format"] in ("columns", "auto") else raw["data"]["format"]
    raw["data"]["augment"] = None
    raw["data"]["balance"] = None
    if from_feedback:  # a few corrections: every row trains, no fact groups to stratify
        raw["data"]["split"] = {**raw["data"]["split"], "train": 1.0, "val": 0.0, "test": 0.0,
                                "stratify_by": None, "group_by": None}
    raw["train"]["resume"] = None
    raw["train"]["early_stopping"] = None
    raw["train"]["max_steps"] = -1  # a step budget fitted to the old data means nothing here: epochs decide
    if old_run.has_adapter():
        raw["model"]["adapter"] = str(old_run.adapter.resolve())
    elif old_run.has_model():
        raw["model"].update(name=str(old_run.model.resolve()), adapter=None, merge=[])
    else:
        raise FileNotFoundError(f"{run_dir} has no trained adapter or model to update; run `seektune train` first")
    raw = apply_overrides(raw, overrides or [])
    return validate_recipe(raw, f"update of {run_dir}")


def covering_sample(rows: list[dict[str, Any]], k: int, key: str, seed: int) -> list[dict[str, Any]]:
    """``k`` rows drawn round-robin over the groups of ``meta[key]`` (a fact, a ticket, a category), so a
    small replay buffer still rehearses every group rather than a random few; random without groups."""
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("meta", {}).get(key)), []).append(row)
    if len(groups) <= 1:
        return rng.sample(rows, k)
    queues = list(groups.values())
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)
    picked: list[dict[str, Any]] = []
    while len(picked) < k:
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop())
    return picked


def add_replay(recipe: Recipe, old_run: Path) -> dict[str, Any]:
    """Write ``data/train.replay.jsonl``: the new train rows (``update.repeat_new`` times each) mixed with
    ``update.replay`` x (new train rows) of the old run's training rows."""
    run, old = run_of(recipe), RunDir(old_run)
    new_rows = [r for r in read_jsonl(run.split("train")) if not r.get("meta", {}).get("replay")]
    new_rows = [row for row in new_rows for _ in range(recipe.update.repeat_new)]
    old_rows = read_jsonl(old.split("train"))
    want = min(len(old_rows), round(recipe.update.replay * len(new_rows)))
    key = recipe.data.split.stratify_by or recipe.data.split.group_by or "category"
    replay = covering_sample(old_rows, want, key, recipe.update.seed)
    for row in replay:
        row.setdefault("meta", {})["replay"] = True
    mixed = new_rows + replay
    random.Random(recipe.update.seed + 1).shuffle(mixed)
    write_jsonl(run.split(REPLAY_SPLIT), mixed)
    info = {"ratio": recipe.update.replay, "repeat_new": recipe.update.repeat_new,
            "new_train_rows": len(new_rows) // recipe.update.repeat_new, "replay_rows": len(replay),
            "old_train_rows": len(old_rows), "from": str(old.split("train")),
            "train_split": str(run.split(REPLAY_SPLIT))}
    run.replay_info.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def _scores(metrics: dict[str, Any], system: str) -> dict[str, Any]:
    return {k: metrics[system].get(k) for k in ("n", *SCORED) if k in metrics[system]}


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in SCORED if isinstance(after.get(k), (int, float))
            and isinstance(before.get(k), (int, float))}


def evaluate(out: Path, old_run: Path, new_split: Path) -> dict[str, Any]:
    """Old model vs updated model on the old run's test split (kept in ``eval-old/``) and on the
    new split (``eval/``, which the update's report shows)."""
    import shutil

    from seektune.evaluate import stage as eval_stage

    run, before = RunDir(out), RunDir(old_run)
    old_split = before.split("test")
    if before.eval_cache.is_file() and not run.eval_cache.exists():  # the old run's answers: not generated again
        run.eval.mkdir(parents=True, exist_ok=True)
        shutil.copy2(before.eval_cache, run.eval_cache)
    old = eval_stage.run(out, against=str(old_run), data=old_split, report=False)
    run.eval_old.mkdir(exist_ok=True)
    for path in (run.metrics, run.samples):
        shutil.copy2(path, run.eval_old / path.name)
    new = eval_stage.run(out, against=str(old_run), data=new_split)
    result = {
        "new": {"split": str(new_split), "before": _scores(new, "base"), "after": _scores(new, "tuned")},
        "old": {"split": str(old_split), "before": _scores(old, "base"), "after": _scores(old, "tuned")},
    }
    result["new"]["gain"] = _delta(result["new"]["after"], result["new"]["before"])
    result["old"]["forgetting"] = {k: -v for k, v in _delta(result["old"]["after"], result["old"]["before"]).items()}
    return result


def run(run_dir: str | Path, data: list[str | Path] | None = None, *, feedback: str | Path | None = None,
        out: str | Path | None = None, overrides: list[str] | None = None, evaluate_splits: bool = True
        ) -> dict[str, Any]:
    """Update ``run_dir`` on new data (files, or a feedback database); returns what ``update.json`` holds."""
    from seektune.data import prepare
    from seektune.train import sft

    run_dir = Path(run_dir)
    RunDir(run_dir).recipe()  # a RecipeError naming the directory when it is not a run
    data = [Path(p) for p in data or []]
    if not data and feedback is None:
        raise ValueError("seektune update needs new data: --data FILE and/or --feedback DB")
    for path in data:
        if not path.exists():
            raise FileNotFoundError(f"--data {path}: no such file or directory")
    out = Path(out) if out else next_out(run_dir)
    new = RunDir(out)
    if new.train_summary.exists():
        raise FileExistsError(f"{out} already holds a trained run; choose another --out or remove it")
    exported = None
    if feedback is not None:
        from seektune.serve.feedback import export_feedback, export_notes

        exported = new.feedback_export
        counts = export_feedback(Path(feedback), "sft", exported)
        print(f"seektune: feedback {feedback}: {counts['rows']} training rows from {counts['completions']} "
              f"completions (used {counts['used']}, skipped {counts['skipped']})")
        for note in export_notes(counts):  # raw completions and cut-off answers are not trained on
            print(f"seektune: feedback {feedback}: {note}")
        if not counts["rows"]:
            raise ValueError(f"{feedback} holds no corrections or up-rated answers to learn from")
        data.append(exported)
    recipe = update_recipe(run_dir, data, out, overrides, from_feedback=exported is not None and len(data) == 1)
    prepare.run(recipe)
    replay = add_replay(recipe, run_dir)
    print(f"seektune: updating {run_dir} -> {out}: {replay['new_train_rows']} new training rows + "
          f"{replay['replay_rows']} replayed old rows (replay {replay['ratio']:g})")
    sft.run(recipe, train_split=REPLAY_SPLIT)
    result: dict[str, Any] = {"from": str(run_dir), "out": str(out), "data": [str(p) for p in data],
                              "replay": replay}
    if evaluate_splits:
        new_split = new.split("test")
        if not read_jsonl(new_split):
            new_split = new.split(NEW_ROWS_SPLIT)  # nothing held out: score the new rows themselves
            write_jsonl(new_split, read_jsonl(new.split("train")))  # the new rows, once each
        result.update(evaluate(out, run_dir, new_split))
    new.update_summary.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if evaluate_splits:
        from seektune.evaluate.stage import write_run_report

        write_run_report(out)  # again, now with the update's before / after table
    return result
