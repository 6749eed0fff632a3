"""The run report (``report.html`` + ``report.json``) and the comparison of several runs.

    seektune eval runs/customer-service          # writes runs/customer-service/report.html after scoring
    seektune compare runs/r8 runs/r16            # a table and a chart of the runs side by side

The report only gathers what the stages already wrote (recipe, data card, train.json,
eval/metrics.json, eval/samples.jsonl, human_eval/results.json): report.json holds their
numbers unchanged, and the only choice it makes is which answer rows to show. The HTML is
one file with no external resource (plots are inline PNG, styles inline, no JavaScript),
so it opens the same offline, attached to an e-mail or copied off a training box.

The pages are ``templates/report.html.j2`` and ``templates/compare.html.j2``. The functions
here turn the report into what those templates show (rows of text, already formatted by
``figures.py``); the templates lay it out, and Jinja2's autoescaping escapes every string,
answers included, since they are model output and may hold markup.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from seektune.data.io import read_jsonl
from seektune.data.pages import render
from seektune.evaluate.figures import (
    COMPARE_METRICS,
    COMPARE_NAMES,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    METRIC_ORDER,
    compare_chart_png,
    delta_class,
    fmt,
    fmt_delta,
    fmt_interval,
    fmt_setting,
    is_number,
    loss_curve_png,
    retrieval_table,
    win_rate_chart,
)
from seektune.runs import RunDir

RANKED_METHODS = {"lora", "dora", "qlora"}  # the methods for which rank r and alpha mean something
NGRAM = "character n-gram TF-IDF + logistic regression"  # train/ngram.py's classifier (train is a layer above)
CLASSIFICATION_METHODS = {"full": "full (every weight of the encoder)", "linear": f"linear ({NGRAM}; no encoder)"}
SECTION_NAMES = {  # the in-page links, in page order; a section appears in the nav when the page has it
    "recipe": "recipe", "data": "data", "loss-curve": "training", "metrics": "metrics", "rag": "retrieval",
    "confusion": "confusion matrix", "win-rate": "win rate",
    "by-category": "by category", "by-language": "by language", "rows": "rows", "human": "human eval",
}
__all__ = ["build_report", "compare_runs", "compare_table_rows", "fmt", "render_compare_html", "render_report_html",
           "write_report"]


# ---------------------------------------------------------------- reading a run directory


def _read_json(path: Path) -> Any | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _read_recipe(run: RunDir) -> dict[str, Any] | None:
    if not run.resolved_recipe.is_file():
        return None
    return yaml.safe_load(run.resolved_recipe.read_text(encoding="utf-8")) or {}


def _read_metrics(run: RunDir) -> dict[str, Any]:
    metrics = _read_json(run.metrics)
    if metrics is None:
        raise FileNotFoundError(f"{run} has no eval/metrics.json; run `seektune eval {run}` first")
    return metrics


def recipe_summary(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a reader of the report needs to know what was trained, and how."""
    method, train = recipe.get("method") or {}, recipe.get("train") or {}
    summary: dict[str, Any] = {
        "model": (recipe.get("model") or {}).get("name"),
        "task": recipe.get("task"),
        "method": method.get("name"),
    }
    if summary["task"] == "classification":
        # the classifier fine-tunes the whole encoder unless method linear (older runs recorded lora, never used)
        summary["method"] = "linear" if method.get("name") == "linear" else "full"
        if summary["method"] == "linear":  # no encoder, no optimiser steps: only the seed applies
            return {"task": summary["task"], "method": "linear", "seed": train.get("seed")}
    elif method.get("name") in RANKED_METHODS:
        summary["r"], summary["alpha"] = method.get("r"), method.get("alpha")
    for key in ("epochs", "lr", "batch_size", "max_steps", "seed"):
        summary[key] = train.get(key)
    return summary


def data_summary(card: dict[str, Any]) -> dict[str, Any]:
    """Accounting, rows per split and rejects by reason from the data card."""
    return {
        "accounting": card.get("accounting"),
        "splits": {name: info.get("rows") for name, info in (card.get("splits") or {}).items()},
        "rejected_by_reason": card.get("rejected_by_reason") or {},
    }


def _row_metric(metrics: dict[str, Any], samples: list[dict[str, Any]]) -> str | None:
    """The per-row metric of the A/B comparison; older files without ``ab`` still carry it in the rows."""
    if (metrics.get("ab") or {}).get("metric"):
        return metrics["ab"]["metric"]
    first = samples[0] if samples else {}
    for key in first:
        name = key.removeprefix("tuned_")
        if key.startswith("tuned_") and name != "reasoning" and f"base_{name}" in first:
            return name
    return None


def row_delta(sample: dict[str, Any], metric: str) -> float | None:
    """Tuned minus base on one row, or None when either score is missing (a row without facts)."""
    base, tuned = sample.get(f"base_{metric}"), sample.get(f"tuned_{metric}")
    return tuned - base if is_number(base) and is_number(tuned) else None


def won_and_lost(samples: list[dict[str, Any]], metric: str | None, k: int = 5) -> dict[str, Any]:
    """The ``k`` rows where tuned beat base by most, and the ``k`` where it lost by most.

    Only rows with a real win (delta > 0) or loss (delta < 0) qualify, so a run that never
    loses shows no "lost" rows rather than its narrowest wins. Ties keep file order.
    """
    scored = [(row_delta(s, metric), s) for s in samples] if metric else []
    scored = [(d, s) for d, s in scored if d is not None]
    won = sorted((x for x in scored if x[0] > 0), key=lambda x: -x[0])
    lost = sorted((x for x in scored if x[0] < 0), key=lambda x: x[0])
    return {"metric": metric, "won_most": [s for _, s in won[:k]], "lost_most": [s for _, s in lost[:k]]}


def build_report(run_dir: str | Path | RunDir) -> dict[str, Any]:
    """Everything the report shows, as one dict (the content of ``report.json``).

    Only ``eval/metrics.json`` is required; a missing recipe, data card, train.json,
    samples or human evaluation leaves its key out.
    """
    run = RunDir(run_dir)
    metrics = _read_metrics(run)
    report: dict[str, Any] = {"run": str(run), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    recipe = _read_recipe(run)
    if recipe is not None:
        report["recipe"] = recipe_summary(recipe)
    card = _read_json(run.card_json)
    if card is not None:
        report["data"] = data_summary(card)
    training = _read_json(run.train_summary)
    if training is not None:
        report["training"] = training
    report["eval"] = metrics
    samples = read_jsonl(run.samples) if run.samples.is_file() else []
    report["rows"] = won_and_lost(samples, _row_metric(metrics, samples))
    human = _read_json(run.human_results)
    if human is not None:
        report["human"] = human
    update = _read_json(run.update_summary)
    if update is not None and "new" in update:
        report["update"] = update
    return report


def write_report(run_dir: str | Path | RunDir) -> tuple[Path, Path]:
    """Write ``<run>/report.html`` and ``<run>/report.json``; returns their paths."""
    run = RunDir(run_dir)
    report = build_report(run)
    run.report_json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    run.report_html.write_text(render_report_html(report), encoding="utf-8")
    return run.report_html, run.report_json


# ---------------------------------------------------------------- what report.html.j2 shows


def _labels(metrics: dict[str, Any]) -> dict[str, str]:
    systems = metrics.get("systems") or {}
    return {name: str(systems.get(name) or name) for name in ("base", "baseline", "tuned")}


def classifier_vs_baseline(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """A classification run's fine-tuned encoder against its n-gram baseline, in one sentence (report and CLI):
    ``{"text", "baseline_better"}``; None when the run has no baseline (method linear, older runs)."""
    tuned, baseline = metrics.get("tuned"), metrics.get("baseline")
    if metrics.get("task") != "classification" or not isinstance(tuned, dict) or not isinstance(baseline, dict):
        return None
    shown = [k for k in ("macro_f1", "accuracy") if is_number(tuned.get(k)) and is_number(baseline.get(k))]
    if not shown:
        return None
    first, *rest = shown
    text = (f"{METRIC_NAMES[first]}: fine-tuned encoder {fmt(first, tuned[first])} vs n-gram baseline "
            f"{fmt(first, baseline[first])}")
    text += "".join(f" ({METRIC_NAMES[k]} {fmt(k, tuned[k])} vs {fmt(k, baseline[k])})" for k in rest)
    better = baseline[first] - tuned[first] >= 0.05
    if better:
        text += ". The baseline is better: keep it (method: linear) or try an encoder that reads this text."
    return {"text": text, "baseline_better": better}


def _method_text(recipe: dict[str, Any]) -> str:
    if recipe.get("task") == "classification" and recipe.get("method") in CLASSIFICATION_METHODS:
        return CLASSIFICATION_METHODS[recipe["method"]]
    text = str(recipe.get("method"))
    if recipe.get("r") is not None:
        text += f" (r {fmt_setting('r', recipe['r'])}, alpha {fmt_setting('alpha', recipe.get('alpha'))})"
    return text


def _header(report: dict[str, Any]) -> dict[str, Any]:
    recipe, metrics = report.get("recipe") or {}, report["eval"]
    facts = [("run", report["run"]), ("created", report["created"])]
    if recipe.get("model"):
        facts.append(("model", recipe["model"]))
    if recipe.get("method"):
        facts.append(("method", _method_text(recipe)))
    facts.append(("split", metrics.get("split", "test")))
    ab, headline = metrics.get("ab"), None
    if ab:
        label = _labels(metrics)
        headline = {"passed": ab.get("passed"), "tuned": label["tuned"], "base": label["base"], "wins": ab.get("wins"),
                    "n": ab.get("n"), "metric": ab.get("metric"), "win_rate": fmt("win_rate", ab.get("win_rate")),
                    "bar": fmt("bar", ab.get("bar"))}
    return {"facts": facts, "headline": headline, "versus": classifier_vs_baseline(metrics)}


def _recipe_rows(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    # max_steps -1 means "the epochs decide": nothing to show
    shown = {k: v for k, v in recipe.items() if v is not None and not (k == "max_steps" and v == -1)}
    return [(key.replace("_", " "), fmt_setting(key, value)) for key, value in shown.items()]


def _data(data: dict[str, Any]) -> dict[str, Any]:
    acc = data.get("accounting") or {}
    reasons = sorted((data.get("rejected_by_reason") or {}).items(), key=lambda kv: -kv[1])
    return {
        "accounting": {"read": acc.get("read", "–"), "added": acc.get("added", 0), "kept": acc.get("kept", "–"),
                       "rejected": acc.get("rejected", "–")} if acc else None,
        "splits": [(name, fmt("n", rows)) for name, rows in (data.get("splits") or {}).items()],
        "reasons": reasons[:8],
        "more_reasons": max(0, len(reasons) - 8),
    }


def _training(training: dict[str, Any] | None) -> dict[str, Any]:
    view: dict[str, Any] = {"loss_curve": loss_curve_png((training or {}).get("log_history") or []),
                            "facts": None, "stages": None, "no_curve": "no training log"}
    if training:
        rows = []
        trainable, total = training.get("trainable_parameters"), training.get("total_parameters")
        if is_number(trainable) and is_number(total) and total:
            rows.append(("parameters trained", f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"))
        for key in ("method", "train_rows", "train_tokens", "steps", "train_runtime_s", "first_loss", "last_loss",
                    "eval_loss", "best_checkpoint"):
            if training.get(key) is not None:
                rows.append((METRIC_NAMES.get(key, key.replace("_", " ")), fmt(key, training[key])))
        rows += _classification_training(training)
        if training.get("task") == "classification" and training.get("method") == "linear":
            view["no_curve"] = "method linear fits a logistic regression to convergence: there is no loss log"
        distill = training.get("distill") or {}
        if distill:
            rows.append(("teacher", f"{distill.get('teacher')} ({distill.get('mode')} distillation)"))
            if is_number(distill.get("val_kl_before")) and is_number(distill.get("val_kl_after")):
                rows.append(("KL to the teacher (val, per answer token)",
                             f"{distill['val_kl_before']:.3f} → {distill['val_kl_after']:.3f}"))
        preference = training.get("preference") or {}
        if is_number(preference.get("first_reward_margin")) and is_number(preference.get("last_reward_margin")):
            rows.append((f"{training.get('objective')} reward margin",
                         f"{preference['first_reward_margin']:.3f} → {preference['last_reward_margin']:.3f}"))
        rows += _grpo_training(training.get("grpo") or {})
        view["facts"] = rows
    stages = (training or {}).get("stages") or []
    if stages:
        keys = ("objective", "method", "carry", "train_rows", "steps", "first_loss", "last_loss", "eval_loss")
        view["stages"] = {
            "header": ["stage", *(k.replace("_", " ") for k in keys)],
            "rows": [[str(stage.get("stage")), *(fmt(k, stage[k]) if stage.get(k) is not None else "-" for k in keys)]
                     for stage in stages],
        }
    return view


def _grpo_training(grpo: dict[str, Any]) -> list[tuple[str, str]]:
    """A grpo run's rewards (first and last logged mean of each), KL and answer length, as training facts."""
    rows = []
    names = [reward.get("function") or reward.get("name") for reward in grpo.get("rewards") or []]
    weights = [reward.get("weight", 1.0) for reward in grpo.get("rewards") or []]
    if names:
        rows.append(("grpo rewards", ", ".join(f"{n} x{w:g}" for n, w in zip(names, weights))
                     + f"; {grpo.get('num_generations')} answers per question, beta {grpo.get('beta')}"))
    labels = [(key.removeprefix("first_"), key) for key in grpo if key.startswith("first_")]
    for label, key in labels:
        first, last = grpo.get(key), grpo.get(f"last_{label}")
        if is_number(first) and is_number(last):
            name = {"reward": "summed reward", "kl": "KL to the reference", "completion_length":
                    "answer length (tokens)"}.get(label, label.replace("reward_", "reward: "))
            rows.append((f"{name} (first → last logged)", f"{first:.3f} → {last:.3f}"))
    return rows


def _classification_training(training: dict[str, Any]) -> list[tuple[str, str]]:
    """A classification run's language fit and n-gram classifier, as rows of the training facts."""
    rows = []
    fit = training.get("language_fit") or {}
    if is_number(fit.get("unk_rate")):
        languages = ", ".join(f"{lang} {part.get('unk_rate', 0):.1%}" for lang, part in
                              (fit.get("by_language") or {}).items())
        rows.append(("[UNK] rate of the training text", f"{fit['unk_rate']:.1%}" + (f" ({languages})"
                                                                                 if languages else "")))
    ngram = training.get("ngram") or {}
    if ngram:
        rows.append(("n-gram classifier", f"{ngram.get('description', NGRAM)}: {fmt('n', ngram.get('features'))} "
                     f"n-grams, fitted in {fmt('train_runtime_s', ngram.get('fit_s'))} s"))
    return rows


def _update(update: dict[str, Any]) -> dict[str, Any]:
    """`seektune update`: the previous model ("before") and the updated one on the new and the old test split."""
    rows = []
    for split, label in (("new", "new split"), ("old", "old split")):
        part = update.get(split) or {}
        before, after = part.get("before") or {}, part.get("after") or {}
        for metric in ("fact_accuracy", "rougeL", "bleu"):
            if is_number(before.get(metric)) and is_number(after.get(metric)):
                change = after[metric] - before[metric]
                rows.append([f"{label} (n={after.get('n')})", METRIC_NAMES.get(metric, metric),
                             fmt(metric, before[metric]), fmt(metric, after[metric]),
                             ("+" if change >= 0 else "") + fmt(metric, change)])
    return {"from": update.get("from"), "replay": update.get("replay") or {}, "rows": rows}


def _metric_keys(metrics: dict[str, Any], systems: list[str]) -> list[str]:
    keys = {k for s in systems for k, v in metrics[s].items() if v is None or is_number(v)}
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metric table: per metric a cell per system (value and CI) and, with two systems, the change."""
    systems = [s for s in ("base", "baseline", "tuned") if isinstance(metrics.get(s), dict)]
    label, ci = _labels(metrics), metrics.get("ci") or {}
    both = len(systems) == 2 and systems[-1] == "tuned"
    rows = []
    for key in _metric_keys(metrics, systems):
        row: dict[str, Any] = {"name": METRIC_NAMES.get(key, key), "delta": None, "cells": [
            {"text": fmt(key, metrics[s].get(key)), "ci": fmt_interval(key, (ci.get(s) or {}).get(key))}
            for s in systems]}
        if both:
            base, tuned = metrics[systems[0]].get(key), metrics["tuned"].get(key)
            row["delta"] = {}  # an empty cell
            if is_number(base) and is_number(tuned) and key != "n":
                delta = tuned - base
                row["delta"] = {"text": fmt_delta(key, delta), "class": delta_class(key, delta),
                                "ci": fmt_interval(key, (ci.get("delta") or {}).get(key))}
        rows.append(row)
    thinking = {s: metrics[s].get("reasoning") for s in systems}  # R1-style models: how much they thought
    reasoning = None
    if any(thinking.values()):
        reasoning = [f"{t.get('rows')} rows, {fmt('answer_words', t.get('mean_words'))} words" if t else "–"
                     for t in thinking.values()]
    return {"split": metrics.get("split", "test"), "systems": [(s, label[s]) for s in systems], "both": both,
            "reference": systems[0] if systems else None, "rows": rows, "reasoning": reasoning, "has_ci": bool(ci)}


def _confusion(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A classification run's confusion matrix per system (rows: the true label, columns: the predicted one)."""
    label, blocks = _labels(metrics), []
    for system in ("tuned", "baseline"):
        part = metrics.get(system) or {}
        matrix, names = part.get("confusion_matrix"), part.get("label_names")
        if isinstance(matrix, list) and isinstance(names, list) and len(matrix) == len(names):
            blocks.append({"title": f"{system}: {label[system]}" if label[system] != system else system,
                           "header": ["true / predicted", *map(str, names)],
                           "rows": [[str(name), *row] for name, row in zip(names, matrix)]})
    return blocks


def _win_rate(title: str, summary: dict[str, Any]) -> dict[str, Any]:
    ci = ""
    if is_number(summary.get("ci_low")) and is_number(summary.get("ci_high")):
        ci = f", 95% CI [{fmt('win_rate', summary['ci_low'])}, {fmt('win_rate', summary['ci_high'])}]"
    p = f", sign test p = {summary['p_value']:.2g}" if is_number(summary.get("p_value")) else ""
    errors = f", {summary['errors']} judge errors left out" if summary.get("errors") else ""
    return {"title": title, "passed": summary.get("passed"), "win_rate": fmt("win_rate", summary.get("win_rate")),
            "details": ci + p, "wins": summary.get("wins"), "ties": summary.get("ties"),
            "losses": summary.get("losses"), "n": summary.get("n"), "errors": errors,
            "chart": win_rate_chart(summary)}


def _win_rates(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = []
    if metrics.get("ab"):
        blocks.append(_win_rate(f"Tuned vs base by per-row {metrics['ab'].get('metric')}", metrics["ab"]))
    if metrics.get("judge"):
        blocks.append(_win_rate(f"Tuned vs base by {metrics['judge'].get('metric', 'judge')}", metrics["judge"]))
    return blocks


def _breakdown(metrics: dict[str, Any], key: str, title: str, section_id: str) -> dict[str, Any] | None:
    """One row per category (or language): the main metrics of both systems, and the A/B win rate."""
    systems = [s for s in ("base", "tuned") if isinstance((metrics.get(s) or {}).get(key), dict)]
    if not systems:
        return None
    ab_parts = (metrics.get("ab") or {}).get(key) or {}
    names = sorted({name for s in systems for name in metrics[s][key]} | set(ab_parts))
    columns = ["rougeL", "bleu", "fact_accuracy"]
    rows = []
    for name in names:
        parts = {s: metrics[s][key].get(name) or {} for s in systems}
        n = next((parts[s].get("n") for s in reversed(systems) if parts[s].get("n") is not None), None)
        cells = []
        for column in columns:
            for s in systems:
                value = parts[s].get(column)
                best = len(systems) == 2 and is_number(value) and all(
                    is_number(parts[o].get(column)) and value > parts[o].get(column) for o in systems if o != s)
                cells.append({"text": fmt(column, value), "best": best})
        ab = None
        if ab_parts:
            part = ab_parts.get(name) or {}
            ab = [f"{part.get('wins', '–')} / {part.get('ties', '–')} / {part.get('losses', '–')}",
                  fmt("win_rate", part.get("win_rate"))]
        rows.append({"name": name, "n": fmt("n", n), "cells": cells, "ab": ab})
    return {"id": section_id, "title": title, "systems": systems,
            "columns": [METRIC_NAMES[c].split(" (")[0] for c in columns],
            "ab_metric": (metrics.get("ab") or {}).get("metric") if ab_parts else None, "rows": rows}


def _answer(title: str, text: Any, score: Any, metric: str | None, reasoning: Any = None) -> dict[str, Any]:
    return {"title": title, "text": "" if text is None else str(text), "reasoning": reasoning or None,
            "score": f"{metric} {fmt(metric, score)}" if metric else None}


def _sample(sample: dict[str, Any], metric: str | None, label: dict[str, str]) -> dict[str, Any]:
    meta = [sample.get("origin"), sample.get("category")]
    if sample.get("judge"):
        meta.append(f"judge: {sample['judge']}")
    delta = row_delta(sample, metric) if metric else None
    if delta is not None:
        meta.append(f"Δ {metric} {fmt_delta(metric, delta)}")
    answers = []
    if "base" in sample:
        answers.append(_answer(label["base"], sample.get("base"), sample.get(f"base_{metric}"), metric,
                               sample.get("base_reasoning")))
    answers.append(_answer(label["tuned"], sample.get("tuned"), sample.get(f"tuned_{metric}"), metric,
                           sample.get("tuned_reasoning")))
    return {"meta": " · ".join(str(m) for m in meta if m), "question": str(sample.get("question", "")),
            "reference": str(sample.get("reference", "")), "facts": ", ".join(map(str, sample.get("facts") or [])),
            "answers": answers}


def _rows(rows: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    if not rows.get("won_most") and not rows.get("lost_most"):
        return None
    label, metric = _labels(metrics), rows.get("metric")
    groups = [{"id": group_id, "title": title, "samples": [_sample(s, metric, label) for s in rows.get(key) or []]}
              for key, title, group_id in (("won_most", "Tuned won most", "won-most"),
                                           ("lost_most", "Tuned lost most", "lost-most"))]
    return {"metric": metric, "groups": groups}


def _human(human: dict[str, Any]) -> dict[str, Any]:
    systems = human.get("systems") or {}
    criteria = list(human.get("criteria") or sorted({c for scores in systems.values() for c in scores}))
    alpha = human.get("alpha") or {}

    def two_places(value: Any) -> str:
        return f"{value:.2f}" if is_number(value) else fmt("", value)

    return {
        "sizes": ", ".join(f"{human[k]} {k}" for k in ("raters", "items") if human.get(k) is not None),
        "criteria": criteria,
        "rows": [[name, *(two_places((scores or {}).get(c)) for c in criteria)] for name, scores in systems.items()],
        "alpha": [two_places(alpha.get(c)) for c in criteria] if alpha else None,
    }


def render_report_html(report: dict[str, Any]) -> str:
    """The report dict as one self-contained HTML page."""
    metrics = report["eval"]
    page = {
        "title": f"seektune report: {report['run']}",
        "header": _header(report),
        "recipe": _recipe_rows(report["recipe"]) if report.get("recipe") else None,
        "data": _data(report["data"]) if report.get("data") else None,
        "training": _training(report.get("training")),
        "update": _update(report["update"]) if report.get("update") else None,
        "metrics": _metrics(metrics),
        "rag": retrieval_table(metrics.get("rag")),
        "confusion": _confusion(metrics),
        "win_rates": _win_rates(metrics),
        "breakdowns": [b for b in (_breakdown(metrics, "by_category", "category", "by-category"),
                                   _breakdown(metrics, "by_language", "language", "by-language")) if b],
        "rows": _rows(report.get("rows") or {}, metrics),
        "human": _human(report["human"]) if report.get("human") else None,
    }
    present = {"recipe": page["recipe"], "data": page["data"], "loss-curve": True, "metrics": True, "rag": page["rag"],
               "confusion": page["confusion"],
               "win-rate": page["win_rates"], "rows": page["rows"], "human": page["human"],
               **{b["id"]: True for b in page["breakdowns"]}}
    page["nav"] = [(key, name) for key, name in SECTION_NAMES.items() if present.get(key)]
    return render("report.html.j2", **page)


# ---------------------------------------------------------------- several runs side by side


def run_summary(run_dir: str | Path | RunDir) -> dict[str, Any]:
    """One run's settings and its tuned model's scores, flat, for the comparison table."""
    run = RunDir(run_dir)
    metrics = _read_metrics(run)
    recipe = _read_recipe(run) or {}
    training = _read_json(run.train_summary) or {}
    method, train = recipe.get("method") or {}, recipe.get("train") or {}
    tuned = metrics.get("tuned") or {}
    row: dict[str, Any] = {
        "run": str(run),
        "method": method.get("name"),
        "r": method.get("r") if method.get("name") in RANKED_METHODS else None,
        "lr": train.get("lr"),
        "epochs": train.get("epochs"),
        "train_runtime_s": training.get("train_runtime_s"),
        "eval_loss": training.get("eval_loss"),
    }
    for key in COMPARE_METRICS:
        if key != "eval_loss":
            row[key] = tuned.get(key)
    return row


def best_runs(runs: list[dict[str, Any]], metrics: list[str]) -> dict[str, str]:
    """The run with the best value of each metric (lowest for losses and perplexity); first wins a tie."""
    best = {}
    for metric in metrics:
        scored = [(r[metric], r["run"]) for r in runs if is_number(r.get(metric))]
        if scored:
            pick = min if metric in LOWER_IS_BETTER else max
            best[metric] = pick(scored, key=lambda x: x[0])[1]
    return best


def compare_runs(run_dirs: list[Path], out: Path | None = None) -> dict[str, Any]:
    """Runs side by side: ``{"runs": [...], "metrics": [...], "best": {metric: run}}``.

    With ``out``, also writes the comparison as HTML there and as JSON next to it
    (``compare.html`` -> ``compare.json``). Every run needs ``eval/metrics.json``.
    """
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    runs = [run_summary(d) for d in run_dirs]
    metrics = [m for m in COMPARE_METRICS if any(r.get(m) is not None for r in runs)]
    result = {"runs": runs, "metrics": metrics, "best": best_runs(runs, metrics)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_compare_html(result), encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


SETTING_COLUMNS = ["method", "r", "lr", "epochs"]


def compare_table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of plain strings for the CLI table; ``result["best"]`` says which run is best per metric.

    BLEU and chrF are on their 0-100 scale, the other scores 0-1.
    """
    header = ["run"] + SETTING_COLUMNS + [COMPARE_NAMES.get(m, m) for m in result["metrics"]] + ["train s"]
    rows = []
    for run in result["runs"]:
        rows.append([run["run"]] + [fmt_setting(c, run.get(c)) for c in SETTING_COLUMNS]
                    + [fmt(m, run.get(m)) for m in result["metrics"]]
                    + [fmt("train_runtime_s", run.get("train_runtime_s"))])
    return header, rows


def render_compare_html(result: dict[str, Any]) -> str:
    """The comparison as one self-contained page: the table (best value per metric highlighted) and a chart."""
    header, rows = compare_table_rows(result)
    best = result.get("best") or {}
    first_metric = 1 + len(SETTING_COLUMNS)
    best_value = {m: next(r[m] for r in result["runs"] if r["run"] == run) for m, run in best.items()}
    cells = []
    for run, row in zip(result["runs"], rows):
        highlighted = {first_metric + j for j, metric in enumerate(result["metrics"])
                       if metric in best_value and run.get(metric) == best_value[metric]}  # every run on a tie
        cells.append([{"text": text, "best": j in highlighted} for j, text in enumerate(row)])
    return render("compare.html.j2", runs=len(result["runs"]), header=header, rows=cells,
                  chart=compare_chart_png(result))
