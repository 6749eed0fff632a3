"""The prepare stage: raw files -> clean, de-duplicated, leak-free splits and a data card.

    seektune prepare examples/customer-service/recipe.yaml

read -> format -> chunk documents -> clean -> filter -> over-length -> de-duplicate ->
balance -> split -> augment (train only) -> leakage audit -> write.

Every row read is either kept (in exactly one split) or rejected with its origin, step
and reason in ``<run>/data/rejects.jsonl``; rows created along the way (document chunks,
augmentations, up-sampled copies) are counted as added, and
``kept + rejected == read + added`` is asserted before anything is written.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from seektune.data.card import length_stats, write_card
from seektune.data.formats import FormatError, to_record, with_reasoning
from seektune.data.io import RawRow, Reject, read_rows, write_jsonl
from seektune.data.split import SPLITS, split_by_group, split_by_ratio
from seektune.recipe import DataSpec, Recipe
from seektune.runs import RunDir, run_of

log = logging.getLogger(__name__)
PROGRESS_FROM = 2000  # rows; below this every step takes well under a second


def _progress(items, desc: str):
    """A progress bar over a step's rows when there are enough rows for the step to take a while."""
    from tqdm.auto import tqdm

    items = list(items)
    return tqdm(items, desc=desc, unit="row", disable=len(items) < PROGRESS_FROM)


class OverlengthError(ValueError):
    pass


def load_records(spec: DataSpec) -> tuple[list[dict[str, Any]], list[Reject], int]:
    """All rows of the data paths as records; unreadable or malformed rows as rejects."""
    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    read = 0
    from tqdm.auto import tqdm

    # delay: no bar (and no "read: 0row" line) unless reading takes more than two seconds
    for item in tqdm(read_rows(spec.paths), desc="read", unit="row", mininterval=2.0, delay=2.0, leave=False):
        read += 1
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        assert isinstance(item, RawRow)
        try:
            records.append(to_record(item.data, item.origin, fmt=spec.format, columns=spec.columns,
                                     meta_fields=spec.meta_fields, system_prompt=spec.system_prompt))
        except FormatError as exc:
            rejects.append(Reject(item.origin, "format", exc.reason, exc.detail, item.data))
    return records, rejects, read


def target_tokenizer(recipe: Recipe):
    """The model's tokenizer with its chat template, for token filters and length checks; None if unavailable."""
    from seektune.models.load import family_of, load_tokenizer, resolve_model_path

    try:
        path = resolve_model_path(recipe.model.name)
        return load_tokenizer(path, family_of(recipe.model.name, path), recipe.model.chat_template,
                              recipe.model.trust_remote_code)
    except Exception as exc:  # offline hub id, missing package: token steps are skipped, and said so
        log.warning("no tokenizer for %s (%s); token-count filters and length checks are skipped",
                    recipe.model.name, exc)
        return None


def _reject(record: dict[str, Any], step: str, reason: str, detail: str) -> Reject:
    return Reject(record["meta"].get("origin", "?"), step, reason, detail, record)


def _text_of(record: dict[str, Any], on: str = "conversation", with_rejected: bool = False) -> str:
    """The text rows are compared on: a text record's text, the whole conversation, or its user turns.

    ``with_rejected`` (de-duplication) adds a preference pair's rejected answer: pairs that share a prompt
    and a chosen answer but reject different answers are different rows (feedback exports make many)."""
    from seektune.data.dedup import dedup_text

    if "text" in record:
        return record["text"]
    if on == "prompt":
        text = "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")
    else:
        text = dedup_text(record)
    return f"{text}\n{record['rejected']}" if with_rejected and "rejected" in record else text


def _preview(record: dict[str, Any], limit: int = 160) -> str:
    text = _text_of(record).replace("\n", " / ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Ledger:
    """Counts after each step, rejects, and rows added along the way."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.rejects: list[Reject] = []
        self.added = 0

    def step(self, name: str, rows: int, note: str = "") -> None:
        self.steps.append({"step": name, "rows": rows, "note": note})
        log.info("%-10s %6d rows %s", name, rows, note)


def _preference_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """A preference pair that cleaning left unusable (rejected emptied, or now equal to the chosen answer)."""
    from seektune.data.formats import check_preference

    try:
        check_preference(record)
    except FormatError as exc:
        return exc.reason, exc.detail
    return None


def _filter_and_check_length(records, spec: DataSpec, tokenizer, ledger: Ledger,
                             lengths: dict[int, int], seen: list | None = None) -> list[dict[str, Any]]:
    """Filters, then the rendered-length check; each kept record's token count goes into ``lengths``
    (keyed by ``id(record)``) so the data card does not render it a second time, and every checked
    conversation's ``(language, tokens, characters)`` into ``seen`` (the card's length fit)."""
    from seektune.data.filters import FilterConfig, filter_reason
    from seektune.data.render import RenderError, render_record
    from seektune.text import script_language_of

    config = FilterConfig(**spec.filters.model_dump(exclude={"overlength"}))
    kept = []
    for record in _progress(records, "filter"):
        if "messages" in record:
            verdict = filter_reason(record, config, tokenizer) or _preference_problem(record)
            if verdict is not None:
                reason, detail = verdict if isinstance(verdict, tuple) else (verdict.reason, verdict.detail)
                ledger.rejects.append(_reject(record, "filter", reason, detail))
                continue
        if tokenizer is not None:
            try:
                length = len(render_record(tokenizer, record)["input_ids"])
            except RenderError as exc:
                ledger.rejects.append(_reject(record, "render", exc.reason, exc.detail))
                continue
            if seen is not None and "messages" in record:
                text = _text_of(record)
                seen.append((script_language_of(text), length, sum(1 for c in text if not c.isspace())))
            if length > spec.max_length and "messages" in record:
                policy = spec.filters.overlength
                detail = f"{length} tokens after rendering > data.max_length {spec.max_length}"
                if policy == "error":
                    raise OverlengthError(f"{record['meta'].get('origin')}: {detail} (filters.overlength: error)")
                if policy == "drop":
                    ledger.rejects.append(_reject(record, "filter", "too_long_rendered", detail))
                    continue
                record["meta"]["truncated"] = True  # rendered to max_length at training time
            lengths[id(record)] = length
        kept.append(record)
    return kept


def _deduplicate(records, spec: DataSpec, ledger: Ledger, card: dict[str, Any]) -> list[dict[str, Any]]:
    from seektune.data.dedup import deduplicate

    dedup = spec.dedup
    card["duplicates"] = {"exact": 0, "near": 0, "cluster_count": 0, "clusters": []}
    if not (dedup.exact or dedup.near) or len(records) < 2:
        return records
    result = deduplicate([_text_of(r, dedup.compare, with_rejected=True) for r in records], exact=dedup.exact, near=dedup.near,
                         threshold=dedup.threshold, ngram=dedup.ngram, num_perm=dedup.num_perm,
                         keep=dedup.keep, progress=len(records) > 5000)
    for duplicate in result.removed:
        record, kept = records[duplicate.index], records[duplicate.kept]
        reason = "exact_duplicate" if duplicate.kind == "exact" else "near_duplicate"
        ledger.rejects.append(_reject(record, "dedup", reason,
                                      f"duplicate of {kept['meta'].get('origin')} (similarity {duplicate.similarity:.3f})"))
        card["duplicates"][duplicate.kind] += 1
    card["duplicates"]["cluster_count"] = len(result.clusters)
    card["duplicates"]["clusters"] = [
        {"kept": records[c[0]]["meta"].get("origin"), "removed": [records[i]["meta"].get("origin") for i in c[1:]],
         "example": _preview(records[c[0]])}
        for c in result.clusters[:20]
    ]
    return [records[i] for i in result.kept]


def _augment(train: list[dict[str, Any]], spec: DataSpec, ledger: Ledger) -> list[dict[str, Any]]:
    from seektune.data import augment

    aug = spec.augment
    if aug is None:
        return train
    before = len(train)
    if aug.entities:
        train, rejects = augment.fill_templates(train, aug.entities)
        for record, reason, detail in rejects:
            ledger.rejects.append(_reject(record, "augment", reason, detail))
        ledger.added += len(train) - before + len(rejects)
    new: list[dict[str, Any]] = []
    if aug.expand:
        new += augment.expand_terms(train, aug.expand, aug.per_row, aug.seed)
    if aug.synonyms:
        new += augment.swap_synonyms(train, aug.synonyms, aug.per_row, aug.seed)
    if aug.paraphrase is not None:
        para = aug.paraphrase
        if para.endpoint:
            from seektune.models.endpoint import ChatEndpoint

            endpoint = ChatEndpoint(para.endpoint, para.endpoint_model, para.api_key_env)
            generate = lambda prompt: endpoint.chat([{"role": "user", "content": prompt}], temperature=0.8)  # noqa: E731
        elif para.model:
            generate = augment.local_generator(para.model)
        else:
            raise ValueError("data.augment.paraphrase needs a generator: set .endpoint (an OpenAI-compatible URL) "
                             "or .model (a local model); or remove the paraphrase section")
        paraphrased, failures = augment.paraphrase(train, generate, para.per_row)
        for record, reason, detail in failures:
            log.warning("paraphrase failed for %s: %s", record["meta"].get("origin"), detail)
        new += paraphrased
    ledger.added += len(new)
    train = train + new
    ledger.step("augment", len(train), f"+{len(train) - before} augmented train rows")
    return train


def _leakage_audit(splits, spec: DataSpec, ledger: Ledger, card: dict[str, Any]):
    from seektune.data.dedup import cross_split_pairs

    card["leakage"], card["leakage_removed"] = [], spec.leakage.remove
    if not spec.leakage.check:
        return splits
    texts = {name: [_text_of(r, spec.dedup.compare) for r in splits[name]] for name in SPLITS}
    pairs = cross_split_pairs(texts, threshold=spec.leakage.threshold, ngram=spec.dedup.ngram,
                              num_perm=spec.dedup.num_perm)
    leaked: dict[str, set[int]] = {name: set() for name in SPLITS}
    for pair in pairs:
        record, other = splits[pair.split][pair.index], splits[pair.other_split][pair.other_index]
        card["leakage"].append({"split": pair.split, "origin": record["meta"].get("origin"),
                                "other_split": pair.other_split, "other_origin": other["meta"].get("origin"),
                                "kind": pair.kind, "similarity": pair.similarity})
        if spec.leakage.remove and pair.index not in leaked[pair.split]:
            leaked[pair.split].add(pair.index)
            ledger.rejects.append(_reject(record, "leakage", f"leak_{pair.kind}",
                                          f"{pair.split} row duplicates {pair.other_split} row "
                                          f"{other['meta'].get('origin')} (similarity {pair.similarity:.3f})"))
    return {name: [r for i, r in enumerate(rows) if i not in leaked[name]] for name, rows in splits.items()}


def run(recipe: Recipe) -> Path:
    """Read, clean, filter, de-duplicate, balance, split, augment and audit the data; returns the run directory."""
    from seektune.data.clean import make_cleaner
    from seektune.data.documents import chunk_documents

    spec = recipe.data
    if not spec.paths:
        raise ValueError("the recipe has no data.paths; add the files to train on")
    run = run_of(recipe)
    run.save_recipe(recipe)
    ledger, card = Ledger(), {}
    records, read_rejects, read = load_records(spec)
    ledger.rejects.extend(read_rejects)
    ledger.step("read", read)
    ledger.step("format", len(records), f"{len(read_rejects)} unreadable or malformed")
    tokenizer = target_tokenizer(recipe)

    if any(r["meta"].get("document") for r in records):
        before = len(records)
        records = chunk_documents(records, tokenizer, spec.documents.chunk_tokens, spec.documents.overlap)
        ledger.added += len(records) - before
        ledger.step("chunk", len(records), "documents split into token-bounded chunks")
    cleaner = make_cleaner(spec.clean)
    records = [cleaner(r) if "messages" in r else {**r, "text": cleaner.clean_text(r["text"])}
               for r in _progress(records, "clean")]
    card["clean_changed"] = dict(cleaner.changed)
    ledger.step("clean", len(records), ", ".join(f"{k}: {v}" for k, v in cleaner.changed.items() if v))
    if spec.reasoning != "keep":  # before the length checks: they measure what will be trained and asked
        records = [with_reasoning(r, spec.reasoning) for r in records]
    # keyed by id(): every record that passes the filters stays referenced (in a split or in
    # ledger.rejects) until the card is written, so no id is reused by a later record
    rendered_lengths: dict[int, int] = {}
    seen_lengths: list[tuple[str, int, int]] = []
    records = _filter_and_check_length(records, spec, tokenizer, ledger, rendered_lengths, seen_lengths)
    if seen_lengths:
        from seektune.data.language_fit import length_fit

        card["length_fit"] = length_fit(seen_lengths, spec.max_length)
        card["length_fit_model"] = recipe.model.name
        card["length_fit_settings"] = {"max_length": spec.max_length, "overlength": spec.filters.overlength}
    ledger.step("filter", len(records))
    records = _deduplicate(records, spec, ledger, card)
    ledger.step("dedup", len(records))
    if spec.balance is not None:
        from seektune.data.balance import balance

        b = spec.balance
        records, dropped, added = balance(records, b.by, b.ratios, b.mode, b.seed)
        for record in dropped:
            ledger.rejects.append(_reject(record, "balance", "downsampled", f"{b.by} over its ratio {b.ratios}"))
        ledger.added += len(added)
        ledger.step("balance", len(records))
    if not records:
        write_jsonl(run.rejects, [r.to_dict() for r in ledger.rejects])
        reasons = ", ".join(f"{k}: {v}" for k, v in Counter(r.reason for r in ledger.rejects).items())
        raise ValueError(f"no usable rows in {spec.paths}: all {read} were rejected ({reasons}); "
                         f"see {run.rejects}")

    split = spec.split
    ratios = (split.train, split.val, split.test)
    if split.group_by:
        splits = split_by_group(records, split.group_by, ratios, split.seed)
    else:
        splits = split_by_ratio(records, ratios, split.seed, split.stratify_by)
    ledger.step("split", len(records), ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    splits["train"] = _augment(splits["train"], spec, ledger)
    splits = _leakage_audit(splits, spec, ledger, card)
    ledger.step("leakage", sum(len(v) for v in splits.values()), f"{len(card['leakage'])} cross-split pairs")

    kept = sum(len(rows) for rows in splits.values())
    rejected = len(ledger.rejects)
    assert kept + rejected == read + ledger.added, (
        f"row accounting broke: kept {kept} + rejected {rejected} != read {read} + added {ledger.added}")
    for name in SPLITS:
        write_jsonl(run.split(name), splits[name])
    write_jsonl(run.rejects, [r.to_dict() for r in ledger.rejects])
    if recipe.task == "classification" and recipe.method.name != "linear" and tokenizer is not None:
        _measure_language_fit(card, splits, tokenizer, recipe.model.name)
    _write_card(card, splits, ledger, read, kept, tokenizer, run, spec, rendered_lengths)
    summary = {
        "read": read, "added": ledger.added, "kept": kept, "rejected": rejected,
        "rejected_by_reason": dict(Counter(r.reason for r in ledger.rejects)),
        "splits": {name: len(splits[name]) for name in SPLITS},
        "sources": spec.paths,
    }
    if any(part["rows"] for part in card.get("truncated", {}).values()):
        summary["truncated"] = card["truncated"]  # per split: rows cut to data.max_length, tokens cut off
    if "length_fit" in card:
        summary["length_fit"] = card["length_fit"]  # per language: tokens per character, rows over max_length
        summary["length_fit_model"] = card["length_fit_model"]
        summary["length_fit_settings"] = card["length_fit_settings"]
    if "language_fit" in card:
        summary["language_fit"] = card["language_fit"]
        summary["language_fit_model"] = card["language_fit_model"]
    run.data_summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return run.path


def _measure_language_fit(card: dict[str, Any], splits, tokenizer, model: str) -> None:
    """The encoder's [UNK] rate and tokens per character per language of the kept texts, into the card
    (whose page warns about a poorly covered language; so does `seektune prepare`'s summary)."""
    from seektune.data.language_fit import language_fit

    texts = [r["text"] for rows in splits.values() for r in rows if "text" in r]
    card["language_fit"] = language_fit(texts, tokenizer)
    card["language_fit_model"] = model


def _write_card(card, splits, ledger: Ledger, read: int, kept: int, tokenizer, run: RunDir, spec: DataSpec,
                known_lengths: dict[int, int]):
    from seektune.data.render import render_record

    def tokens(record) -> int:
        if id(record) in known_lengths:  # rendered during the length check; augmented rows are new
            return known_lengths[id(record)]
        if tokenizer is None:
            return len(_text_of(record).split())
        return len(render_record(tokenizer, record)["input_ids"])

    rendered = {name: [tokens(r) for r in _progress(rows, f"card: {name} lengths")] for name, rows in splits.items()}
    # what training sees: a truncated row is its first max_length tokens (render.py cuts the end)
    lengths = {name: [min(n, spec.max_length) for n in values] for name, values in rendered.items()}
    card["truncated"] = {name: {"rows": sum(n > spec.max_length for n in values),
                                "tokens_cut": sum(max(0, n - spec.max_length) for n in values)}
                         for name, values in rendered.items()}
    card["max_length"] = spec.max_length
    card["accounting"] = {"read": read, "added": ledger.added, "kept": kept, "rejected": len(ledger.rejects)}
    card["steps"] = ledger.steps
    card["rejected_by_reason"] = dict(Counter(f"{r.step}/{r.reason}" for r in ledger.rejects))
    card["splits"] = {name: {"rows": len(rows), "tokens": length_stats(lengths[name])} for name, rows in splits.items()}
    field = spec.split.stratify_by or (spec.balance.by if spec.balance else None) or "category"
    card["categories"] = {name: dict(Counter(str(r["meta"].get(field)) for r in rows if field in r["meta"]))
                          for name, rows in splits.items()}
    ranked = sorted(((lengths[n][i], r) for n, rows in splits.items() for i, r in enumerate(rows)),
                    key=lambda pair: pair[0])
    summarise = lambda pairs: [{"tokens": t, "origin": r["meta"].get("origin"), "text": _preview(r)} for t, r in pairs]  # noqa: E731
    card["longest"] = summarise(ranked[::-1][:5])
    card["shortest"] = summarise(ranked[:5])
    card["token_unit"] = "tokens" if tokenizer is not None else "words (no tokenizer)"
    write_card(card, run)


def rejects_of(run_dir: Path | RunDir) -> list[dict[str, Any]]:
    path = RunDir(run_dir).rejects
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def record_late_rejects(run: RunDir, stage: str, rejects: list[Reject]) -> dict[str, Any]:
    """Rows a later stage could not use (e.g. too long once rendered for training): into ``rejects.jsonl``
    and the data summary, so ``kept + rejected == read + added`` still holds after training.

    ``stage`` names the stage ("render", "preference"); each reject's ``step`` is ``<stage>:<split>``.
    The stage's earlier rejects are replaced, so running it again counts each row once. Only the
    prepared splits (train, val, test) move the accounting; a derived split's rejects (e.g.
    ``render:train.distilled``) are listed and counted under ``derived_rejects``.
    """
    recorded = rejects_of(run)
    previous = [r for r in recorded if r.get("step", "").split(":")[0] == stage]
    kept_rejects = [r for r in recorded if r.get("step", "").split(":")[0] != stage]
    everything = kept_rejects + [r.to_dict() for r in rejects]
    if not previous and not rejects:
        return {}
    write_jsonl(run.rejects, everything)
    if not run.data_summary.is_file():
        return {}
    summary = json.loads(run.data_summary.read_text(encoding="utf-8"))

    def by_split(rows) -> Counter:
        return Counter(r["step"].split(":", 1)[1] for r in rows)

    before, after = by_split(previous), by_split([r.to_dict() for r in rejects])
    derived = summary.setdefault("derived_rejects", {})
    for split in set(before) | set(after):
        change = after[split] - before[split]
        if split in summary.get("splits", {}):
            summary["splits"][split] -= change
            summary["kept"] -= change
            summary["rejected"] += change
        else:
            derived[split] = derived.get(split, 0) + change
    summary["derived_rejects"] = {split: n for split, n in derived.items() if n}
    if not summary["derived_rejects"]:
        summary.pop("derived_rejects")
    counted = [r for r in everything if ":" not in r["step"] or r["step"].split(":", 1)[1] in summary["splits"]]
    summary["rejected_by_reason"] = dict(Counter(r["reason"] for r in counted))
    run.data_summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary
