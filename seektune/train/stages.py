"""Multi-stage training: general -> domain -> instruction, one run directory.

    stages:
      - {name: general, data: {paths: [general.jsonl]}, train: {epochs: 1}}
      - {name: domain,  data: {paths: [faq.jsonl]}, train: {lr: 1.0e-3}}
      - {name: prefs,   objective: dpo, carry: merge, data: {paths: [pairs.jsonl]}}

Each stage is the top-level recipe with the stage's sections laid over it
(:meth:`Recipe.stage_recipe`), trained in ``<run>/stages/NN-name/`` as a complete run of its
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
from pathlib import Path
from typing import Any

from seektune.recipe import Recipe, save_resolved

log = logging.getLogger(__name__)


def prepare(recipe: Recipe) -> Path:
    """Prepare every stage's data; the run's ``data/`` is the last stage's (what ``eval`` scores)."""
    from seektune.data import prepare as prepare_stage

    last = None
    for index in range(len(recipe.stages)):
        last = prepare_stage.run(recipe.stage_recipe(index))
    _copy_data(last, recipe.run_dir)
    save_resolved(recipe, recipe.run_dir)
    return recipe.run_dir


def _copy_data(stage_dir: Path, run_dir: Path) -> None:
    if (run_dir / "data").exists():
        shutil.rmtree(run_dir / "data")
    shutil.copytree(stage_dir / "data", run_dir / "data")


def _trained(stage_dir: Path) -> tuple[str, Path] | None:
    for kind, marker in (("adapter", "adapter_config.json"), ("model", "config.json")):
        if (stage_dir / kind / marker).is_file():
            return kind, stage_dir / kind
    return None


def run(recipe: Recipe) -> Path:
    """Train every stage in order, each from the previous one's weights; returns the run directory."""
    from seektune.train import sft
    from seektune.train.methods import PEFT_METHODS

    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, run_dir)
    base = recipe.model.name  # the weights the previous stage's adapter sits on
    previous: tuple[str, Path] | None = None
    summaries: list[dict[str, Any]] = []
    for index, stage in enumerate(recipe.stages):
        sub = recipe.stage_recipe(index)  # stage 1 starts where the top level says (model.adapter / merge)
        if previous is not None:
            # an adapter stage saved a bare adapter only when its base had nothing merged in (sft.save_trained)
            kind, path = previous
            sub.model.name, sub.model.merge, sub.model.adapter = base, [], None
            if kind == "model":  # full / freeze, or merged: its weights hold everything before it
                sub.model.name = base = str(path)
            elif stage.carry == "continue" and sub.method.name in PEFT_METHODS:
                sub.model.adapter = str(path)
            else:
                sub.model.merge = [str(path)]
        done = _trained(sub.run_dir) if (sub.run_dir / "train.json").is_file() else None
        if done and recipe.train.resume == "auto":
            print(f"seektune: stage {index + 1}/{len(recipe.stages)} {stage.name}: already trained, kept")
        else:
            print(f"seektune: stage {index + 1}/{len(recipe.stages)} {stage.name} ({sub.objective}, "
                  f"{sub.method.name}, carry {stage.carry if index else 'from the base'})")
            sft.run(sub)
            done = _trained(sub.run_dir)
            if done is None:
                raise RuntimeError(f"stage {stage.name} wrote no adapter or model in {sub.run_dir}")
        summaries.append(_stage_summary(index, stage.name, stage.carry, sub))
        previous = done
    _assemble(recipe, previous, base)
    _copy_data(sub.run_dir, run_dir)
    _write_summary(recipe, summaries)
    return run_dir


def _assemble(recipe: Recipe, last: tuple[str, Path], base: str) -> None:
    """The run's final weights: the last adapter as is when it sits on the recipe's model, else a whole model."""
    run_dir = recipe.run_dir
    for stale in ("adapter", "model"):
        if (run_dir / stale).exists():
            shutil.rmtree(run_dir / stale)
    kind, path = last
    if kind == "model" or base == recipe.model.name:
        shutil.copytree(path, run_dir / kind)
        return
    from peft import PeftModel

    from seektune.models.load import load_model

    log.info("merging the last stage's adapter into the model it trained on, in %s/model", run_dir)
    loaded = load_model(base, dtype=recipe.model.dtype, chat_template=recipe.model.chat_template,
                        trust_remote_code=recipe.model.trust_remote_code)
    model = PeftModel.from_pretrained(loaded.model, str(path)).merge_and_unload()
    model.save_pretrained(run_dir / "model", safe_serialization=True)
    loaded.tokenizer.save_pretrained(run_dir / "model")


def _stage_summary(index: int, name: str, carry: str, sub: Recipe) -> dict[str, Any]:
    train = json.loads((sub.run_dir / "train.json").read_text(encoding="utf-8"))
    keep = ("objective", "method", "train_rows", "train_tokens", "steps", "train_runtime_s", "first_loss",
            "last_loss", "eval_loss")
    return {"stage": name, "index": index, "carry": carry if index else None, "dir": str(sub.run_dir),
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
    (recipe.run_dir / "train.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
