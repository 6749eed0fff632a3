"""The classification stage: ``task: classification`` recipes, trained and scored.

    seektune run examples/ticket-routing/recipe.yaml                    # prepare -> train -> score -> report
    seektune train examples/ticket-routing/recipe.yaml method.name=linear   # only the n-gram classifier
    seektune eval runs/ticket-routing-recipe                            # score again, rewrite the report

Every run fits the character n-gram classifier (``ngram.py``: seconds, no vocabulary) on the train
split, and with ``method: full`` (the default) also fine-tunes the encoder through
:class:`~seektune.train.classify.FineTuner`; both are scored on the same split with the same
metrics (``classify.classification_metrics``), so the report can say whether the encoder beat
counting characters. Before an encoder is trained, its tokenizer's [UNK] rate on the training
text is checked (``seektune/data/language_fit.py``): above 25% the run stops unless
``data.allow_poor_fit: true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seektune.train.classify import (
    SAVED_NAME,
    FineTuner,
    classification_metrics,
    label_ids,
    load_classifier_tokenizer,
    resolve_classifier_path,
)


def labelled_split(run, name: str) -> tuple[list[str], list[str]]:
    """The ``{text, label}`` rows of a prepared split as (texts, label names); no file gives two empty lists."""
    from seektune.data.io import read_jsonl

    if not run.split(name).is_file():
        return [], []
    rows = [r for r in read_jsonl(run.split(name)) if "text" in r]
    missing = [r["meta"].get("origin") for r in rows if "label" not in r["meta"]]
    if missing:
        raise ValueError(f"rows without a label (add 'label' to data.meta_fields?): {missing[:5]}")
    return [r["text"] for r in rows], [str(r["meta"]["label"]) for r in rows]


def training_summary(model, history: list[dict[str, Any]]) -> dict[str, Any]:
    """train.json's figures of a fine-tuned classifier, from the Trainer's log history (the report shows them)."""
    losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    final = next((h for h in reversed(history) if "train_runtime" in h), {})
    return {
        "steps": max((h.get("step", 0) for h in history), default=0),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "train_runtime_s": final.get("train_runtime"),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "log_history": history,
    }


def run(recipe) -> Path:
    """``seektune train recipe.yaml`` with ``task: classification``: rows ``{text, label}`` (label in
    ``data.meta_fields``) -> ``<run>/ngram/`` (the character n-gram classifier, fitted on every run) and, with
    method full (the default), ``<run>/classifier/`` (the fine-tuned encoder); then ``train.json`` and, when
    there is a test split, ``eval/metrics.json`` and ``report.html`` (:func:`evaluate_run`).

    An encoder whose tokenizer maps more than 25% of the training text to [UNK] is not trained unless
    ``data.allow_poor_fit`` (``PoorLanguageFit``, one line saying what to do instead)."""
    import time

    from seektune.data import prepare
    from seektune.data.language_fit import check_training_fit
    from seektune.runs import run_of
    from seektune.train.ngram import DESCRIPTION, NgramClassifier

    run = run_of(recipe)
    if not run.is_prepared():
        prepare.run(recipe)
    run.save_recipe(recipe)
    train_x, train_y = labelled_split(run, "train")
    val_x, val_y = labelled_split(run, "val")
    if not train_x:
        raise ValueError("no {text, label} rows in the train split; task classification expects them")
    names = list(recipe.labels)
    summary: dict[str, Any] = {"task": "classification", "method": recipe.method.name, "train_rows": len(train_x)}
    if recipe.method.name == "full":  # refuse before anything is trained
        tokenizer = load_classifier_tokenizer(resolve_classifier_path(recipe.model.name))
        summary["language_fit"] = check_training_fit(train_x, tokenizer, recipe.model.name,
                                                     recipe.data.allow_poor_fit)
    started = time.perf_counter()
    ngram = NgramClassifier(names).fit(train_x, label_ids(train_y, names, len(names), "train labels"),
                                       seed=recipe.train.seed)
    ngram.save(run.ngram_classifier)
    summary["ngram"] = {"description": DESCRIPTION, "features": ngram.features,
                        "fit_s": round(time.perf_counter() - started, 2)}
    if recipe.method.name == "full":
        tuner = FineTuner(recipe.model.name, task_type="classification", label_names=names)
        tuner.set_params(learning_rate=recipe.train.lr, batch_size=recipe.train.batch_size,
                         epochs=recipe.train.epochs, max_steps=recipe.train.max_steps,
                         max_length=recipe.data.max_length, seed=recipe.train.seed,
                         weight_decay=recipe.train.weight_decay, warmup_ratio=recipe.train.warmup_ratio,
                         logging_steps=recipe.train.logging_steps)
        tuner.fit(train_x, train_y, val_x or None, val_y or None)
        tuner.save(run.classifier)
        summary.update(training_summary(tuner.model, tuner.history))
    else:
        summary["train_runtime_s"] = summary["ngram"]["fit_s"]
    run.train_summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if labelled_split(run, recipe.eval.split)[0]:
        evaluate_run(run.path)
    return run.path


def evaluate_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """``seektune eval RUN`` for a classification run: the trained classifier and, beside a fine-tuned encoder,
    the n-gram baseline, scored with the same metrics on the recipe's eval split (``eval.split``,
    ``eval.max_rows``; ``overrides`` such as ``max_rows=50`` set them for this call); writes
    ``eval/metrics.json`` (``tuned``, ``baseline``, ``systems``) and the report."""
    from seektune.evaluate.report import write_report
    from seektune.recipe import apply_overrides, validate_recipe
    from seektune.runs import RunDir
    from seektune.train.ngram import DESCRIPTION, SETTINGS_NAME, NgramClassifier

    run = RunDir(run_dir)
    recipe = run.recipe()
    if overrides:
        scoped = [o if o.startswith("eval.") else f"eval.{o}" for o in overrides]
        recipe = validate_recipe(apply_overrides(recipe.model_dump(), scoped), "eval overrides")
    split = recipe.eval.split
    texts, labels = labelled_split(run, split)
    if recipe.eval.max_rows:
        texts, labels = texts[: recipe.eval.max_rows], labels[: recipe.eval.max_rows]
    if not texts:
        raise ValueError(f"the {split} split of {run} has no {{text, label}} rows; nothing to evaluate")
    names = list(recipe.labels)
    truth = label_ids(labels, names, len(names), f"{split} labels")
    has_ngram = (run.ngram_classifier / SETTINGS_NAME).is_file()
    metrics: dict[str, Any] = {"task": "classification", "split": split, "systems": {}}
    if recipe.method.name == "linear":
        if not has_ngram:
            raise FileNotFoundError(f"{run} has no trained n-gram classifier yet; run `seektune train` first")
        metrics["systems"]["tuned"] = f"n-gram classifier ({DESCRIPTION}; method linear)"
        metrics["tuned"] = classification_metrics(
            truth, NgramClassifier.load(run.ngram_classifier).predict_proba(texts), names)
    else:
        if not (run.classifier / SAVED_NAME).is_file():
            raise FileNotFoundError(f"{run} has no trained classifier yet; run `seektune train` first")
        metrics["systems"]["tuned"] = f"fine-tuned encoder ({recipe.model.name})"
        metrics["tuned"] = classification_metrics(truth, FineTuner.load(run.classifier).predict_proba(texts), names)
        if has_ngram:
            metrics["systems"]["baseline"] = f"n-gram baseline ({DESCRIPTION})"
            metrics["baseline"] = classification_metrics(
                truth, NgramClassifier.load(run.ngram_classifier).predict_proba(texts), names)
    run.eval.mkdir(parents=True, exist_ok=True)
    run.metrics.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    write_report(run)
    return metrics
