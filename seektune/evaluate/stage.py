"""The eval stage: answer the test split with the base and the tuned model, score both.

    seektune eval runs/customer-service

Writes ``<run>/eval/metrics.json`` as ``{"base": {...}, "tuned": {...}}`` (each with the
overall scores and a ``by_language`` breakdown) and ``<run>/eval/samples.jsonl`` with
question, reference, base answer and tuned answer per row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seektune.data.io import read_jsonl, write_jsonl
from seektune.evaluate.generate import generate_answers
from seektune.evaluate.metrics import facts_found, language_of, rouge_l, score
from seektune.models.load import load_model
from seektune.recipe import load_run


def load_tuned(run_dir: Path):
    """The run's tuned model and its base: ``(recipe, loaded_base, tuned)``.

    For adapter methods ``tuned`` is the base with the adapter attached (its
    ``disable_adapter()`` gives the base back, so one copy of the weights serves both);
    for full / freeze it is the saved model, and ``loaded_base.model`` the untouched base.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = load_run(run_dir)
    adapter_dir, model_dir = run_dir / "adapter", run_dir / "model"
    if not (adapter_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained adapter or model yet; run `seektune train` first")
    loaded = load_model(
        recipe.model.name,
        dtype=recipe.model.dtype,
        chat_template=recipe.model.chat_template,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    if (adapter_dir / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(loaded.model, adapter_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=loaded.model.dtype)
        model.to(loaded.model.device)
    model.eval()
    return recipe, loaded, model


def score_systems(rows: list[dict[str, Any]], answers: dict[str, list[str]]) -> dict[str, Any]:
    references = [row["messages"][-1]["content"] for row in rows]
    facts = [row["meta"].get("facts") or [] for row in rows]
    languages = [language_of(ref) for ref in references]
    metrics: dict[str, Any] = {}
    for system, predictions in answers.items():
        overall_lang = "zh" if languages and all(lang == "zh" for lang in languages) else "en"
        result = score(predictions, references, facts, overall_lang, full=True)
        result["by_language"] = {}
        for lang in sorted(set(languages)):
            idx = [i for i, value in enumerate(languages) if value == lang]
            result["by_language"][lang] = score(
                [predictions[i] for i in idx], [references[i] for i in idx], [facts[i] for i in idx], lang
            )
        metrics[system] = result
    return metrics


def per_row_scores(rows: list[dict[str, Any]], predictions: list[str], metric: str) -> list[float]:
    """One score per row for the A/B comparison: ROUGE-L F1, or 1/0 for "every key fact present"."""
    scores = []
    for row, prediction in zip(rows, predictions):
        reference = row["messages"][-1]["content"]
        if metric == "fact_accuracy":
            facts = row["meta"].get("facts") or []
            scores.append(float(all(facts_found(prediction, facts))) if facts else 0.0)
        else:
            scores.append(rouge_l([prediction], [reference], language_of(reference)))
    return scores


def run(run_dir: str | Path) -> dict[str, Any]:
    """Generate and score; returns the metrics dict also written to eval/metrics.json."""
    run_dir = Path(run_dir)
    recipe, loaded, model = load_tuned(run_dir)
    spec = recipe.eval
    rows = [row for row in read_jsonl(run_dir / "data" / f"{spec.split}.jsonl") if "messages" in row]
    if spec.max_rows:
        rows = rows[: spec.max_rows]
    if not rows:
        raise ValueError(f"the {spec.split} split of {run_dir} is empty; nothing to evaluate")
    conversations = [row["messages"] for row in rows]
    options = {"batch_size": spec.batch_size, "max_new_tokens": spec.max_new_tokens}
    is_lora = hasattr(model, "merge_adapter") and getattr(model, "peft_type", None) is not None \
        and str(model.peft_type).endswith("LORA")
    if is_lora:
        model.merge_adapter()  # generation with merged weights skips the per-layer LoRA matmuls
    try:
        tuned = generate_answers(model, loaded.tokenizer, conversations, desc="tuned model", **options)
    finally:
        if is_lora:
            model.unmerge_adapter()
    answers = {"tuned": [t["answer"] for t in tuned]}
    base = None
    if spec.compare_base:
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                base = generate_answers(model, loaded.tokenizer, conversations, desc="base model", **options)
        else:
            base = generate_answers(loaded.model, loaded.tokenizer, conversations, desc="base model", **options)
        answers = {"base": [b["answer"] for b in base], **answers}
    metrics = score_systems(rows, answers)
    metrics["split"] = spec.split
    row_scores = {system: per_row_scores(rows, predictions, spec.ab_metric) for system, predictions in answers.items()}
    if "base" in answers:
        from seektune.evaluate.compare import ab_summary

        metrics["ab"] = ab_summary(row_scores["base"], row_scores["tuned"], metric_name=spec.ab_metric,
                                   bar=spec.win_bar, seed=recipe.train.seed)
        metrics["tuned"]["win_rate"] = metrics["ab"]["win_rate"]
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    samples = []
    for i, row in enumerate(rows):
        sample = {
            "origin": row["meta"].get("origin"),
            "question": next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user"),
            "reference": row["messages"][-1]["content"],
            "facts": row["meta"].get("facts") or [],
            "tuned": tuned[i]["answer"],
        }
        if base is not None:
            sample["base"] = base[i]["answer"]
            sample[f"base_{spec.ab_metric}"] = row_scores["base"][i]
        sample[f"tuned_{spec.ab_metric}"] = row_scores["tuned"][i]
        if tuned[i]["reasoning"]:
            sample["tuned_reasoning"] = tuned[i]["reasoning"]
        samples.append(sample)
    write_jsonl(out / "samples.jsonl", samples)
    return metrics
