"""How the run report and the run comparison show numbers: metric names and order, number formats, charts.

The pages (``report.py``) decide what to show; this module decides how a value reads
(BLEU and chrF on 0-100, other scores 0-1, counts whole, a learning rate with its exponent)
and draws the figures: the loss curve, the comparison bars and the with/without-retrieval bars
as inline PNG, and the geometry of the win-rate bar that ``report.html.j2`` draws as SVG. The
retrieval table (``retrieval_table``) is formatted here too, beside its chart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from seektune.data.pages import png_data_uri, pyplot

# Order of the metric table; metrics not named here follow in alphabetical order.
METRIC_ORDER = [
    "n", "accuracy", "macro_f1", "auc_roc", "rougeL", "rouge1", "rouge2", "bleu", "chrf", "fact_accuracy",
    "exact_match", "term_coverage", "term_errors", "distinct_1", "distinct_2", "perplexity", "answer_words",
    "answer_chars",
    "win_rate", "judge_win_rate",
]
METRIC_NAMES = {
    "n": "rows", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "bleu": "BLEU (0-100)",
    "chrf": "chrF (0-100)", "fact_accuracy": "fact accuracy", "exact_match": "exact match",
    "term_coverage": "term coverage", "term_errors": "term errors (per 100 answers)",
    "distinct_1": "distinct-1", "distinct_2": "distinct-2",
    "perplexity": "perplexity on references", "answer_words": "answer words (mean)",
    "answer_chars": "answer chars (mean)", "win_rate": "win rate vs base", "judge_win_rate": "judge win rate",
    "eval_loss": "eval loss", "train_runtime_s": "train time (s)",
    "accuracy": "accuracy", "macro_f1": "macro-F1", "auc_roc": "AUC (one-vs-rest, macro)",
    "faithfulness": "faithfulness", "citation_accuracy": "citation accuracy", "citation_rate": "answers citing",
    "recall_at_k": "retrieval recall@k", "refusal_rate": "refusals out of scope",
    "refused_in_scope": "refusals in scope",
}
# the four-way table of `seektune eval --rag`: its columns, in order (evaluate/retrieval.py computes them)
RAG_COLUMNS = ["fact_accuracy", "rougeL", "faithfulness", "citation_accuracy", "recall_at_k", "refusal_rate",
               "refused_in_scope"]
HUNDRED_SCALE = {"bleu", "chrf"}
LOWER_IS_BETTER = {"perplexity", "eval_loss", "term_errors"}
NO_DIRECTION = {"n", "answer_words", "answer_chars", "distinct_1", "distinct_2"}  # a change is neither good nor bad
COMPARE_METRICS = ["rougeL", "bleu", "chrf", "fact_accuracy", "exact_match", "perplexity", "win_rate",
                   "judge_win_rate", "eval_loss"]
COMPARE_NAMES = {  # short headers: the comparison table is wide
    "rougeL": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF", "fact_accuracy": "facts", "exact_match": "exact",
    "perplexity": "ppl", "win_rate": "win rate", "judge_win_rate": "judge win", "eval_loss": "eval loss",
}
CHART_METRICS = ["rougeL", "bleu", "chrf", "fact_accuracy", "exact_match", "win_rate"]
REPORT_DPI = 110


# ---------------------------------------------------------------- numbers as text


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(metric: str, value: Any) -> str:
    """A metric value as text: BLEU/chrF are 0-100, most others 0-1, counts whole."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or metric == "n":
        return f"{int(value):,}"
    if metric in HUNDRED_SCALE or metric in {"answer_words", "answer_chars", "train_runtime_s"}:
        return f"{value:.1f}"
    if "loss" in metric:
        return f"{value:.4g}"
    if metric == "perplexity" or abs(value) >= 10:
        return f"{value:.2f}" if abs(value) < 1e4 else f"{value:.3g}"
    if metric == "lr" or (value != 0 and abs(value) < 1e-3):
        return f"{value:.2g}"
    return f"{value:.3f}"


def fmt_setting(key: str, value: Any) -> str:
    """A recipe setting as text: 6.0 epochs reads 6, a learning rate keeps its exponent."""
    if value is None:
        return "–"
    if key == "lr" and is_number(value):
        return f"{value:.2g}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fmt_interval(metric: str, interval: Any) -> str | None:
    """A bootstrap interval ``[low, high]`` as text, or None when there is none."""
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(is_number(v) for v in interval):
        return f"[{fmt(metric, interval[0])}, {fmt(metric, interval[1])}]"
    return None


def fmt_delta(metric: str, delta: float) -> str:
    return ("+" if delta > 0 else "") + fmt(metric, delta)


def delta_class(metric: str, delta: float) -> str:
    """The CSS class of a change: ``good``, ``bad``, or "" where a change has no direction."""
    if metric in NO_DIRECTION or delta == 0:
        return ""
    better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
    return "good" if better else "bad"


# ---------------------------------------------------------------- charts


def _finish(plt, fig, axis) -> str:
    """Drop the top and right frame lines, render the figure as an inline PNG and free it."""
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    src = png_data_uri(fig, REPORT_DPI)
    plt.close(fig)
    return src


def loss_curve_png(log_history: list[dict[str, Any]]) -> str | None:
    """Train and eval loss against step as an inline PNG, or None when the log has neither."""
    train = [(e["step"], e["loss"]) for e in log_history if is_number(e.get("loss")) and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if is_number(e.get("eval_loss")) and "step" in e]
    if not train and not evals:
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7.5, 3.2))
    if train:
        axis.plot(*zip(*train), label="train loss", color="#3566b8", linewidth=1.6)
    if evals:
        axis.plot(*zip(*evals), label="eval loss", color="#d9822b", marker="o", linewidth=1.6)
    boundaries: dict[str, int] = {}  # a multi-stage run: where each stage's steps begin
    for entry in log_history:
        if "stage" in entry and "step" in entry and entry["stage"] not in boundaries:
            boundaries[entry["stage"]] = entry["step"]
    if len(boundaries) > 1:
        for name, step in boundaries.items():
            axis.axvline(step, color="#888888", linewidth=0.8, linestyle=":")
            axis.annotate(name, (step, 1), xycoords=("data", "axes fraction"), fontsize=8, color="#555555",
                          xytext=(3, -10), textcoords="offset points")
    values = [v for _, v in train + evals]
    if min(values) > 0 and max(values) / min(values) > 30:  # a loss falling 100x reads better on a log axis
        axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend(frameon=False)
    return _finish(plt, fig, axis)


def win_rate_chart(summary: dict[str, Any], width: int = 640) -> dict[str, Any]:
    """Where ``report.html.j2`` draws stacked wins / ties / losses on a 0-1 axis, the win rate, its CI and the bar.

    Ties count half, so the win-rate dot lands in the middle of the grey (ties) segment.
    Coordinates are text with one decimal, as the SVG carries them.
    """
    n = summary.get("n") or 0
    pad, top, height = 10, 22, 26  # room above the bar for the label of the pass line
    scale = width - 2 * pad
    mid = top + height / 2

    def at(share: float) -> str:
        return f"{pad + share * scale:.1f}"

    chart: dict[str, Any] = {"width": width, "height": top + height + 26, "top": top, "bar_height": height,
                             "mid": mid, "segments": [], "pass_line": None, "ci": None, "dot": None}
    x = pad
    for key, color in (("wins", "#3a9d5d"), ("ties", "#b8b8b8"), ("losses", "#d05353")):
        share = (summary.get(key) or 0) / n if n else 0
        if share:
            chart["segments"].append({"x": f"{x:.1f}", "width": f"{share * scale:.1f}", "color": color,
                                      "title": f"{key}: {summary.get(key)}"})
        x += share * scale
    bar = summary.get("bar")
    if is_number(bar):
        chart["pass_line"] = {"x": at(bar), "y1": top - 6, "y2": top + height + 6, "label_y": top - 9,
                              "label": f"bar {fmt('bar', bar)}"}
    low, high, rate = summary.get("ci_low"), summary.get("ci_high"), summary.get("win_rate")
    if is_number(low) and is_number(high):
        chart["ci"] = {"x1": at(low), "x2": at(high), "edges": [at(low), at(high)]}
    if is_number(rate):
        chart["dot"] = at(rate)
    chart["ticks"] = [{"x": at(tick), "y": top + height + 20, "label": f"{tick:g}"} for tick in (0, 0.5, 1)]
    return chart


def retrieval_chart_png(section: dict[str, Any]) -> str | None:
    """Fact accuracy of each model without and with retrieval, as grouped bars with their bootstrap 95%
    intervals as whiskers; None when no system has a fact accuracy (rows without ``facts``)."""
    scores, ci = section.get("scores") or {}, section.get("ci") or {}
    models = [name for name in section.get("order") or [] if not name.endswith("+rag")]
    if not any(is_number((scores.get(n) or {}).get("fact_accuracy")) for m in models for n in (m, m + "+rag")):
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(max(4.5, 2.4 * len(models) + 1.5), 3.2))
    width = 0.38
    for offset, (suffix, label, color) in enumerate((("", "without retrieval", "#9aa7b8"),
                                                     ("+rag", f"with retrieval (k={section.get('k')})", "#3566b8"))):
        names = [m + suffix for m in models]
        values = [(scores.get(n) or {}).get("fact_accuracy") for n in names]
        positions = [j + (offset - 0.5) * width for j in range(len(models))]
        heights = [v if is_number(v) else 0.0 for v in values]
        errors = [[0.0] * len(names), [0.0] * len(names)]
        for j, (name, value) in enumerate(zip(names, values)):
            low_high = (ci.get(name) or {}).get("fact_accuracy")
            if is_number(value) and isinstance(low_high, list) and len(low_high) == 2:
                errors[0][j], errors[1][j] = max(0.0, value - low_high[0]), max(0.0, low_high[1] - value)
        axis.bar(positions, heights, width=width * 0.95, label=label, color=color, yerr=errors, capsize=4,
                 error_kw={"elinewidth": 1.2, "ecolor": "#222222"})
        for x, height, above, value in zip(positions, heights, errors[1], values):  # the value above its whisker
            axis.annotate(fmt("fact_accuracy", value), (x, min(height + above, 1.0)), xytext=(0, 3),
                          textcoords="offset points", ha="center", va="bottom", fontsize=8, color="#333333")
    axis.set_xticks(range(len(models)))
    axis.set_xticklabels(models)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("fact accuracy")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(plt, fig, axis)


def retrieval_table(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """What report.html.j2 shows of `seektune eval --rag` (``metrics["rag"]``): the four systems (each model without
    and with retrieval) in one table, each cell with its bootstrap interval and, where a score is not over every
    row, the rows it is over; and the fact-accuracy chart. None for an eval without retrieval."""
    if not isinstance(section, dict) or not section.get("order"):
        return None
    scores, ci, labels = section.get("scores") or {}, section.get("ci") or {}, section.get("systems") or {}
    counts = {"faithfulness": "faithfulness_n", "citation_accuracy": "citation_n", "recall_at_k": "recall_n",
              "refusal_rate": "refusal_n"}
    columns = [c for c in RAG_COLUMNS if c != "refusal_rate" or section.get("out_of_scope")]
    rows = []
    for name in section["order"]:
        part = scores.get(name) or {}
        cells = []
        for column in columns:
            n = part.get(counts[column]) if column in counts else None
            note = f"n={n}" if is_number(n) and n != part.get("n") and column != "refusal_rate" else None
            cells.append({"text": fmt(column, part.get(column)), "note": note,
                          "ci": fmt_interval(column, (ci.get(name) or {}).get(column))})
        rows.append({"name": name, "label": labels.get(name, name), "n": fmt("n", part.get("n")), "cells": cells})
    header = [METRIC_NAMES.get(c, c).replace("recall@k", f"recall@{section.get('k')}") for c in columns]
    index = section.get("index") or {}
    scope = section.get("out_of_scope") or {}
    return {"k": section.get("k"), "index": index.get("path"), "chunks": index.get("chunks"),
            "documents": index.get("documents"), "header": header, "rows": rows,
            "out_of_scope": {"n": scope.get("n"), "file": scope.get("file")} if scope else None,
            "chart": retrieval_chart_png(section)}


def compare_chart_png(result: dict[str, Any]) -> str | None:
    """Grouped bars: one group per metric, one bar per run; BLEU and chrF divided by 100 to share the axis."""
    metrics = [m for m in CHART_METRICS if m in result["metrics"]]
    if not metrics:
        return None
    plt = pyplot()
    runs = result["runs"]
    fig, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics) * max(1, len(runs)) ** 0.5 + 2), 3.4))
    width = 0.8 / len(runs)
    names = [Path(run["run"]).name or run["run"] for run in runs]
    labels = names if len(set(names)) == len(names) else [run["run"] for run in runs]
    for i, run in enumerate(runs):
        values = [(run.get(m) or 0) / (100 if m in HUNDRED_SCALE else 1) for m in metrics]
        positions = [j - 0.4 + width * (i + 0.5) for j in range(len(metrics))]
        axis.bar(positions, values, width=width * 0.95, label=labels[i])
    axis.set_xticks(range(len(metrics)))
    axis.set_xticklabels([METRIC_NAMES.get(m, m).replace(" (0-100)", " / 100") for m in metrics])
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(plt, fig, axis)
