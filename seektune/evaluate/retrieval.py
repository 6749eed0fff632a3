"""Retrieval in the eval: every system answers the test rows a second time with passages from an index,
and an out-of-scope set shows how often each system declines instead of inventing.

    seektune eval runs/customer-service --rag runs/handbook-index              # base, base+rag, tuned, tuned+rag
    seektune eval runs/customer-service --rag runs/handbook-index --rag-k 4 \\
        --out-of-scope examples/customer-service/data/out_of_scope.jsonl       # + refusals on unanswerable questions

Beside ``base`` and ``tuned`` come ``base+rag`` and ``tuned+rag``: the same models, with each row's
question (its last user turn) searched in the index and that turn replaced by
:func:`seektune.rag.prompt.with_passages` (numbered passages, then the question). They are generated
through the same systems, token batches and answer cache as the plain answers. The cache keys on the
whole prompt, passages included, so a changed index gives new prompts and fresh answers, and an
unchanged one is reused.

``metrics["rag"]`` holds, per system, in the order ``order`` (base, base+rag, tuned, tuned+rag):

- ``n``, ``fact_accuracy``, ``rougeL``: scored exactly as base and tuned are;
- ``faithfulness`` (retrieval systems): over the answers that state a fact or a number, the mean share
  of them found in that row's retrieved passages (:func:`seektune.evaluate.metrics.faithfulness`);
  ``faithfulness_n`` answers scored;
- ``citation_accuracy``: of the answers that cite a given passage (``[n]``) on rows with reference facts,
  the share whose cited passages together hold every reference fact
  (:func:`seektune.evaluate.metrics.citation_correct`); ``citation_n`` answers scored; ``citation_rate``:
  the share of all answers that cite a given passage;
- ``recall_at_k``: the share of rows with a known source where one of the k retrieved passages is that
  source (:func:`recall_rows`); the two retrieval systems search the same questions, so they share it;
  ``recall_n`` rows counted;
- with an out-of-scope file: ``refusal_rate``, the share of its questions the system declined
  (:func:`seektune.evaluate.metrics.is_refusal`), ``refusal_n``; and for every system
  ``refused_in_scope``, the share of the (answerable) test rows it declined.

``ci[system][metric]`` is the bootstrap 95% interval of each per-row mean, as for the other metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seektune.evaluate.metrics import cited_passages, citation_correct, faithfulness, is_refusal
from seektune.evaluate.scoring import confidence_intervals, score_systems
from seektune.rag.index import Hit, Index
from seektune.rag.prompt import grounded, question_turn
from seektune.text import normalise_for_match

RAG_SUFFIX = "+rag"
SCORES = ("n", "fact_accuracy", "rougeL", "faithfulness", "citation_accuracy", "citation_rate", "recall_at_k",
          "refusal_rate", "refused_in_scope")
COUNTS = {"faithfulness": "faithfulness_n", "citation_accuracy": "citation_n", "recall_at_k": "recall_n",
          "refusal_rate": "refusal_n"}  # how many rows each of these means is over


def open_index(index: str | Path | Index) -> Index:
    """An index to search: an open :class:`Index` as it is (tests pass one with their own embedder), or its
    directory (its encoder, named in the index, loads on the first English query)."""
    return index if isinstance(index, Index) else Index.open(index)


# ---------------------------------------------------------------- prompts with passages


def question_of(row: dict[str, Any]) -> str:
    """A test row's question: its last user turn (rows without one are rejected when the data is read)."""
    turn = question_turn(row["messages"])
    if turn is None:
        raise ValueError(f"{(row.get('meta') or {}).get('origin', 'a row')} has no user turn to search for")
    return row["messages"][turn]["content"]


def retrieve(index: Index, rows: list[dict[str, Any]], k: int) -> list[list[Hit]]:
    """The ``k`` best passages for each row's question."""
    return [index.search(question_of(row), k=k) for row in rows]


@dataclass
class Answered:
    """Answers of several systems to one set of conversations, with the passages each row was given."""

    hits: list[list[Hit]]
    answers: dict[str, list[str]] = field(default_factory=dict)
    reasoning: dict[str, list[str | None]] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)


def answer(systems: dict[str, Any], rows: list[dict[str, Any]], cache: Any, options: Any, *,
           index: Index | None = None, k: int = 4, desc: str = "") -> Answered:
    """Each system's answers to ``rows``; with ``index``, as ``<name>+rag`` from prompts with ``k`` passages.

    ``systems`` are the eval stage's ``System`` objects, ``cache`` its ``AnswerCache`` and ``options`` its
    ``GenOptions`` (this module sits below the stage, so it takes them as they come)."""
    hits = retrieve(index, rows, k) if index is not None else [[] for _ in rows]
    conversations = [grounded(row["messages"], found) if index is not None else row["messages"]
                     for row, found in zip(rows, hits)]
    result = Answered(hits)
    for name, system in systems.items():
        key = name + RAG_SUFFIX if index is not None else name
        generated, result.reused[key] = cache.answers(system, conversations, options,
                                                      f"{key}{' ' + desc if desc else ''}")
        result.answers[key] = [a["answer"] or "" for a in generated]
        result.reasoning[key] = [a.get("reasoning") for a in generated]
    return result


def answer_out_of_scope(systems: dict[str, Any], rows: list[dict[str, Any]], cache: Any, options: Any, *,
                        index: Index, k: int) -> Answered:
    """Each system's answers to the out-of-scope questions, without passages and (``<name>+rag``) with them."""
    plain = answer(systems, rows, cache, options, desc="out of scope")
    found = answer(systems, rows, cache, options, index=index, k=k, desc="out of scope")
    return Answered(found.hits, {**plain.answers, **found.answers}, {**plain.reasoning, **found.reasoning},
                    {**plain.reused, **found.reused})


# ---------------------------------------------------------------- retrieval recall


def _facts(row: dict[str, Any]) -> list[str]:
    return [f for f in (row.get("meta") or {}).get("facts") or [] if isinstance(f, str) and f.strip()]


def source_chunks(row: dict[str, Any], known: set[str]) -> set[str]:
    """The index chunks a row names as its source: its ``meta.origin`` (a synthesised row's chunk id, e.g.
    ``handbook.md#c12``) and its ``meta.group`` (synthesis writes the chunk ids there, joined by ``+``),
    those that exist in the index. A FAQ row's origin (``faq_en.jsonl:12``) names no chunk."""
    meta = row.get("meta") or {}
    names = [meta.get("origin"), *str(meta.get("group") or "").split("+")]
    return {name for name in names if isinstance(name, str) and name in known}


def recall_rows(rows: list[dict[str, Any]], hits: list[list[Hit]], index: Index) -> list[float | None]:
    """Per row, 1.0 when a retrieved passage is the answer's source and 0.0 when none is; None when the row's
    source is unknown.

    The source is the chunk the row names (:func:`source_chunks`) when it names one in the index; otherwise any
    chunk of the index that holds every one of the row's reference facts (``meta.facts``, compared through
    :func:`normalise_for_match`). A row that names no chunk of the index and whose facts no chunk holds
    together (or that has no facts) is not counted."""
    known = set(index.chunk_ids())
    texts: dict[str, str] | None = None  # read only when some row needs its facts looked up
    holders: dict[tuple[str, ...], set[str]] = {}
    scores: list[float | None] = []
    for row, found in zip(rows, hits):
        sources = source_chunks(row, known)
        facts = tuple(normalise_for_match(f) for f in _facts(row))
        if not sources and facts:
            if texts is None:
                texts = {cid: normalise_for_match(hit.text) for cid in known if (hit := index.chunk(cid))}
            if facts not in holders:
                holders[facts] = {cid for cid, text in texts.items() if all(f in text for f in facts)}
            sources = holders[facts]
        scores.append(float(any(hit.chunk_id in sources for hit in found)) if sources else None)
    return scores


# ---------------------------------------------------------------- the four-way table


def _mean(values: list[float | None]) -> tuple[float | None, int]:
    scored = [v for v in values if v is not None]
    return (sum(scored) / len(scored) if scored else None), len(scored)


def _interval(values: list[float | None], seed: int) -> list[float] | None:
    from seektune.evaluate.compare import bootstrap_mean_ci

    scored = [v for v in values if v is not None]
    return list(bootstrap_mean_ci(scored, seed=seed)) if scored else None


def grounding_rows(rows: list[dict[str, Any]], answers: list[str], hits: list[list[Hit]]) -> dict[str, list]:
    """Per row: faithfulness (None without facts or numbers), citation correctness (1/0, None when not scored)
    and whether the answer cites a passage it was given (1/0)."""
    out: dict[str, list] = {"faithfulness": [], "citation_accuracy": [], "citation_rate": []}
    for row, text, found in zip(rows, answers, hits):
        passages = [hit.text for hit in found]
        correct = citation_correct(text, passages, _facts(row))
        out["faithfulness"].append(faithfulness(text, passages))
        out["citation_accuracy"].append(None if correct is None else float(correct))
        out["citation_rate"].append(float(any(1 <= n <= len(passages) for n in cited_passages(text))))
    return out


def summarise(rows: list[dict[str, Any]], answers: dict[str, list[str]], scores: dict[str, Any],
              ci: dict[str, Any], *, retrieved: Answered, index: Index, k: int, out_of_scope: Answered | None = None,
              out_of_scope_rows: list[dict[str, Any]] | None = None, out_of_scope_file: str | None = None,
              labels: dict[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """The ``metrics["rag"]`` section (see the module docstring).

    ``answers``: every system's answers to the test rows (``base``, ``tuned`` and their ``+rag``);
    ``scores``: each system's scores from the stage's ``score_systems`` (fact accuracy, ROUGE-L, ...) and ``ci``
    the stage's intervals of those, so the plain systems read here as in the main table; ``retrieved``: the
    retrieval systems' answers with their passages; ``out_of_scope``: every system's answers to the
    out-of-scope rows; ``labels``: what each plain system is (the retrieval ones are named after them)."""
    order = [n for name in ("base", "tuned") for n in (name, name + RAG_SUFFIX) if n in answers]
    recall = recall_rows(rows, retrieved.hits, index)
    section: dict[str, Any] = {
        "order": order, "k": k, "scores": {}, "ci": {},
        "systems": {name: (labels or {}).get(name.removesuffix(RAG_SUFFIX), name.removesuffix(RAG_SUFFIX))
                    + (f" + retrieval (k={k})" if name.endswith(RAG_SUFFIX) else "") for name in order},
        "index": {"path": str(index.path), "encoder": index.settings.get("encoder"),
                  "documents": len(index.documents()), "chunks": len(index)},
    }
    for name in order:
        row_scores: dict[str, Any] = {key: scores[name].get(key) for key in ("n", "fact_accuracy", "rougeL")}
        intervals = {key: value for key, value in (ci.get(name) or {}).items() if key in ("fact_accuracy", "rougeL")}
        per_row: dict[str, list] = {}
        if name.endswith(RAG_SUFFIX):
            per_row = grounding_rows(rows, answers[name], retrieved.hits)
            per_row["recall_at_k"] = recall
        per_row["refused_in_scope"] = [float(is_refusal(text)) for text in answers[name]]
        if out_of_scope is not None:
            per_row["refusal_rate"] = [float(is_refusal(text)) for text in out_of_scope.answers[name]]
        for metric, values in per_row.items():
            row_scores[metric], count = _mean(values)
            if metric in COUNTS:
                row_scores[COUNTS[metric]] = count
            interval = _interval(values, seed) if metric != "citation_rate" else None
            if interval:
                intervals[metric] = interval
        section["scores"][name] = {key: row_scores.get(key) for key in (*SCORES, *COUNTS.values())}
        section["ci"][name] = intervals
    if out_of_scope is not None and out_of_scope_rows is not None:
        section["out_of_scope"] = {
            "file": out_of_scope_file, "n": len(out_of_scope_rows),
            "rows": [{"question": question_of(row),
                      "retrieved": [hit.chunk_id for hit in out_of_scope.hits[i]],
                      **{name: out_of_scope.answers[name][i] for name in order},
                      "refused": [name for name in order if is_refusal(out_of_scope.answers[name][i])]}
                     for i, row in enumerate(out_of_scope_rows)],
        }
    return section


def evaluate_with_retrieval(rows: list[dict[str, Any]], systems: dict[str, Any], answers: dict[str, list[str]],
                            cache: Any, options: Any, metrics: dict[str, Any], index: Index, k: int,
                            scope_rows: list[dict[str, Any]] | None, scope_file: str | Path | None,
                            seed: int) -> Answered:
    """The eval stage's retrieval step: every system again with passages from ``index`` (and on the out-of-scope
    rows, with and without them), scored beside the plain ``answers`` already in ``metrics``. Sets
    ``metrics["rag"]`` and the cache counts of the retrieval systems; returns their answers and passages."""
    found = answer(systems, rows, cache, options, index=index, k=k, desc="model")
    scope = answer_out_of_scope(systems, scope_rows, cache, options, index=index, k=k) if scope_rows else None
    scores = {**{name: metrics[name] for name in answers}, **score_systems(rows, found.answers)}
    ci = {**metrics["ci"], **confidence_intervals(rows, found.answers, seed)}
    metrics["rag"] = summarise(
        rows, {**answers, **found.answers}, scores, ci, retrieved=found, index=index, k=k, out_of_scope=scope,
        out_of_scope_rows=scope_rows, out_of_scope_file=str(scope_file) if scope_file else None,
        labels={name: system.label for name, system in systems.items()}, seed=seed)
    for name, reused in found.reused.items():
        metrics["cache"]["reused"][name] = reused
        metrics["cache"]["generated"][name] = len(rows) - reused
    return found
