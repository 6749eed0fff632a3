"""The run report (``report.html`` + ``report.json``) and the comparison of several runs.

    seektune eval runs/customer-service          # writes runs/customer-service/report.html after scoring
    seektune compare runs/r8 runs/r16            # a table and a chart of the runs side by side

The report only gathers what the stages already wrote (recipe, data card, train.json,
eval/metrics.json, eval/samples.jsonl, human_eval/results.json): report.json holds their
numbers unchanged, and the only choice it makes is which answer rows to show. The HTML is
one file with no external resource (plots are inline PNG, styles inline, no JavaScript),
so it opens the same offline, attached to an e-mail or copied off a training box. Every
string from a data file is HTML-escaped: answers are model output and may hold markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from seektune.data.io import read_jsonl

REPORT_HTML, REPORT_JSON = "report.html", "report.json"
RANKED_METHODS = {"lora", "dora", "qlora"}  # the methods for which rank r and alpha mean something

# Order of the metric table; metrics not named here follow in alphabetical order.
METRIC_ORDER = [
    "n", "rougeL", "rouge1", "rouge2", "bleu", "chrf", "fact_accuracy", "exact_match", "term_coverage",
    "distinct_1", "distinct_2", "perplexity", "answer_words", "answer_chars", "win_rate", "judge_win_rate",
]
METRIC_NAMES = {
    "n": "rows", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "bleu": "BLEU (0-100)",
    "chrf": "chrF (0-100)", "fact_accuracy": "fact accuracy", "exact_match": "exact match",
    "term_coverage": "term coverage", "distinct_1": "distinct-1", "distinct_2": "distinct-2",
    "perplexity": "perplexity on references", "answer_words": "answer words (mean)",
    "answer_chars": "answer chars (mean)", "win_rate": "win rate vs base", "judge_win_rate": "judge win rate",
    "eval_loss": "eval loss", "train_runtime_s": "train time (s)",
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


# ---------------------------------------------------------------- reading a run directory


def _read_json(path: Path) -> Any | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def _read_recipe(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "recipe.resolved.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    metrics = _read_json(run_dir / "eval" / "metrics.json")
    if metrics is None:
        raise FileNotFoundError(f"{run_dir} has no eval/metrics.json; run `seektune eval {run_dir}` first")
    return metrics


def recipe_summary(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a reader of the report needs to know what was trained, and how."""
    method, train = recipe.get("method") or {}, recipe.get("train") or {}
    summary: dict[str, Any] = {
        "model": (recipe.get("model") or {}).get("name"),
        "task": recipe.get("task"),
        "method": method.get("name"),
    }
    if method.get("name") in RANKED_METHODS:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def row_delta(sample: dict[str, Any], metric: str) -> float | None:
    """Tuned minus base on one row, or None when either score is missing (a row without facts)."""
    base, tuned = sample.get(f"base_{metric}"), sample.get(f"tuned_{metric}")
    return tuned - base if _is_number(base) and _is_number(tuned) else None


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


def build_report(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, as one dict (the content of ``report.json``).

    Only ``eval/metrics.json`` is required; a missing recipe, data card, train.json,
    samples or human evaluation leaves its key out.
    """
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    report: dict[str, Any] = {"run": str(run_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    recipe = _read_recipe(run_dir)
    if recipe is not None:
        report["recipe"] = recipe_summary(recipe)
    card = _read_json(run_dir / "data" / "card.json")
    if card is not None:
        report["data"] = data_summary(card)
    training = _read_json(run_dir / "train.json")
    if training is not None:
        report["training"] = training
    report["eval"] = metrics
    samples = _read_jsonl(run_dir / "eval" / "samples.jsonl")
    report["rows"] = won_and_lost(samples, _row_metric(metrics, samples))
    human = _read_json(run_dir / "human_eval" / "results.json")
    if human is not None:
        report["human"] = human
    update = _read_json(run_dir / "update.json")
    if update is not None and "new" in update:
        report["update"] = update
    return report


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write ``<run>/report.html`` and ``<run>/report.json``; returns their paths."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    html_path, json_path = run_dir / REPORT_HTML, run_dir / REPORT_JSON
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    html_path.write_text(render_report_html(report), encoding="utf-8")
    return html_path, json_path


# ---------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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
    if key == "lr" and _is_number(value):
        return f"{value:.2g}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fmt_delta(metric: str, delta: float) -> str:
    return ("+" if delta > 0 else "") + fmt(metric, delta)


def _delta_class(metric: str, delta: float) -> str:
    if metric in NO_DIRECTION or delta == 0:
        return ""
    better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
    return "good" if better else "bad"


def _table(headers: list[str] | str | None, rows: list[list[str]], *, table_id: str = "", css: str = "") -> str:
    """Headers and cells are HTML already: callers escape what comes from data files.

    ``headers`` is a list of header cells, ready-made ``<tr>`` rows as one string, or None.
    """
    if isinstance(headers, list):
        headers = "<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"
    head = f"<thead>{headers}</thead>" if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{css}"' if css else "")
    return f"<table{attrs}>{head}<tbody>{body}</tbody></table>"


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training boxes; also keeps tests headless
    import matplotlib.pyplot as plt

    return plt


def _labels(metrics: dict[str, Any]) -> dict[str, str]:
    systems = metrics.get("systems") or {}
    return {name: str(systems.get(name) or name) for name in ("base", "tuned")}


# ---------------------------------------------------------------- report sections


def _finish(plt, fig, axis) -> str:
    """Drop the top and right frame lines, render the figure as an inline PNG and free it."""
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    src = _png(fig)
    plt.close(fig)
    return src


def loss_curve_png(log_history: list[dict[str, Any]]) -> str | None:
    """Train and eval loss against step as an inline PNG, or None when the log has neither."""
    train = [(e["step"], e["loss"]) for e in log_history if _is_number(e.get("loss")) and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if _is_number(e.get("eval_loss")) and "step" in e]
    if not train and not evals:
        return None
    plt = _pyplot()
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


def _header(report: dict[str, Any]) -> str:
    recipe, metrics = report.get("recipe") or {}, report["eval"]
    facts = [("run", report["run"]), ("created", report["created"])]
    if recipe.get("model"):
        facts.append(("model", recipe["model"]))
    if recipe.get("method"):
        facts.append(("method", _method_text(recipe)))
    facts.append(("split", metrics.get("split", "test")))
    items = "".join(f"<div><span class='k'>{esc(k)}</span> {esc(v)}</div>" for k, v in facts)
    headline = ""
    ab = metrics.get("ab")
    if ab:
        label = _labels(metrics)
        headline = (f"<p class='headline'>{_badge(ab)} {esc(label['tuned'])} beat {esc(label['base'])} on "
                    f"{esc(ab.get('wins'))} of {esc(ab.get('n'))} rows by {esc(ab.get('metric'))} "
                    f"(win rate {fmt('win_rate', ab.get('win_rate'))}, bar {fmt('bar', ab.get('bar'))}).</p>")
    return f"<header id='summary'><h1>Run report</h1><div class='facts'>{items}</div>{headline}</header>"


def _nav(sections: list[str]) -> str:
    """In-page links to the sections present (ids only: the page stays self-contained)."""
    names = {"recipe": "recipe", "data": "data", "loss-curve": "training", "metrics": "metrics",
             "win-rate": "win rate", "by-category": "by category", "by-language": "by language",
             "rows": "rows", "human": "human eval"}
    present = [key for key in names if any(f"<section id='{key}'>" in part for part in sections)]
    return "<nav>" + "".join(f"<a href='#{key}'>{names[key]}</a>" for key in present) + "</nav>"


def _method_text(recipe: dict[str, Any]) -> str:
    text = str(recipe.get("method"))
    if recipe.get("r") is not None:
        text += f" (r {fmt_setting('r', recipe['r'])}, alpha {fmt_setting('alpha', recipe.get('alpha'))})"
    return text


def _recipe_section(recipe: dict[str, Any]) -> str:
    # max_steps -1 means "the epochs decide": nothing to show
    shown = {k: v for k, v in recipe.items() if v is not None and not (k == "max_steps" and v == -1)}
    rows = [[esc(key.replace("_", " ")), esc(fmt_setting(key, value))] for key, value in shown.items()]
    return f"<section id='recipe'><h2>Recipe</h2>{_table(None, rows, css='kv')}</section>"


def _data_section(data: dict[str, Any]) -> str:
    parts = ["<section id='data'><h2>Data</h2>"]
    acc = data.get("accounting") or {}
    if acc:
        parts.append(f"<p>read {esc(acc.get('read', '–'))} rows, added {esc(acc.get('added', 0))}, "
                     f"kept {esc(acc.get('kept', '–'))}, rejected {esc(acc.get('rejected', '–'))}.</p>")
    splits = data.get("splits") or {}
    if splits:
        parts.append(_table(["split", "rows"], [[esc(k), esc(fmt("n", v))] for k, v in splits.items()], css="num"))
    reasons = sorted((data.get("rejected_by_reason") or {}).items(), key=lambda kv: -kv[1])
    if reasons:
        parts.append("<h3>Top reject reasons</h3>" + _table(
            ["reason", "rows"], [[esc(k), esc(v)] for k, v in reasons[:8]], css="num"))
        if len(reasons) > 8:
            parts.append(f"<p class='muted'>{len(reasons) - 8} more reasons in data/card.json.</p>")
    else:
        parts.append("<p class='muted'>No rows were rejected.</p>")
    parts.append("</section>")
    return "".join(parts)


def _training_section(training: dict[str, Any] | None) -> str:
    parts = ["<section id='loss-curve'><h2>Training</h2>"]
    src = loss_curve_png((training or {}).get("log_history") or [])
    if src:
        parts.append(f"<img id='loss-curve-img' alt='train and eval loss against step' src='{src}'>")
    else:
        parts.append("<p class='muted'>no training log</p>")
    if training:
        rows = []
        trainable, total = training.get("trainable_parameters"), training.get("total_parameters")
        if _is_number(trainable) and _is_number(total) and total:
            rows.append(["parameters trained", f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"])
        for key in ("method", "train_rows", "train_tokens", "steps", "train_runtime_s", "first_loss", "last_loss",
                    "eval_loss", "best_checkpoint"):
            if training.get(key) is not None:
                rows.append([METRIC_NAMES.get(key, key.replace("_", " ")), fmt(key, training[key])])
        distill = training.get("distill") or {}
        if distill:
            rows.append(["teacher", f"{distill.get('teacher')} ({distill.get('mode')} distillation)"])
            if _is_number(distill.get("val_kl_before")) and _is_number(distill.get("val_kl_after")):
                rows.append(["KL to the teacher (val, per answer token)",
                             f"{distill['val_kl_before']:.3f} → {distill['val_kl_after']:.3f}"])
        preference = training.get("preference") or {}
        if _is_number(preference.get("first_reward_margin")) and _is_number(preference.get("last_reward_margin")):
            rows.append([f"{training.get('objective')} reward margin",
                         f"{preference['first_reward_margin']:.3f} → {preference['last_reward_margin']:.3f}"])
        parts.append(_table(None, [[esc(a), esc(b)] for a, b in rows], css="kv"))
    stages = (training or {}).get("stages") or []
    if stages:
        keys = ("objective", "method", "carry", "train_rows", "steps", "first_loss", "last_loss", "eval_loss")
        head = ["stage", *(k.replace("_", " ") for k in keys)]
        body = [[esc(stage.get("stage")), *(esc(fmt(k, stage[k])) if stage.get(k) is not None else "-" for k in keys)]
                for stage in stages]
        parts.append("<h3>Stages</h3>" + _table(head, body))
    parts.append("</section>")
    return "".join(parts)


def _metric_keys(metrics: dict[str, Any], systems: list[str]) -> list[str]:
    keys = {k for s in systems for k, v in metrics[s].items() if v is None or _is_number(v)}
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


def _ci_html(metric: str, interval: Any) -> str:
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_is_number(v) for v in interval):
        return f"<div class='ci'>[{esc(fmt(metric, interval[0]))}, {esc(fmt(metric, interval[1]))}]</div>"
    return ""


def _system_header(name: str, label: str) -> str:
    return esc(name) + (f"<div class='label'>{esc(label)}</div>" if label != name else "")


def _metrics_section(metrics: dict[str, Any]) -> str:
    systems = [s for s in ("base", "tuned") if isinstance(metrics.get(s), dict)]
    label, ci = _labels(metrics), metrics.get("ci") or {}
    both = len(systems) == 2
    headers = ["metric"] + [_system_header(s, label[s]) for s in systems] + (["Δ tuned − base"] if both else [])
    rows = []
    for key in _metric_keys(metrics, systems):
        row = [esc(METRIC_NAMES.get(key, key))]
        row += [esc(fmt(key, metrics[s].get(key))) + _ci_html(key, (ci.get(s) or {}).get(key)) for s in systems]
        if both:
            base, tuned = metrics["base"].get(key), metrics["tuned"].get(key)
            if _is_number(base) and _is_number(tuned) and key != "n":
                delta = tuned - base
                row.append(f"<span class='{_delta_class(key, delta)}'>{esc(fmt_delta(key, delta))}</span>"
                           + _ci_html(key, (ci.get("delta") or {}).get(key)))
            else:
                row.append("")
        rows.append(row)
    thinking = {s: metrics[s].get("reasoning") for s in systems}  # R1-style models: how much they thought
    if any(thinking.values()):
        rows.append(["reasoning (rows, mean words)"]
                    + [esc(f"{t.get('rows')} rows, {fmt('answer_words', t.get('mean_words'))} words") if t else "–"
                       for t in thinking.values()] + ([""] if both else []))
    note = "<p class='muted'>Small grey brackets: bootstrap 95% interval.</p>" if ci else ""
    return (f"<section id='metrics'><h2>Metrics on the {esc(metrics.get('split', 'test'))} split</h2>"
            f"{_table(headers, rows, table_id='metrics-table', css='num')}{note}</section>")


def _badge(summary: dict[str, Any]) -> str:
    if summary.get("passed") is None:
        return ""
    return "<span class='badge pass'>PASS</span>" if summary["passed"] else "<span class='badge fail'>FAIL</span>"


def win_rate_svg(summary: dict[str, Any], width: int = 640) -> str:
    """Stacked wins / ties / losses on a 0-1 axis, with the win rate, its CI and the bar drawn over it.

    Ties count half, so the win-rate dot lands in the middle of the grey (ties) segment.
    """
    n = summary.get("n") or 0
    pad, top, height = 10, 22, 26  # room above the bar for the label of the pass line
    scale = width - 2 * pad
    parts = [f"<svg width='{width}' height='{top + height + 26}' role='img' aria-label='win rate'>"]
    x = pad
    for key, color in (("wins", "#3a9d5d"), ("ties", "#b8b8b8"), ("losses", "#d05353")):
        share = (summary.get(key) or 0) / n if n else 0
        if share:
            parts.append(f"<rect x='{x:.1f}' y='{top}' width='{share * scale:.1f}' height='{height}' fill='{color}'>"
                         f"<title>{esc(key)}: {esc(summary.get(key))}</title></rect>")
        x += share * scale
    bar = summary.get("bar")
    if _is_number(bar):
        bx = pad + bar * scale
        parts.append(f"<line x1='{bx:.1f}' x2='{bx:.1f}' y1='{top - 6}' y2='{top + height + 6}' stroke='#222' "
                     f"stroke-width='2' stroke-dasharray='4 3'/>"
                     f"<text x='{bx:.1f}' y='{top - 9}' text-anchor='middle' font-size='11'>bar "
                     f"{esc(fmt('bar', bar))}</text>")
    low, high, rate = summary.get("ci_low"), summary.get("ci_high"), summary.get("win_rate")
    mid = top + height / 2
    if _is_number(low) and _is_number(high):
        parts.append(f"<line x1='{pad + low * scale:.1f}' x2='{pad + high * scale:.1f}' y1='{mid}' y2='{mid}' "
                     f"stroke='#111' stroke-width='2'/>")
        for edge in (low, high):
            parts.append(f"<line x1='{pad + edge * scale:.1f}' x2='{pad + edge * scale:.1f}' y1='{mid - 5}' "
                         f"y2='{mid + 5}' stroke='#111' stroke-width='2'/>")
    if _is_number(rate):
        parts.append(f"<circle cx='{pad + rate * scale:.1f}' cy='{mid}' r='5' fill='#fff' stroke='#111' "
                     f"stroke-width='2'/>")
    for tick in (0, 0.5, 1):
        parts.append(f"<text x='{pad + tick * scale:.1f}' y='{top + height + 20}' text-anchor='middle' "
                     f"font-size='11' fill='#777'>{tick:g}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _win_rate_block(title: str, summary: dict[str, Any]) -> str:
    ci = ""
    if _is_number(summary.get("ci_low")) and _is_number(summary.get("ci_high")):
        ci = f", 95% CI [{fmt('win_rate', summary['ci_low'])}, {fmt('win_rate', summary['ci_high'])}]"
    p = f", sign test p = {summary['p_value']:.2g}" if _is_number(summary.get("p_value")) else ""
    errors = f", {summary['errors']} judge errors left out" if summary.get("errors") else ""
    return (f"<div class='winrate'><h3>{esc(title)} {_badge(summary)}</h3>"
            f"<p><b>win rate {esc(fmt('win_rate', summary.get('win_rate')))}</b>{esc(ci)}{esc(p)} — "
            f"<span class='sw w'></span>wins {esc(summary.get('wins'))}, <span class='sw t'></span>"
            f"ties {esc(summary.get('ties'))}, <span class='sw l'></span>losses {esc(summary.get('losses'))} "
            f"of {esc(summary.get('n'))}{esc(errors)}; ties count half.</p>{win_rate_svg(summary)}</div>")


def _win_rate_section(metrics: dict[str, Any]) -> str:
    blocks = []
    if metrics.get("ab"):
        blocks.append(_win_rate_block(f"Tuned vs base by per-row {metrics['ab'].get('metric')}", metrics["ab"]))
    if metrics.get("judge"):
        blocks.append(_win_rate_block(f"Tuned vs base by {metrics['judge'].get('metric', 'judge')}",
                                      metrics["judge"]))
    if not blocks:
        return ""
    return f"<section id='win-rate'><h2>Win rate</h2>{''.join(blocks)}</section>"


def _breakdown_section(metrics: dict[str, Any], key: str, title: str, section_id: str) -> str:
    """One row per category (or language): the main metrics of both systems, and the A/B win rate."""
    systems = [s for s in ("base", "tuned") if isinstance((metrics.get(s) or {}).get(key), dict)]
    if not systems:
        return ""
    ab_parts = (metrics.get("ab") or {}).get(key) or {}
    names = sorted({name for s in systems for name in metrics[s][key]} | set(ab_parts))
    columns = ["rougeL", "bleu", "fact_accuracy"]
    # Two header rows: each metric spans one column per system.
    span = len(systems)
    top = [f"<th rowspan='2'>{esc(title)}</th><th rowspan='2'>rows</th>"]
    top += [f"<th colspan='{span}' class='group'>{esc(METRIC_NAMES[c].split(' (')[0])}</th>" for c in columns]
    if ab_parts:
        top.append(f"<th colspan='2' class='group'>tuned vs base ({esc(metrics['ab'].get('metric'))})</th>")
    sub = [f"<th>{esc(s)}</th>" for _ in columns for s in systems]
    if ab_parts:
        sub += ["<th>wins / ties / losses</th>", "<th>win rate</th>"]
    headers = f"<tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr>"
    rows = []
    for name in names:
        parts = {s: metrics[s][key].get(name) or {} for s in systems}
        n = next((parts[s].get("n") for s in reversed(systems) if parts[s].get("n") is not None), None)
        row = [esc(name), esc(fmt("n", n))]
        for column in columns:
            for s in systems:
                value = parts[s].get(column)
                best = len(systems) == 2 and _is_number(value) and all(
                    _is_number(parts[o].get(column)) and value > parts[o].get(column) for o in systems if o != s)
                row.append(f"<b>{esc(fmt(column, value))}</b>" if best else esc(fmt(column, value)))
        if ab_parts:
            part = ab_parts.get(name) or {}
            row += [esc(f"{part.get('wins', '–')} / {part.get('ties', '–')} / {part.get('losses', '–')}"),
                    esc(fmt("win_rate", part.get("win_rate")))]
        rows.append(row)
    note = "<p class='muted'>Bold: the better of the two systems.</p>" if len(systems) == 2 else ""
    return (f"<section id='{section_id}'><h2>By {esc(title)}</h2>"
            f"{_table(headers, rows, css='num')}{note}</section>")


def _answer_block(title: str, text: Any, score: Any, metric: str | None, reasoning: Any = None) -> str:
    score_text = f"<span class='score'>{esc(metric)} {esc(fmt(metric or '', score))}</span>" if metric else ""
    thought = (f"<details><summary>reasoning</summary><pre>{esc(reasoning)}</pre></details>"
               if reasoning else "")
    return (f"<div class='answer'><div class='who'>{esc(title)} {score_text}</div>"
            f"<pre>{esc('' if text is None else text)}</pre>{thought}</div>")


def _sample_card(sample: dict[str, Any], metric: str | None, label: dict[str, str]) -> str:
    meta = [sample.get("origin"), sample.get("category")]
    if sample.get("judge"):
        meta.append(f"judge: {sample['judge']}")
    delta = row_delta(sample, metric) if metric else None
    if delta is not None:
        meta.append(f"Δ {metric} {fmt_delta(metric, delta)}")
    facts = sample.get("facts") or []
    facts_html = f"<div class='facts-list'>key facts: {esc(', '.join(map(str, facts)))}</div>" if facts else ""
    answers = ""
    if "base" in sample:
        answers += _answer_block(label["base"], sample.get("base"), sample.get(f"base_{metric}"), metric,
                                 sample.get("base_reasoning"))
    answers += _answer_block(label["tuned"], sample.get("tuned"), sample.get(f"tuned_{metric}"), metric,
                             sample.get("tuned_reasoning"))
    return (f"<div class='sample'><div class='meta'>{esc(' · '.join(str(m) for m in meta if m))}</div>"
            f"<div class='qa'><span class='k'>question</span><pre>{esc(sample.get('question', ''))}</pre>"
            f"<span class='k'>reference</span><div><pre>{esc(sample.get('reference', ''))}</pre>{facts_html}</div>"
            f"</div><div class='pair'>{answers}</div></div>")


def _rows_section(rows: dict[str, Any], metrics: dict[str, Any]) -> str:
    if not rows.get("won_most") and not rows.get("lost_most"):
        return ""
    label, metric = _labels(metrics), rows.get("metric")
    parts = [f"<section id='rows'><h2>Rows where tuned changed most (by {esc(metric)})</h2>"]
    for key, title, section_id in (("won_most", "Tuned won most", "won-most"),
                                   ("lost_most", "Tuned lost most", "lost-most")):
        samples = rows.get(key) or []
        parts.append(f"<h3 id='{section_id}'>{title}</h3>")
        parts.append("".join(_sample_card(s, metric, label) for s in samples)
                     or "<p class='muted'>none</p>")
    parts.append("</section>")
    return "".join(parts)


def _human_section(human: dict[str, Any]) -> str:
    systems = human.get("systems") or {}
    criteria = list(human.get("criteria") or sorted({c for scores in systems.values() for c in scores}))
    alpha = human.get("alpha") or {}
    def two_places(value: Any) -> str:
        return f"{value:.2f}" if _is_number(value) else esc(fmt("", value))

    rows = [[esc(name)] + [two_places((scores or {}).get(c)) for c in criteria] for name, scores in systems.items()]
    if alpha:
        rows.append(["<i>Krippendorff's alpha</i>"] + [two_places(alpha.get(c)) for c in criteria])
    sizes = ", ".join(f"{esc(human[k])} {k}" for k in ("raters", "items") if human.get(k) is not None)
    return (f"<section id='human'><h2>Human evaluation</h2>"
            f"{f'<p>{sizes}.</p>' if sizes else ''}{_table(['system'] + [esc(c) for c in criteria], rows, css='num')}"
            f"</section>")


STYLE = """
:root{--fg:#1f2328;--muted:#6a737d;--line:#d8dee4;--bg2:#f6f8fa;--good:#1a7f37;--bad:#c62828}
*{box-sizing:border-box}
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,"Noto Sans CJK SC","PingFang SC",
 "Microsoft YaHei",sans-serif;color:var(--fg);
 max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 6px}h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;
 border-bottom:1px solid var(--line)}h3{font-size:16px;margin:18px 0 6px}
header .facts{display:flex;flex-wrap:wrap;gap:4px 22px;color:var(--fg)}
.k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em;margin-right:4px}
.headline{font-size:17px;background:var(--bg2);border:1px solid var(--line);border-radius:6px;padding:8px 12px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:5px 12px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600}
th.group{text-align:center!important;border-bottom:1px solid var(--line)}
table.num td:not(:first-child),table.num th:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{color:var(--muted)}
.ci,.label{color:var(--muted);font-size:11px;font-weight:400}
.good{color:var(--good);font-weight:600}.bad{color:var(--bad);font-weight:600}
.muted{color:var(--muted)}
.badge{display:inline-block;font-size:12px;font-weight:700;padding:1px 8px;border-radius:10px;color:#fff;
 vertical-align:middle}
.badge.pass{background:var(--good)}.badge.fail{background:var(--bad)}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 3px 0 6px}
.sw.w{background:#3a9d5d}.sw.t{background:#b8b8b8}.sw.l{background:#d05353}
img{max-width:100%;height:auto}
.sample{border:1px solid var(--line);border-radius:6px;padding:10px 12px;margin:12px 0}
.sample .meta{color:var(--muted);font-size:12px;margin-bottom:4px}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:10px;margin-top:8px}
.answer{background:var(--bg2);border-radius:4px;padding:6px 10px}
.who{font-weight:600;font-size:13px}.score{color:var(--muted);font-weight:400;margin-left:6px}
pre{white-space:pre-wrap;word-wrap:break-word;font:inherit;margin:2px 0}
.qa{display:grid;grid-template-columns:88px 1fr;gap:2px 8px;align-items:baseline}
.qa .k{margin:0}
nav{font-size:13px;margin:10px 0 0}nav a{color:#0969da;text-decoration:none;margin-right:14px}
.facts-list{color:var(--muted);font-size:13px}
details summary{cursor:pointer;color:var(--muted);font-size:12px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _update_section(update: dict[str, Any]) -> str:
    """`seektune update`: the previous model ("before") and the updated one on the new and the old test split."""
    replay = update.get("replay") or {}
    parts = ["<section id='update'><h2>Update: gain and forgetting</h2>",
             f"<p>Trained on from <code>{esc(update.get('from'))}</code> with {esc(replay.get('new_train_rows'))} new "
             f"and {esc(replay.get('replay_rows'))} replayed training rows (replay {esc(replay.get('ratio'))}).</p>"]
    rows = []
    for split, label in (("new", "new split"), ("old", "old split")):
        part = update.get(split) or {}
        before, after = part.get("before") or {}, part.get("after") or {}
        for metric in ("fact_accuracy", "rougeL", "bleu"):
            if _is_number(before.get(metric)) and _is_number(after.get(metric)):
                change = after[metric] - before[metric]
                rows.append([esc(f"{label} (n={after.get('n')})"), esc(METRIC_NAMES.get(metric, metric)),
                             esc(fmt(metric, before[metric])), esc(fmt(metric, after[metric])),
                             esc(("+" if change >= 0 else "") + fmt(metric, change))])
    parts.append(_table(["split", "metric", "before", "after", "change"], rows))
    parts.append("<p class='muted'>A fall on the old split is what the update forgot.</p></section>")
    return "".join(parts)


def render_report_html(report: dict[str, Any]) -> str:
    """The report dict as one self-contained HTML page."""
    metrics = report["eval"]
    sections = [_header(report)]
    if report.get("recipe"):
        sections.append(_recipe_section(report["recipe"]))
    if report.get("data"):
        sections.append(_data_section(report["data"]))
    sections.append(_training_section(report.get("training")))
    if report.get("update"):
        sections.append(_update_section(report["update"]))
    sections.append(_metrics_section(metrics))
    sections.append(_win_rate_section(metrics))
    sections.append(_breakdown_section(metrics, "by_category", "category", "by-category"))
    sections.append(_breakdown_section(metrics, "by_language", "language", "by-language"))
    sections.append(_rows_section(report.get("rows") or {}, metrics))
    if report.get("human"):
        sections.append(_human_section(report["human"]))
    sections.insert(1, _nav(sections))
    return _page(f"seektune report: {report['run']}", "".join(sections))


# ---------------------------------------------------------------- several runs side by side


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One run's settings and its tuned model's scores, flat, for the comparison table."""
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    recipe = _read_recipe(run_dir) or {}
    training = _read_json(run_dir / "train.json") or {}
    method, train = recipe.get("method") or {}, recipe.get("train") or {}
    tuned = metrics.get("tuned") or {}
    row: dict[str, Any] = {
        "run": str(run_dir),
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
        scored = [(r[metric], r["run"]) for r in runs if _is_number(r.get(metric))]
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
    runs = [run_summary(Path(d)) for d in run_dirs]
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


def compare_chart_png(result: dict[str, Any]) -> str | None:
    """Grouped bars: one group per metric, one bar per run; BLEU and chrF divided by 100 to share the axis."""
    metrics = [m for m in CHART_METRICS if m in result["metrics"]]
    if not metrics:
        return None
    plt = _pyplot()
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


def render_compare_html(result: dict[str, Any]) -> str:
    header, rows = compare_table_rows(result)
    best = result.get("best") or {}
    first_metric = 1 + len(SETTING_COLUMNS)
    header = [esc(h) for h in header]
    cells = []
    best_value = {m: next(r[m] for r in result["runs"] if r["run"] == run) for m, run in best.items()}
    for run, row in zip(result["runs"], rows):
        line = [esc(v) for v in row]  # compare_table_rows gives text; the page needs it escaped
        for j, metric in enumerate(result["metrics"]):
            if metric in best_value and run.get(metric) == best_value[metric]:  # every run on a tie
                line[first_metric + j] = f"<span class='best'>{line[first_metric + j]}</span>"
        cells.append(line)
    chart = compare_chart_png(result)
    body = (f"<h1>Run comparison</h1><p class='muted'>{len(result['runs'])} runs; scores of each run's tuned "
            f"model on its eval split. Highlighted: best per metric (lowest for loss and perplexity). "
            f"BLEU and chrF are 0-100, other scores 0-1; win rate is against each run's own baseline.</p>"
            f"<section id='compare-table'>{_table(header, cells, table_id='compare', css='num')}</section>")
    if chart:
        body += (f"<section id='compare-chart'><h2>Main metrics</h2>"
                 f"<img id='compare-chart-img' alt='main metrics per run' src='{chart}'></section>")
    style = (".best{background:#dafbe1;font-weight:700;padding:1px 4px;border-radius:3px}"
             "#compare th{white-space:nowrap}")
    return _page("seektune run comparison", body).replace("</style>", style + "</style>", 1)
