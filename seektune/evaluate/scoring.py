"""How the eval stage scores answers against the references, shared by the plain and the retrieval systems.

    score_systems(rows, {"base": [...], "tuned": [...]})     # whole-set scores, by language and by category
    per_row_scores(rows, answers, "fact_accuracy")           # one score per row (the A/B comparison's unit)
    confidence_intervals(rows, answers, seed)                 # bootstrap 95% intervals of the row-level means

The metrics themselves are :mod:`seektune.evaluate.metrics`; this module applies them to test rows
(``{"messages", "meta": {"facts", "category"}}``), whose last turn is the reference answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from seektune.evaluate.metrics import facts_found, rouge_l, score, term_coverage
from seektune.text import language_of


def slices(rows: list[dict[str, Any]], by: Callable[[dict[str, Any]], str | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        value = by(row)
        if value is not None:
            groups.setdefault(str(value), []).append(i)
    return dict(sorted(groups.items()))


def score_systems(rows: list[dict[str, Any]], answers: dict[str, list[str]],
                  glossary: list[str] | None = None) -> dict[str, Any]:
    references = [row["messages"][-1]["content"] for row in rows]
    facts = [row["meta"].get("facts") or [] for row in rows]
    languages = [language_of(ref) for ref in references]
    by_language = slices(rows, lambda row: language_of(row["messages"][-1]["content"]))
    by_category = slices(rows, lambda row: row["meta"].get("category"))
    metrics: dict[str, Any] = {}
    for system, predictions in answers.items():
        overall_lang = "zh" if languages and all(lang == "zh" for lang in languages) else "en"
        result = score(predictions, references, facts, overall_lang, full=True)
        if glossary:
            result["term_coverage"] = term_coverage(predictions, glossary, references)

        def part(idx: list[int], lang: str) -> dict[str, Any]:
            return score([predictions[i] for i in idx], [references[i] for i in idx], [facts[i] for i in idx], lang)

        result["by_language"] = {lang: part(idx, lang) for lang, idx in by_language.items()}
        if by_category:
            result["by_category"] = {
                cat: part(idx, "zh" if all(languages[i] == "zh" for i in idx) else "en")
                for cat, idx in by_category.items()
            }
        metrics[system] = result
    return metrics


def per_row_scores(rows: list[dict[str, Any]], predictions: list[str], metric: str) -> list[float | None]:
    """One score per row: ROUGE-L F1, or 1/0 for "every key fact present" (None for rows without facts)."""
    scores: list[float | None] = []
    for row, prediction in zip(rows, predictions):
        reference = row["messages"][-1]["content"]
        if metric == "fact_accuracy":
            facts = row["meta"].get("facts") or []
            scores.append(float(all(facts_found(prediction, facts))) if facts else None)
        else:
            scores.append(rouge_l([prediction], [reference], language_of(reference)))
    return scores


def ab_scores(values: list[float | None]) -> list[float]:
    return [0.0 if v is None else v for v in values]


def confidence_intervals(rows, answers: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """Bootstrap 95% CIs of each system's row-level metrics, and of tuned - base on the same rows."""
    from seektune.evaluate.compare import bootstrap_mean_ci, paired_delta_ci

    result: dict[str, Any] = {}
    per_metric = {m: {s: per_row_scores(rows, a, m) for s, a in answers.items()} for m in ("rougeL", "fact_accuracy")}
    for system in answers:
        result[system] = {}
        for metric, by_system in per_metric.items():
            values = [v for v in by_system[system] if v is not None]
            if values:
                result[system][metric] = list(bootstrap_mean_ci(values, seed=seed))
    if "base" in answers and "tuned" in answers:
        result["delta"] = {}
        for metric, by_system in per_metric.items():
            pairs = [(b, t) for b, t in zip(by_system["base"], by_system["tuned"]) if b is not None and t is not None]
            if pairs:
                result["delta"][metric] = list(paired_delta_ci([p[0] for p in pairs], [p[1] for p in pairs],
                                                               seed=seed))
    return result


def use_glossary(spec: Any, glossary: str | Path | None) -> tuple[str, ...]:
    """The forbidden variants of the eval section ``spec``, after merging in a ``--glossary`` file (which also turns
    enforcement on); a file that forbids nothing is an error, since there would be nothing to enforce."""
    if glossary is not None:
        from seektune.glossary import enforced_variants, read_glossary

        entries = read_glossary(glossary)
        enforced_variants(glossary, entries)  # a file that forbids nothing: an error, there is nothing to enforce
        spec.glossary = list(dict.fromkeys([*(spec.glossary if isinstance(spec.glossary, list) else []),
                                            *(e.term for e in entries)]))
        spec.forbidden = {**spec.forbidden, **{e.term: list(e.forbidden) for e in entries if e.forbidden}}
        spec.enforce_glossary = True
    return tuple(dict.fromkeys(v for variants in spec.forbidden.values() for v in variants))


def add_term_errors(metrics: dict[str, Any], answers: dict[str, list[str]], spec: Any) -> None:
    """Each system's ``term_errors`` (answers using a forbidden variant, per 100) and the count per variant."""
    from seektune.glossary import GlossaryEntry, term_errors

    entries = [GlossaryEntry(term, tuple(variants)) for term, variants in spec.forbidden.items()]
    for name, values in answers.items():
        counted = term_errors(values, entries)
        metrics[name]["term_errors"] = counted["per_100"]
        metrics[name]["term_errors_by_variant"] = counted["by_variant"]
    metrics["glossary_enforced"] = bool(spec.enforce_glossary)
