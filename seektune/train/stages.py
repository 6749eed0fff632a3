"""Multi-stage training: general -> domain -> instruction, one run directory.

    stages:
      - {name: general, data: {paths: [general.jsonl]}, train: {epochs: 1}}
      - {name: domain,  data: {paths: [faq.jsonl]}, train: {lr: 1.0e-3}}
      - {name: prefs,   objective: dpo, carry: merge, data: {paths: [pairs.jsonl]}}

Each stage is the top-level recipe with the stage's sections laid over it
(:meth:`Recipe.stage_recipe`), trained in ``<run>/stages/NN-name/`` (``RunDir.stage``) through the
router (``train/run.py``, which hands this module its objective dispatch) as a complete run of its
own (data, checkpoints, adapter, train.json), starting from the previous stage's weights:

* ``carry: continue`` (the default) keeps training the previous stage's adapter (or, after a
  full / freeze stage, its whole model);
* ``carry: merge`` merges the previous adapter into the weights and trains a fresh adapter
  on top (what a DPO stage after SFT wants: its reference model is then the SFT model); that
  stage saves its result merged, as ``model/``, so nothing downstream needs to know the merge.
  A full / freeze stage after an adapter stage always starts from the merged weights.

The run directory then holds the final weights (``adapter/`` when every stage trained one
adapter on the original base, else the merged ``model/``), the last stage's data splits for
``seektune eval``, and a ``train.json`` with every stage's figures and one loss history.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seektune.recipe import Recipe
from seektune.runs import RunDir, run_of

log = logging.getLogger(__name__)


def stage_recipe(recipe: Recipe, index: int) -> Recipe:
    """Stage ``index`` as a whole recipe writing into its own run directory under the run."""
    return recipe.stage_recipe(index, run_of(recipe).stage(index, recipe.stages[index].name).path)


def prepare(recipe: Recipe) -> Path:
    """Prepare every stage's data; the run's ``data/`` is the last stage's (what ``eval`` scores)."""
    from seektune.data import prepare as prepare_stage

    last = None
    for index in range(len(recipe.stages)):
        last = prepare_stage.run(stage_recipe(recipe, index))
    run = run_of(recipe)
    _copy_data(RunDir(last), run)
    run.save_recipe(recipe)
    return run.path


def _copy_data(stage: RunDir, run: RunDir) -> None:
    if run.data.exists():
        shutil.rmtree(run.data)
    shutil.copytree(stage.data, run.data)


def _trained(stage: RunDir) -> tuple[str, Path] | None:
    weights = stage.trained_weights()
    return None if weights is None else ("adapter" if weights == stage.adapter else "model", weights)


def run(recipe: Recipe, train_one: Callable[[Recipe], Path]) -> Path:
    """Train every stage in order, each from the previous one's weights, each through ``train_one`` (the
    router's objective dispatch); returns the run directory."""
    from seektune.train.methods import PEFT_METHODS

    run = run_of(recipe)
    run.save_recipe(recipe)
    base = recipe.model.name  # the weights the previous stage's adapter sits on
    previous: tuple[str, Path] | None = None
    summaries: list[dict[str, Any]] = []
    for index, stage in enumerate(recipe.stages):
        sub = stage_recipe(recipe, index)  # stage 1 starts where the top level says (model.adapter / merge)
        sub_run = run_of(sub)
        if previous is not None:
            # an adapter stage saved a bare adapter only when its base had nothing merged in (save_trained)
            kind, path = previous
            sub.model.name, sub.model.merge, sub.model.adapter = base, [], None
            if kind == "model":  # full / freeze, or merged: its weights hold everything before it
                sub.model.name = base = str(path)
            elif stage.carry == "continue" and sub.method.name in PEFT_METHODS:
                sub.model.adapter = str(path)
            else:
                sub.model.merge = [str(path)]
        done = _trained(sub_run) if sub_run.train_summary.is_file() else None
        if done and recipe.train.resume == "auto":
            print(f"seektune: stage {index + 1}/{len(recipe.stages)} {stage.name}: already trained, kept")
        else:
            print(f"seektune: stage {index + 1}/{len(recipe.stages)} {stage.name} ({sub.objective}, "
                  f"{sub.method.name}, carry {stage.carry if index else 'from the base'})")
            train_one(sub)
            done = _trained(sub_run)
            if done is None:
                raise RuntimeError(f"stage {stage.name} wrote no adapter or model in {sub_run}")
        summaries.append(_stage_summary(index, stage.name, stage.carry, sub))
        previous = done
    _assemble(recipe, previous, base)
    _copy_data(sub_run, run)
    _write_summary(recipe, summaries)
    return run.path


def _assemble(recipe: Recipe, last: tuple[str, Path], base: str) -> None:
    """The run's final weights: the last adapter as is when it sits on the recipe's model, else a whole model."""
    run = run_of(recipe)
    for stale in (run.adapter, run.model):
        if stale.exists():
            shutil.rmtree(stale)
    kind, path = last
    if kind == "model" or base == recipe.model.name:
        shutil.copytree(path, run.adapter if kind == "adapter" else run.model)
        return
    from peft import PeftModel

    from seektune.models.load import load_model

    log.info("merging the last stage's adapter into the model it trained on, in %s", run.model)
    loaded = load_model(base, dtype=recipe.model.dtype, chat_template=recipe.model.chat_template,
                        trust_remote_code=recipe.model.trust_remote_code)
    model = PeftModel.from_pretrained(loaded.model, str(path)).merge_and_unload()
    model.save_pretrained(run.model, safe_serialization=True)
    loaded.tokenizer.save_pretrained(run.model)


def _stage_summary(index: int, name: str, carry: str, sub: Recipe) -> dict[str, Any]:
    train = json.loads(run_of(sub).train_summary.read_text(encoding="utf-8"))
    keep = ("objective", "method", "train_rows", "train_tokens", "steps", "train_runtime_s", "first_loss",
            "last_loss", "eval_loss")
    return {"stage": name, "index": index, "carry": carry if index else None, "dir": str(run_of(sub)),
            "starts_from": {"model": sub.model.name, "merged": sub.model.merge, "adapter": sub.model.adapter},
            **{k: train.get(k) for k in keep}, "log_history": train.get("log_history", [])}


def _write_summary(recipe: Recipe, stages: list[dict[str, Any]]) -> None:
    """One train.json for the run: each stage's figures and one loss history with continuing step numbers."""
    history, offset, epoch_offset = [], 0, 0.0
    for stage in stages:
        entries = stage.pop("log_history")
        for entry in entries:
            shifted = {**entry, "stage": stage["stage"]}
            if "step" in entry:
                shifted["step"] = entry["step"] + offset
            if "epoch" in entry:
                shifted["epoch"] = entry["epoch"] + epoch_offset
            history.append(shifted)
        offset += stage.get("steps") or 0
        epoch_offset += max((e.get("epoch", 0) for e in entries), default=0)
    last = stages[-1]
    summary = {
        "objective": "stages",
        "method": " -> ".join(f"{s['stage']}:{s['objective']}/{s['method']}" for s in stages),
        "stages": stages,
        "train_rows": sum(s.get("train_rows") or 0 for s in stages),
        "train_tokens": sum(s.get("train_tokens") or 0 for s in stages),
        "steps": offset,
        "train_runtime_s": sum(s.get("train_runtime_s") or 0 for s in stages),
        "first_loss": stages[0].get("first_loss"),
        "last_loss": last.get("last_loss"),
        "eval_loss": last.get("eval_loss"),
        "log_history": history,
    }
    run_of(recipe).train_summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
