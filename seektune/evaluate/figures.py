"""How the run report and the run comparison show numbers: metric names and order, number formats, charts.

The pages (``report.py``) decide what to show; this module decides how a value reads
(BLEU and chrF on 0-100, other scores 0-1, counts whole, a learning rate with its exponent)
and draws the figures: the loss curve and the comparison bars as inline PNG, and the
geometry of the win-rate bar that ``report.html.j2`` draws as SVG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from seektune.data.pages import png_data_uri, pyplot

# Order of the metric table; metrics not named here follow in alphabetical order.
METRIC_ORDER = [
    "n", "accuracy", "macro_f1", "auc_roc", "rougeL", "rouge1", "rouge2", "bleu", "chrf", "fact_accuracy", "exact_match", "term_coverage",
    "distinct_1", "distinct_2", "perplexity", "answer_words", "answer_chars", "win_rate", "judge_win_rate",
]
METRIC_NAMES = {
    "n": "rows", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "bleu": "BLEU (0-100)",
    "chrf": "chrF (0-100)", "fact_accuracy": "fact accuracy", "exact_match": "exact match",
    "term_coverage": "term coverage", "distinct_1": "distinct-1", "distinct_2": "distinct-2",
    "perplexity": "perplexity on references", "answer_words": "answer words (mean)",
    "answer_chars": "answer chars (mean)", "win_rate": "win rate vs base", "judge_win_rate": "judge win rate",
    "eval_loss": "eval loss", "train_runtime_s": "train time (s)",
    "accuracy": "accuracy", "macro_f1": "macro-F1", "auc_roc": "AUC (one-vs-rest, macro)",
}
HUNDRED_SCALE = {"bleu", "chrf"}
LOWER_IS_BETTER = {"perplexity", "eval_loss"}
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
