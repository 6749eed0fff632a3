"""How the eval results read in a terminal: the tables and lines ``seektune eval`` and ``seektune run`` print.

    seektune eval runs/customer-service        # print_metrics: base vs tuned, per language, win rates
    seektune eval runs/customer-service --rag runs/handbook-index   # and print_retrieval: the four-way table
    seektune eval runs/ticket-routing-recipe   # print_classification: the classifier beside its n-gram baseline

The numbers come from ``eval/metrics.json`` as the stages wrote it; nothing here computes a score.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from seektune.evaluate.report import classifier_vs_baseline
from seektune.runs import RunDir


def print_metrics(metrics: dict, console: Console) -> None:
    """`seektune eval`'s table: base vs tuned, overall and per language, then the win rates."""
    systems = [s for s in ("base", "tuned") if s in metrics]
    labels = metrics.get("systems", {})
    table = Table(title=f"base vs tuned on {metrics.get('split', 'test')}")
    table.add_column("slice")
    table.add_column("metric")
    for system in systems:
        table.add_column(system, justify="right")
    if len(systems) == 2:
        table.add_column("delta", justify="right")
    slices = [("all", lambda s: metrics[s])]
    for lang in metrics[systems[0]].get("by_language", {}):
        slices.append((lang, lambda s, lang=lang: metrics[s]["by_language"][lang]))
    for name, get in slices:
        overall = ("term_coverage", "term_errors", "perplexity") if name == "all" else ()
        keys = ("fact_accuracy", "rougeL", "bleu") + overall
        for key in keys:
            values = [get(s).get(key) for s in systems]
            if all(v is None for v in values):
                continue
            cells = ["-" if v is None else f"{v:.3f}" for v in values]
            if len(values) == 2 and None not in values:
                cells.append(f"{values[1] - values[0]:+.3f}")
            table.add_row(f"{name} (n={get(systems[0])['n']})", key, *cells)
    console.print(table)
    for system in systems:
        if system in labels:
            console.print(f"  {system}: {labels[system]}", highlight=False, soft_wrap=True)
        if metrics[system].get("reasoning"):
            thinking = metrics[system]["reasoning"]
            console.print(f"  {system} reasoned on {thinking['rows']} rows, {thinking['mean_words']:.0f} words "
                          f"on average (not scored)", highlight=False)
    for key, what in (("ab", "by " + str(metrics.get("ab", {}).get("metric"))), ("judge", "by the judge")):
        ab = metrics.get(key)
        if not ab:
            continue
        verdict = "[green]pass[/]" if ab["passed"] else "[red]below the bar[/]"
        errors = f"; {ab['errors']} rows without a verdict" if ab.get("errors") else ""
        console.print(f"tuned vs base {what}: {ab['wins']} wins, {ab['ties']} ties, {ab['losses']} losses; "
                      f"win rate {ab['win_rate']:.2f} (95% CI {ab['ci_low']:.2f}-{ab['ci_high']:.2f}, "
                      f"sign test p={ab['p_value']:.2g}); bar {ab['bar']:.2f}: {verdict}{errors}", soft_wrap=True)
    if metrics.get("rag"):
        print_retrieval(metrics["rag"], console)


# short headers, so the table fits an 80-column terminal; the line under it spells them out
RAG_HEADERS = {"fact_accuracy": "facts", "rougeL": "RougeL", "faithfulness": "faith", "citation_accuracy": "cites",
               "recall_at_k": "R@k", "refusal_rate": "refuse\nOOS", "refused_in_scope": "refuse\nin"}


def print_retrieval(section: dict, console: Console) -> None:
    """`seektune eval --rag`'s four-way table: each model without and with retrieval, one row per system."""
    scope = section.get("out_of_scope") or {}
    index = section.get("index") or {}
    table = Table(title=f"with and without retrieval (k={section.get('k')}, {index.get('chunks')} chunks"
                  + (f"; {scope.get('n')} out-of-scope questions)" if scope else ")"))
    table.add_column("system", no_wrap=True, min_width=9)
    table.add_column("n", justify="right")
    for key, header in RAG_HEADERS.items():
        table.add_column(header.replace("@k", f"@{section.get('k')}"), justify="right")
    for name in section.get("order") or []:
        part = section["scores"][name]
        table.add_row(name, str(part.get("n")), *("-" if part.get(key) is None else f"{part[key]:.3f}"
                                                  for key in RAG_HEADERS))
    console.print(table)
    retrieval = [name for name in section.get("order") or [] if name.endswith("+rag")]
    k = section.get("k")
    counts = ", ".join(f"{name} {section['scores'][name].get('faithfulness_n')} / "
                       f"{section['scores'][name].get('citation_n')}" for name in retrieval)
    recall_n = section["scores"][retrieval[0]].get("recall_n") if retrieval else None
    scored = f" - rows scored: {counts}" if counts else ""
    console.print(f"  facts: fact accuracy; faith: faithfulness (over answers that state a fact or number); cites: "
                  f"citation accuracy (over answers that cite a passage){scored}; "
                  f"R@{k}: retrieval recall@{k} over {recall_n} rows with a known source chunk; refuse OOS / in: "
                  f"share declined of the out-of-scope questions / of the test rows", highlight=False, soft_wrap=True)


def print_classification(metrics: dict, console: Console) -> None:
    """A classification run's scores: the trained classifier and, beside a fine-tuned encoder, its n-gram baseline."""
    systems = [s for s in ("tuned", "baseline") if isinstance(metrics.get(s), dict)]
    table = Table(title=f"classifier on {metrics.get('split', 'test')}")
    table.add_column("metric")
    for system in systems:
        table.add_column((metrics.get("systems") or {}).get(system, system), justify="right")
    for key in ("n", "accuracy", "macro_f1", "auc_roc"):
        values = [metrics[s].get(key) for s in systems]
        table.add_row(key, *("-" if v is None else str(v) if key == "n" else f"{v:.3f}" for v in values))
    console.print(table)
    versus = classifier_vs_baseline(metrics)
    if versus:
        console.print(versus["text"], style="bold yellow" if versus["baseline_better"] else None, highlight=False,
                      soft_wrap=True)


def classification_hint(run_dir: Path) -> str:
    """What to do with a trained classifier (it cannot chat): the closing line of `seektune run`."""
    run = RunDir(run_dir)
    linear = run.recipe().method.name == "linear"
    load = (f"NgramClassifier.load({str(run.ngram_classifier)!r})" if linear
            else f"FineTuner.load({str(run.classifier)!r})")
    module = "seektune.train.ngram import NgramClassifier" if linear else "seektune.train.classify import FineTuner"
    return (f"score it again: seektune eval {run_dir}\n"
            f"classify texts in Python: from {module}; {load}.predict([\"...\"])")
