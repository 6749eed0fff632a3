"""Training rows with retrieved context (``data.rag``), after RAFT (Zhang et al. 2024).

For each training row, the last user turn becomes the question with ``k`` numbered passages
(``seektune.rag.prompt.with_passages``, the same template ``serve --rag`` and ``eval --rag`` use):

* with probability ``oracle_p``: the passage holding the answer (the row's ``meta.origin`` chunk when
  the index has it and it holds the row's facts, else the best-ranked chunk holding all of them)
  among ``distractors`` retrieved passages that do not, in a seeded random order; the answer gets
  the passage's number appended (``"... 7am to 9pm Central. [2]"``) when ``cite`` is on;
* otherwise: distractors only, and the answer becomes the refusal text (``without_answer:
  refuse``), or stays (``answer``, RAFT's choice: the model must know it by heart).

A row whose answer cannot be found in any chunk (no facts, or facts no chunk holds) keeps
distractors only and its own answer when it already is a refusal (out-of-scope rows), and is
otherwise left as it is and counted (``no_source``): a passage that does not hold its answer next
to that answer would teach the model to invent. The choice per row is seeded by the row, so a rerun
or a resumed run sees the same rows.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections import Counter
from typing import Any

from seektune.rag.index import Hit, Index
from seektune.rag.prompt import grounded, question_turn
from seektune.recipe.synth import REFUSAL_EN, REFUSAL_ZH
from seektune.text import language_of


def _holds(text: str, facts: list[str]) -> bool:
    return bool(facts) and all(fact in text for fact in facts)


def _oracle(index: Index, record: dict[str, Any], question: str, retrieved: list[Hit]) -> Hit | None:
    meta = record.get("meta") or {}
    facts = [str(f) for f in meta.get("facts") or []]
    origin = meta.get("origin")
    if isinstance(origin, str) and "#" in origin:
        hit = index.chunk(origin)
        if hit is not None and (not facts or _holds(hit.text, facts)):
            return hit
    if not facts:
        return None
    for hit in retrieved:
        if _holds(hit.text, facts):
            return hit
    # not among the retrieved: any chunk holding every fact (the first fact narrows it in SQL)
    rows = index.db.execute("SELECT chunk_id, text FROM chunks WHERE instr(text, ?) > 0 ORDER BY document, position",
                            (facts[0],))
    chunk_id = next((chunk_id for chunk_id, text in rows if _holds(text, facts)), None)
    return index.chunk(chunk_id) if chunk_id is not None else None


def add_retrieved_context(records: list[dict[str, Any]], spec, index: Index) -> tuple[list[dict[str, Any]], Counter]:
    """``records`` with passages in each last user turn (see the module docstring), and counts:
    ``oracle``, ``without_answer``, ``no_source``, ``no_question``. The records given are not changed."""
    counts: Counter = Counter()
    refusals = {spec.refusal} if spec.refusal else {REFUSAL_EN, REFUSAL_ZH}
    out = []
    for record in records:
        messages = record.get("messages") or []
        turn = question_turn(messages)
        reply = next((i for i in range(len(messages) - 1, turn, -1) if messages[i].get("role") == "assistant"),
                     None) if turn is not None else None
        if reply is None:
            counts["no_question"] += 1
            out.append(record)
            continue
        question, answer = str(messages[turn]["content"]), str(messages[reply]["content"])
        meta = record.get("meta") or {}
        key = f"{spec.seed}\n{meta.get('id', '')}\n{question}".encode("utf-8")
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        retrieved = index.search(question, k=spec.k + spec.distractors + 4)
        oracle = _oracle(index, record, question, retrieved)
        facts = [str(f) for f in meta.get("facts") or []]
        distractors = [h for h in retrieved if (oracle is None or h.chunk_id != oracle.chunk_id)
                       and not _holds(h.text, facts)]
        new_answer, reasoning = answer, True
        if oracle is None:
            if answer.strip() not in refusals:
                counts["no_source"] += 1
                out.append(record)
                continue
            passages = distractors[: spec.k]  # an out-of-scope row: passages that do not answer, and its refusal
            counts["without_answer"] += 1
        elif rng.random() < spec.oracle_p:
            passages = distractors[: min(spec.distractors, spec.k - 1)]
            passages.insert(rng.randint(0, len(passages)), oracle)
            if spec.cite:
                new_answer = f"{answer.rstrip()} [{passages.index(oracle) + 1}]"
            counts["oracle"] += 1
        else:
            passages = distractors[: min(spec.distractors, spec.k)] or distractors[: spec.k]
            if spec.without_answer == "refuse":
                new_answer = spec.refusal or (REFUSAL_ZH if language_of(question) == "zh" else REFUSAL_EN)
                reasoning = False  # reasoning about a passage that is not there would not fit
            counts["without_answer"] += 1
        shown = grounded(messages, passages)
        shown[reply]["content"] = new_answer
        if not reasoning:
            shown[reply].pop("reasoning", None)
        rag = {"passages": [h.chunk_id for h in passages], "oracle": oracle.chunk_id if oracle in passages else None}
        out.append({**record, "messages": shown, "meta": {**copy.deepcopy(meta), "rag": rag}})
    return out, counts
