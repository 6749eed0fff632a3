"""The data card: what happened to every row, as ``card.json`` and a self-contained ``card.html``.

    seektune prepare examples/customer-service/recipe.yaml     # writes <run>/data/card.json and card.html

``prepare`` fills the card; this module measures token lengths, draws the plots and renders
the page from ``templates/card.html.j2`` (autoescaped: row texts are data and may hold markup).
"""

from __future__ import annotations

import json
from typing import Any

from seektune.data.pages import png_data_uri, pyplot, render
from seektune.runs import RunDir

CARD_DPI = 90


def length_stats(lengths: list[int], bins: int = 20) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    low, high = ordered[0], ordered[-1]
    width = max(1, -(-(high - low + 1) // bins))
    edges = [low + i * width for i in range(bins + 1)]
    counts = [0] * bins
    for value in lengths:
        counts[min(bins - 1, (value - low) // width)] += 1
    return {
        "count": len(lengths), "mean": sum(lengths) / len(lengths), "p50": pct(0.5), "p95": pct(0.95),
        "min": low, "max": high, "histogram": {"edges": edges, "counts": counts},
    }


def _plots(card: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, inline PNG) of the token-length histograms per split and the category balance."""
    plt = pyplot()
    plots = []
    splits = {k: v for k, v in card["splits"].items() if v["tokens"].get("count")}
    if splits:
        fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 2.8), squeeze=False)
        for axis, (name, info) in zip(axes[0], splits.items()):
            hist = info["tokens"]["histogram"]
            axis.bar(hist["edges"][:-1], hist["counts"], width=hist["edges"][1] - hist["edges"][0], align="edge")
            axis.set_title(f"{name}: tokens per row")
            axis.set_xlabel("tokens")
        plots.append(("Token lengths per split", png_data_uri(fig, CARD_DPI)))
        plt.close(fig)
    categories = card.get("categories") or {}
    if any(categories.values()):
        names = sorted({c for per in categories.values() for c in per})
        fig, axis = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 2.8))
        bottom = [0] * len(names)
        for split, per in categories.items():
            values = [per.get(n, 0) for n in names]
            axis.bar(names, values, bottom=bottom, label=split)
            bottom = [b + v for b, v in zip(bottom, values)]
        axis.legend()
        axis.set_title("rows per category")
        axis.tick_params(axis="x", rotation=45)
        plots.append(("Category balance", png_data_uri(fig, CARD_DPI)))
        plt.close(fig)
    return plots


def _language_fit(card: dict[str, Any]) -> dict[str, Any] | None:
    """The encoder's [UNK] rate per language and a warning per poorly covered one (classification only)."""
    from seektune.data.language_fit import UNK_RATE_LIMIT, poorly_covered, warnings_for

    fit = card.get("language_fit")
    if not fit:
        return None
    poor = set(poorly_covered(fit))
    return {
        "model": card.get("language_fit_model", "the encoder"),
        "limit": f"{UNK_RATE_LIMIT:.0%}",
        "rows": [[language, part["rows"], f"{part['unk_rate']:.1%}", f"{part['tokens_per_char']:.2f}",
                  "poor" if language in poor else "ok"] for language, part in fit.items()],
        "warnings": warnings_for(fit, card.get("language_fit_model", "the encoder")),
    }


def _length_fit(card: dict[str, Any]) -> dict[str, Any] | None:
    """Tokens per character and rows over data.max_length per language, with a warning where many are (chat models)."""
    from seektune.data.language_fit import length_warnings

    fit, settings = card.get("length_fit"), card.get("length_fit_settings")
    if not fit or not settings:
        return None
    model = card.get("length_fit_model", "the model")
    return {
        "model": model, "max_length": settings["max_length"],
        "rows": [[language, part["rows"], f"{part['tokens_per_char']:.2f}", part["median_tokens"], part["p90_tokens"],
                  part["over_max_length"]] for language, part in fit.items()],
        "warnings": length_warnings(fit, settings["max_length"], settings["overlength"], model),
    }


def _tables(card: dict[str, Any]) -> dict[str, Any]:
    """The card's tables as rows of values; ``card.html.j2`` lays them out and escapes every cell."""
    reasons = []
    for key, rows in card["rejected_by_reason"].items():
        step, _, reason = key.partition("/")
        reasons.append([step, reason, rows])
    return {
        "steps": [[s["step"], s["rows"], s.get("note", "")] for s in card["steps"]],
        "reasons": reasons,
        "cleaning": list((card.get("clean_changed") or {}).items()),
        "clusters": [[c["kept"], ", ".join(c["removed"]), c["example"]] for c in card["duplicates"]["clusters"]],
        "leakage_removed": bool(card.get("leakage_removed")),
        "leaks": [[leak["split"], leak["origin"], f"{leak['other_split']} {leak['other_origin']}", leak["kind"],
                   f"{leak['similarity']:.3f}"] for leak in card["leakage"][:50]],
        "splits": [[name, info["rows"], f"{info['tokens'].get('mean', 0):.1f}", info["tokens"].get("p50", "-"),
                    info["tokens"].get("p95", "-"), info["tokens"].get("max", "-"),
                    card.get("truncated", {}).get(name, {}).get("rows", 0),
                    f"{card.get('truncated', {}).get(name, {}).get('tokens_cut', 0):,}"]
                   for name, info in card["splits"].items()],
        "extremes": [(title, [[r["tokens"], r["origin"], r["text"]] for r in card[key]])
                     for key, title in (("longest", "Longest rows"), ("shortest", "Shortest rows")) if card.get(key)],
        "language_fit": _language_fit(card),
        "length_fit": _length_fit(card),
    }


def render_html(card: dict[str, Any]) -> str:
    """The data card as one self-contained page (``templates/card.html.j2``)."""
    return render("card.html.j2", card=card, tables=_tables(card), plots=_plots(card))


def write_card(card: dict[str, Any], run: RunDir) -> None:
    """Write ``card.json`` and ``card.html`` of ``run``."""
    run.data.mkdir(parents=True, exist_ok=True)
    run.card_json.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    run.card_html.write_text(render_html(card), encoding="utf-8")
