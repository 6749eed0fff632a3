"""`seektune synth RECIPE`: documents -> grounded question/answer pairs, with provenance, for review.

    seektune synth examples/customer-service/synth.yaml
    seektune synth examples/customer-service/synth.yaml synth.teacher=http://127.0.0.1:8000/v1 \
        synth.answer_mode=generate

documents (``seektune.docs``) -> chunks (headings kept, token-bounded) -> teacher prompts ->
quality gates (``gates.py``, a reason code per dropped row) -> near-duplicate removal ->
``<run>/synth/``: ``rows.jsonl`` (kept rows, flat, as prepare reads them), ``review.sqlite``
(the same rows, pending review: ``seektune review RUN``), ``rejects.jsonl``, ``chunks.jsonl``,
``summary.json`` and the teacher's reply cache (a rerun asks only what is missing).

Kinds of rows: ``factual`` (one supporting sentence of a chunk), ``procedure`` (a chunk's list
of steps), ``multi`` (a fact from each of two chunks of one document) and ``out_of_scope``
(a question the documents do not answer, answered with the refusal text). In ``extractive``
mode the answer is the chunk's own text and the teacher writes only the question; in
``generate`` mode the teacher writes both and the support gate checks the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seektune.recipe import Recipe
from seektune.runs import RunDir, run_of
from seektune.synth import gates, prompts, qgen
from seektune.synth.teacher import ReplyCache, Request, SynthTeacher
from seektune.text import language_of
from seektune.train.teacher import student_tokenizer

_PRONOUN_START = re.compile(r"^(?:it|this|that|these|those|they|such|there|here|he|she)\b|^(?:这|它|该|此|其)",
                            re.IGNORECASE)


class SynthError(ValueError):
    """A synthesis that cannot start (no synth: section, no readable document)."""


@dataclass
class Source:
    """The chunk text a row stands on (two chunks joined for a multi row)."""

    origin: str
    document: str
    text: str
    heading: str | None
    page: int | None
    chunk_ids: list[str]


@dataclass
class Item:
    """One planned row: its kind, its source, the fixed answer (extractive and refusals) and its prompt."""

    index: int
    kind: str
    source: Source
    language: str
    request: Request
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- planning


def _score(sentence: str) -> tuple[int, int]:
    """Sentences with facts first, then the longer ones (more to ask about)."""
    return (len(gates.facts_of(sentence)) + len(gates.numbers_in(sentence)), min(len(sentence), 200))


def _answer_for(sentence_list: list[gates.Sentence], index: int) -> str:
    """The sentence, with the one before it when it starts with a pronoun ("It ships in 2 days.")."""
    sentence = sentence_list[index].text
    if index > 0 and _PRONOUN_START.match(sentence) and not sentence_list[index - 1].is_list_item:
        return f"{sentence_list[index - 1].text} {sentence}"
    return sentence


def _source(chunk, document) -> Source:
    return Source(chunk.id, chunk.document, chunk.text, chunk.heading, chunk.page, [chunk.id])


def _variants(spec, build) -> list[Request]:
    """``synth.variants`` requests for one answer: each prompt style once, greedy (a weak teacher's greedy
    questions pass the gates far more often than sampled ones), then the styles again, sampled."""
    return [Request(build(v), 0.0 if v < prompts.STYLES else spec.temperature, spec.seed + v)
            for v in range(spec.variants)]


def plan(recipe: Recipe, documents: list, chunks_by_document: dict[str, list]) -> list[Item]:
    spec = recipe.synth
    items: list[Item] = []

    def add(kind, source, language, requests, answer=None, **meta):
        for variant, request in enumerate(requests):
            items.append(Item(len(items), kind, source, language, request, answer, {"variant": variant, **meta}))

    for document in documents:
        chunks = chunks_by_document[document.name]
        best_sentences = []
        for chunk in chunks:
            language = language_of(chunk.text)
            source = _source(chunk, document)
            found = gates.sentences(chunk.text)
            if spec.answer_mode == "generate":
                for k in range(spec.questions_per_chunk):
                    request = Request(prompts.generate_prompt(chunk.text, language, k),
                                      0.0 if k == 0 else spec.temperature, spec.seed + k)
                    add("factual", source, language, [request])
            else:
                prose = [i for i, s in enumerate(found)
                         if not s.is_list_item and len(s.text) >= 25 and not s.text.endswith((":", "："))]
                chosen = sorted(sorted(prose, key=lambda i: _score(found[i].text), reverse=True)
                                [: spec.questions_per_chunk])
                for i in chosen:
                    answer = _answer_for(found, i)
                    ask = lambda v, a=answer, h=chunk.heading: prompts.question_prompt(a, h, language, v)  # noqa: E731
                    add("factual", source, language, _variants(spec, ask), answer)
                if chosen:
                    best_sentences.append((chunk, found[chosen[0]].text))
            steps = _steps(found)
            if spec.procedure and steps:
                add("procedure", source, language,  # one prompt style: one greedy question
                    [Request(prompts.procedure_prompt(steps, chunk.heading, language, 0))], steps)
        # multi: a fact from each of two chunks apart in the document
        for k in range(min(spec.multi_per_document, len(best_sentences) // 2)):
            half = len(best_sentences) // 2
            (first_chunk, first), (second_chunk, second) = best_sentences[k], best_sentences[k + half]
            joined = Source(f"{first_chunk.id}+{second_chunk.id.rsplit('#', 1)[-1]}", document.name,
                            f"{first_chunk.text}\n\n[...]\n\n{second_chunk.text}", first_chunk.heading,
                            first_chunk.page, [first_chunk.id, second_chunk.id])
            language = language_of(first + second)
            add("multi", joined, language, [Request(prompts.multi_prompt(first, second, language, 0))],
                f"{first} {second}")
    _plan_out_of_scope(spec, documents, chunks_by_document, add)
    return items


def _steps(found: list[gates.Sentence]) -> str | None:
    """The longest run of two or more consecutive list items of a chunk, as lines."""
    best: list[str] = []
    run: list[str] = []
    for sentence in found + [gates.Sentence("", 0, 0)]:
        if sentence.is_list_item and not sentence.text.startswith("|"):
            run.append(sentence.text)
            continue
        if len(run) >= 2 and len(run) > len(best):
            best = run
        run = []
    return "\n".join(best) if best else None


def _plan_out_of_scope(spec, documents, chunks_by_document, add) -> None:
    if not spec.out_of_scope or not documents:
        return
    languages = Counter(document.language for document in documents)
    for language, count in languages.most_common():
        share = round(spec.out_of_scope * count / len(documents)) or 1
        topics = list(dict.fromkeys(c.heading.split(" > ")[-1] for d in documents if d.language == language
                                    for c in chunks_by_document[d.name] if c.heading))
        anchor = next(d for d in documents if d.language == language)
        source = Source(f"{anchor.name}#out-of-scope", anchor.name, "", None, None, [])
        for k in range(share):
            request = Request(prompts.out_of_scope_prompt(topics, language, k), max(spec.temperature, 0.7),
                              spec.seed + 100 + k)
            add("out_of_scope", source, language, [request], spec.refusal_for(language), slot=k)


# ---------------------------------------------------------------- one reply -> a row or a reject


def _row_id(origin: str, kind: str, question: str) -> str:
    return hashlib.sha256(f"{origin}\n{kind}\n{question}".encode("utf-8")).hexdigest()[:16]


def build_row(item: Item, reply: str, spec, all_chunk_texts: list[str], teacher_label: str,
              common: set[str] | frozenset = frozenset()) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """(record, None, details) for a kept row, or (None, reason, details) for a dropped one."""
    details: dict[str, Any] = {"reply": reply}
    language = item.language
    if spec.answer_mode == "generate" and item.kind == "factual":
        parsed = prompts.parse_generated(reply)
        if parsed is None:
            return None, "garbage", details
        question, answer = gates.clean_question(parsed[0]), parsed[1].strip()
    else:
        question, answer = gates.clean_question(reply), item.answer or ""
    question, fixed_terms = gates.fix_glossary(question, spec.glossary)  # the teacher's spelling of a term
    details.update(question=question, answer=answer)
    reason = gates.question_gates(question, language, spec.min_question_chars, spec.max_question_chars)
    if reason is None:
        reason = gates.answer_gates(answer, language, spec.min_answer_chars, spec.max_answer_chars)
    if reason is None and item.kind == "out_of_scope":
        if gates.support_share(question, all_chunk_texts) >= 0.6:
            reason = "in_scope"
    elif reason is None:
        if gates.unsupported(answer, [item.source.text], spec.support):
            reason = "unsupported"
        elif gates.off_topic(question, answer, common):
            reason = "off_topic"
    if reason is None and spec.answer_mode == "generate" and gates.glossary_changed(answer, spec.glossary):
        reason = "glossary_changed"  # an answer must keep the terms as written (extractive ones always do)
    if reason is not None:
        return None, reason, details

    source = item.source
    facts = [] if item.kind == "out_of_scope" else \
        [f for f in gates.facts_of(answer, spec.glossary) if f in source.text]
    assistant: dict[str, Any] = {"role": "assistant", "content": answer}
    if spec.reasoning:
        assistant["reasoning"] = prompts.refusal_reasoning(language) if item.kind == "out_of_scope" else \
            prompts.reasoning_for(source.heading, source.origin, language)
    record = {
        "messages": [{"role": "user", "content": question}, assistant],
        "meta": {
            "id": _row_id(source.origin, item.kind, question),
            "origin": source.origin,
            "kind": item.kind,
            "synthetic": True,
            "facts": facts,
            "support": gates.support_spans(answer, source.text) if source.text else [],
            "warnings": ["glossary_fixed"] if fixed_terms else [],
            "teacher": teacher_label,
            "prompt_version": prompts.PROMPT_VERSION,
            "answer_mode": spec.answer_mode if item.kind != "out_of_scope" else "refusal",
            "review": "pending",
            "source": {"document": source.document, "chunk_id": "+".join(source.chunk_ids) or source.origin,
                       "page": source.page, "heading": source.heading, "text": source.text,
                       "sha256": hashlib.sha256(source.text.encode("utf-8")).hexdigest()},
        },
    }
    return record, None, details


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """A kept record as ``seektune prepare`` reads it (``data.paths: [<run>/synth/rows.jsonl]``), unreviewed."""
    meta = record["meta"]
    return {"messages": record["messages"], "id": meta["id"], "facts": meta["facts"], "category": meta["kind"],
            "group": meta["source"]["chunk_id"], "origin": meta["origin"]}


def _template_rows(items: list[Item], kept: list[tuple[Item, dict]], spec, all_texts, teacher_label, common,
                   organisation: str | None = None) -> list[tuple[Item, dict]]:
    """Rule-written questions for extractive answers: for English, the sentence turned around by its parse
    (``qgen.questions``: "How much does express shipping cost?", "express shipping cost?", "What happens
    if ...?"); a cloze question per fact of the answer (``prompts.cloze_questions``, with ``synth.cloze``), a
    terse one about its subject (``prompts.short_question``), and a plain question about the answer's subject
    (``prompts.template_question``) when no other question passed the gates. They go through the same gates
    and carry the warning ``template_question`` for the reviewer."""
    answered = {(item.source.origin, item.answer) for item, _ in kept}
    rows, seen = [], set()
    for item in items:
        key = (item.source.origin, item.answer)
        if item.kind not in ("factual", "procedure") or item.answer is None or key in seen:
            continue
        seen.add(key)
        questions = prompts.cloze_questions(item.answer, item.language) if item.kind == "factual" and spec.cloze \
            else []
        if item.kind == "factual" and item.language == "en":
            questions += qgen.questions(item.answer, organisation=organisation)
        short = prompts.short_question(item.answer, item.language) if item.kind == "factual" else None
        questions += [short] if short else []
        added = sum(_keep_template(item, question, rows, spec, all_texts, teacher_label, common)
                    for question in dict.fromkeys(questions))
        if key not in answered and not added:
            _keep_template(item, prompts.template_question(item.answer, item.source.heading, item.language), rows,
                           spec, all_texts, teacher_label, common)
    return rows


def _keep_template(item: Item, question: str, rows: list, spec, all_texts, teacher_label, common) -> bool:
    """Gate a rule-written question; a kept one joins ``rows`` with the warning ``template_question``."""
    record, _, _ = build_row(item, question, spec, all_texts, teacher_label, common)
    if record is None:
        return False
    record["meta"]["warnings"].append("template_question")
    record["meta"]["teacher"] = "template"
    rows.append((item, record))
    return True


# ---------------------------------------------------------------- the stage


def _existing_questions(paths: list[str]) -> list[str]:
    """The user-turn texts of existing data rows (any format prepare reads), for the duplicate gate."""
    if not paths:
        return []
    from seektune.data.formats import FormatError, to_record
    from seektune.data.io import RawRow, read_rows

    questions = []
    for item in read_rows(paths):
        if isinstance(item, RawRow):
            try:
                record = to_record(item.data, item.origin)
            except FormatError:
                continue
            users = [m["content"] for m in record.get("messages", []) if m["role"] == "user"]
            questions.extend(users[-1:])
    return questions


def _drop_duplicates(kept: list[tuple[Item, dict]], existing: list[str], threshold: float
                     ) -> tuple[list[tuple[Item, dict]], list[tuple[Item, dict, str]]]:
    from seektune.data.dedup import near_duplicate_pairs, normalise

    questions = [record["messages"][0]["content"] for _, record in kept]
    texts = questions + existing
    duplicate_of: dict[int, str] = {}
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):  # exact duplicates after normalisation
        key = normalise(text)
        if key in seen and i < len(questions):
            duplicate_of[i] = texts[seen[key]]
        elif key in seen and seen[key] < len(questions):
            duplicate_of.setdefault(seen[key], text)
        seen.setdefault(key, i)
    for i, j, _ in near_duplicate_pairs(texts, threshold=threshold):
        if j < len(questions) and i not in duplicate_of:
            duplicate_of.setdefault(j, texts[i])  # the later synthetic row goes
        elif i < len(questions) and j >= len(questions):
            duplicate_of.setdefault(i, texts[j])  # a synthetic row repeating existing data goes
    keep = [pair for i, pair in enumerate(kept) if i not in duplicate_of]
    dropped = [(kept[i][0], kept[i][1], duplicate_of[i]) for i in sorted(duplicate_of)]
    return keep, dropped


def _judge(teacher: SynthTeacher, cache: ReplyCache, kept: list[tuple[Item, dict]]
           ) -> tuple[list[tuple[Item, dict]], list[tuple[Item, dict, str]]]:
    """Keep the rows the teacher, asked as a judge, says the chunk supports (refusals are not judged)."""
    judged = [(item, record) for item, record in kept if item.kind != "out_of_scope"]
    requests = [Request(prompts.judge_prompt(item.source.text, record["messages"][0]["content"],
                                             record["messages"][1]["content"], item.language))
                for item, record in judged]
    verdicts = {}
    for request, reply, error in teacher.ask(requests, cache):
        verdicts[request.key] = (reply or "").strip().lower()
    dropped = []
    keep = [(item, record) for item, record in kept if item.kind == "out_of_scope"]
    for (item, record), request in zip(judged, requests):
        verdict = verdicts.get(request.key, "")
        if verdict.startswith(("yes", "是")):
            keep.append((item, record))
        else:
            dropped.append((item, record, verdict[:80] or "no verdict"))
    keep.sort(key=lambda pair: pair[0].index)
    return keep, dropped


def run(recipe: Recipe) -> Path:
    """Synthesise rows from ``synth.documents`` into ``<output_dir>/synth/``; returns the run directory."""
    from seektune.data.io import write_jsonl
    from seektune.data.review import ReviewStore
    from seektune.docs import chunk_document, read_documents

    spec = recipe.synth
    if spec is None:
        raise SynthError("the recipe has no synth: section; add one with at least documents: (a list of files or "
                         "directories) (see examples/customer-service/synth.yaml)")
    run_dir = run_of(recipe)
    run_dir.synth.mkdir(parents=True, exist_ok=True)
    run_dir.save_recipe(recipe)

    documents, failures = read_documents(spec.documents)
    for failure in failures:
        print(f"seektune: skipping {failure['document']}: {failure['reason']} ({failure['detail']})")
    if not documents:
        raise SynthError(f"no readable document in {', '.join(spec.documents)}" +
                         (f" ({len(failures)} could not be read; see above)" if failures else ""))
    tokenizer = student_tokenizer(recipe)  # chunks are sized in the student's tokens
    chunks_by_document = {d.name: chunk_document(d, tokenizer, spec.chunk_tokens, spec.overlap) for d in documents}
    if spec.max_chunks:
        budget = spec.max_chunks
        for name, chunks in chunks_by_document.items():
            chunks_by_document[name], budget = chunks[:budget], max(0, budget - len(chunks))
    all_chunks = [c for chunks in chunks_by_document.values() for c in chunks]
    write_jsonl(run_dir.synth_chunks, [{"id": c.id, "document": c.document, "page": c.page, "heading": c.heading,
                                        "sha256": c.sha256, "text": c.text} for c in all_chunks])
    items = plan(recipe, documents, chunks_by_document)
    by_key_items: dict[int, Item] = {id(item.request): item for item in items}

    teacher = SynthTeacher(spec, recipe.model.dtype, recipe.model.trust_remote_code)
    cache = ReplyCache(run_dir.synth_cache)
    for item in items:
        item.request.key = teacher.key(item.request)
    cached = sum(1 for item in items if item.request.key in cache.replies)
    print(f"seektune: synth - {len(documents)} documents, {len(all_chunks)} chunks, {len(items)} prompts "
          f"({cached} answered before) to {teacher.label}; answers {spec.answer_mode}")

    all_texts = [c.text for c in all_chunks]
    common = gates.common_words(all_texts)
    kept: list[tuple[Item, dict]] = []
    dropped: list[tuple[Item, str, dict]] = []
    errors: list[tuple[Item, str]] = []
    reasons: Counter = Counter()
    with tqdm(total=len(items), desc="synth", unit="row") as bar:
        for request, reply, error in teacher.ask([item.request for item in items], cache):
            item = by_key_items[id(request)]
            if error is not None:
                errors.append((item, error))
                reasons["teacher_error"] += 1
            else:
                record, reason, details = build_row(item, reply, spec, all_texts, teacher.label, common)
                if record is not None:
                    kept.append((item, record))
                else:
                    dropped.append((item, reason, details))
                    reasons[reason] += 1
            bar.update(1)
            bar.set_postfix(kept=len(kept), dropped=sum(reasons.values()), refresh=False)
    kept.sort(key=lambda pair: pair[0].index)
    organisation = spec.organisation or qgen.organisation_of(  # from sentences: not the heading path lines
        [sentence.text for text in all_texts for sentence in gates.sentences(text)])
    templated = _template_rows(items, kept, spec, all_texts, teacher.label, common, organisation) \
        if spec.templates and spec.answer_mode == "extractive" else []
    kept = sorted(kept + templated, key=lambda pair: pair[0].index)
    kept, duplicates = _drop_duplicates(kept, _existing_questions(spec.dedup_against), spec.dedup_threshold)
    for item, record, match in duplicates:
        dropped.append((item, "duplicate", {"question": record["messages"][0]["content"], "duplicate_of": match}))
        reasons["duplicate"] += 1
    if spec.judge and kept:
        kept, unsupported = _judge(teacher, cache, kept)
        for item, record, verdict in unsupported:
            dropped.append((item, "judge_unsupported", {"question": record["messages"][0]["content"],
                                                        "answer": record["messages"][1]["content"],
                                                        "verdict": verdict}))
            reasons["judge_unsupported"] += 1

    records = [record for _, record in kept]
    write_jsonl(run_dir.synth / "rows.jsonl", [flat_row(r) for r in records])
    added = ReviewStore(run_dir.review_store).add(records)
    rejects = [{"origin": f["document"], "step": "read", "reason": f["reason"], "detail": f["detail"], "row": None}
               for f in failures]
    rejects += [{"origin": item.source.origin, "step": "synth", "reason": reason, "detail": item.kind, "row": details}
                for item, reason, details in sorted(dropped, key=lambda d: d[0].index)]
    rejects += [{"origin": item.source.origin, "step": "synth", "reason": "teacher_error", "detail": error,
                 "row": None} for item, error in errors]
    write_jsonl(run_dir.synth_rejects, rejects)
    summary = _summary(documents, failures, all_chunks, items, cached, records, reasons, teacher, spec, added,
                       run_dir, len(templated))
    run_dir.synth_summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    _print_summary(summary, run_dir)
    return run_dir.path


def _summary(documents, failures, chunks, items, cached, records, reasons, teacher, spec, added, run_dir: RunDir,
             templated: int):
    return {
        "documents": [{"name": d.name, "language": d.language} for d in documents],
        "unreadable_documents": failures,
        "chunks": len(chunks),
        "prompts": len(items),
        "prompts_cached": cached,
        "generated": len(items) - reasons.get("teacher_error", 0),
        "kept": len(records),
        "template_questions": templated,  # rows whose question is a template (none of the teacher's passed)
        "dropped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "kept_by_kind": dict(Counter(r["meta"]["kind"] for r in records)),
        "new_in_review_store": added,
        "teacher": teacher.label,
        "answer_mode": spec.answer_mode,
        "prompt_version": prompts.PROMPT_VERSION,
        "rows": str(run_dir.synth / "rows.jsonl"),
        "review_store": str(run_dir.review_store),
        "rejects": str(run_dir.synth_rejects),
    }


def _print_summary(summary: dict[str, Any], run_dir: RunDir) -> None:
    dropped = ", ".join(f"{reason} {count}" for reason, count in summary["dropped"].items()) or "none"
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["kept_by_kind"].items()) or "none"
    templated = f", {summary['template_questions']} with template questions" if summary["template_questions"] else ""
    print(f"seektune: synth - generated {summary['generated']}, kept {summary['kept']} ({kinds}{templated}); "
          f"dropped: {dropped}")
    if summary["unreadable_documents"]:
        print(f"seektune: {len(summary['unreadable_documents'])} documents could not be read (listed in "
              f"{run_dir.synth_rejects})")
    print(f"seektune: rows in {summary['rows']}; review them: seektune review {run_dir.path}")
    print(f"seektune: then train on the reviewed rows with data.paths: [{run_dir.review_store.resolve()}]")
