"""The data card: what happened to every row, as ``card.json`` and a self-contained ``card.html``."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any


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


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(card: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    splits = {k: v for k, v in card["splits"].items() if v["tokens"].get("count")}
    if splits:
        fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 2.8), squeeze=False)
        for axis, (name, info) in zip(axes[0], splits.items()):
            hist = info["tokens"]["histogram"]
            axis.bar(hist["edges"][:-1], hist["counts"], width=hist["edges"][1] - hist["edges"][0], align="edge")
            axis.set_title(f"{name}: tokens per row")
            axis.set_xlabel("tokens")
        plots.append(("Token lengths per split", _png(fig)))
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
        plots.append(("Category balance", _png(fig)))
        plt.close(fig)
    return plots


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(card: dict[str, Any]) -> str:
    parts = ["<h1>Data card</h1>"]
    acc = card["accounting"]
    parts.append(
        f"<p>read {acc['read']} rows, added {acc['added']} (document chunks, augmentation, up-sampling); "
        f"kept {acc['kept']}, rejected {acc['rejected']}. kept + rejected = read + added.</p>"
    )
    parts.append("<h2>Rows after each step</h2>" + _table(["step", "rows", "note"],
                 [[s["step"], s["rows"], s.get("note", "")] for s in card["steps"]]))
    if card["rejected_by_reason"]:
        parts.append("<h2>Rejected rows by reason</h2>" + _table(
            ["step", "reason", "rows"], [[k.split("/")[0], k.split("/")[1], v] for k, v in card["rejected_by_reason"].items()]))
    if card.get("clean_changed"):
        parts.append("<h2>Cleaning</h2>" + _table(["step", "rows changed"], list(card["clean_changed"].items())))
    dup = card["duplicates"]
    parts.append(f"<h2>Duplicates</h2><p>exact: {dup['exact']}, near: {dup['near']}, clusters: {dup['cluster_count']}</p>")
    if dup["clusters"]:
        parts.append(_table(["kept", "removed", "example"],
                            [[c["kept"], ", ".join(c["removed"]), c["example"]] for c in dup["clusters"]]))
    leaks = card["leakage"]
    parts.append(f"<h2>Leakage audit</h2><p>{len(leaks)} val/test rows duplicate an earlier split"
                 f"{' (removed)' if card.get('leakage_removed') else ''}.</p>")
    if leaks:
        parts.append(_table(["split", "row", "duplicates", "kind", "similarity"],
                            [[l["split"], l["origin"], f"{l['other_split']} {l['other_origin']}", l["kind"],
                              f"{l['similarity']:.3f}"] for l in leaks[:50]]))
    parts.append("<h2>Splits</h2>" + _table(
        ["split", "rows", "mean tokens", "p50", "p95", "max"],
        [[name, info["rows"], f"{info['tokens'].get('mean', 0):.1f}", info["tokens"].get("p50", "-"),
          info["tokens"].get("p95", "-"), info["tokens"].get("max", "-")] for name, info in card["splits"].items()]))
    for title, src in _plots(card):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{src}'>")
    for key, title in (("longest", "Longest rows"), ("shortest", "Shortest rows")):
        if card.get(key):
            parts.append(f"<h2>{title}</h2>" + _table(["tokens", "origin", "text"],
                                                      [[r["tokens"], r["origin"], r["text"]] for r in card[key]]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;vertical-align:top;max-width:600px}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>seektune data card</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_card(card: dict[str, Any], data_dir: Path) -> None:
    (data_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    (data_dir / "card.html").write_text(render_html(card), encoding="utf-8")
