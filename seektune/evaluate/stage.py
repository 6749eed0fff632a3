"""The eval stage: answer a test set with two systems, score both, compare them row by row.

    seektune eval runs/customer-service                               # tuned vs its base model
    seektune eval runs/r16 --against runs/r8                          # two runs
    seektune eval runs/r16 --against http://127.0.0.1:8000/v1 --against-model gpt-x   # vs an endpoint
    seektune eval smollm2-135m-instruct --data test.jsonl --out runs/eval-base      # any model
    seektune eval runs/customer-service --rag runs/handbook-index \
        --out-of-scope examples/customer-service/data/out_of_scope.jsonl      # four systems: +/- retrieval

A *system* is a local model (a run's tuned model, its base, any model the loader knows)
or an OpenAI-compatible endpoint. The subject is always called ``tuned`` and the
baseline ``base`` in the files, with ``metrics["systems"]`` saying what each one is.

Writes ``<run>/eval/metrics.json`` (per system: scores, ``by_language``, ``by_category``,
perplexity on the references, reasoning length; ``ci`` with bootstrap intervals; ``ab``
and optionally ``judge`` win rates), ``<run>/eval/samples.jsonl`` (both answers per row)
and ``<run>/eval/cache.jsonl``: answers keyed by system, settings and prompt, so a re-run
regenerates only what changed.

With ``--rag INDEX`` each system also answers with passages retrieved from the index (``base+rag``,
``tuned+rag``), and ``metrics["rag"]`` holds the four systems side by side: fact accuracy, ROUGE-L,
faithfulness, citation accuracy, retrieval recall@k and, with ``--out-of-scope FILE``, how often each
declines a question the documents do not answer (:mod:`seektune.evaluate.retrieval`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seektune.data.io import read_jsonl, write_jsonl
from seektune.evaluate.cache import AnswerCache, shared_answers_dir
from seektune.evaluate.generate import BATCH_TOKENS, generate_answers, token_batches
from seektune.evaluate.scoring import (
    ab_scores, add_term_errors, confidence_intervals, per_row_scores, score_systems, slices, use_glossary,
)
from seektune.models.load import load_model
from seektune.recipe import Recipe
from seektune.runs import RunDir, fingerprint, is_run_dir, load_tuned
from seektune.text import tokens_of

log = logging.getLogger(__name__)

Answer = dict[str, str | None]  # {"answer", "reasoning"}


# ---------------------------------------------------------------- systems


@dataclass
class GenOptions:
    batch_size: int = 16
    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_tokens: int = BATCH_TOKENS
    forbidden: tuple[str, ...] = ()  # variants decoding makes impossible (eval.enforce_glossary / --glossary)

    def identity(self) -> dict[str, Any]:
        """What changes an answer (batch size does not)."""
        sampled = self.temperature > 0
        identity = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                    "top_p": self.top_p if sampled else 1.0, "seed": self.seed if sampled else 0}
        return {**identity, "forbidden": sorted(self.forbidden)} if self.forbidden else identity


@dataclass
class System:
    """Something that answers conversations. ``key`` identifies it for the answer cache."""

    label: str
    key: str
    answer: Callable[[list[list[dict[str, Any]]], GenOptions, str], list[Answer]]
    perplexity: Callable[[list[dict[str, Any]], int], float | None] = field(default=lambda rows, batch: None)
    reasoning: bool = False  # its template opens <think> for every answer (R1-style): R1 sampling by default
    shared: bool = False  # an untrained model: its answers hold for every run on it (the shared answer cache)


def _local_system(model, tokenizer, label: str, key: str, context=contextlib.nullcontext, max_length=None,
                  shared: bool = False) -> System:
    constraints: dict[tuple[str, ...], Any] = {}

    def answer(conversations, options: GenOptions, desc: str) -> list[Answer]:
        constraint = None
        if options.forbidden:
            from seektune.glossary import ForbiddenVariants

            constraint = constraints.setdefault(options.forbidden, ForbiddenVariants(tokenizer, options.forbidden))
        with context():
            return generate_answers(model, tokenizer, conversations, batch_size=options.batch_size,
                                    batch_tokens=options.batch_tokens,
                                    max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                                    top_p=options.top_p, seed=options.seed, desc=desc, constraint=constraint)

    def perplexity(rows, batch_size: int) -> float | None:
        with context():
            return reference_perplexity(model, tokenizer, rows, batch_size=batch_size, max_length=max_length)

    from seektune.models.registry import opens_think

    return System(label, key, answer, perplexity, reasoning=opens_think(tokenizer), shared=shared)


def _merged_lora(model):
    """Generation with LoRA merged into the weights skips the per-layer adapter matmuls."""
    is_lora = getattr(model, "peft_type", None) is not None and str(model.peft_type).endswith("LORA") \
        and hasattr(model, "merge_adapter")

    @contextlib.contextmanager
    def context():
        if is_lora:
            model.merge_adapter()
        try:
            yield
        finally:
            if is_lora:
                model.unmerge_adapter()

    return context


def _model_key(name: str, path: str, template: str | None) -> str:
    local = Path(path)
    weights = fingerprint(local) if local.is_dir() else name
    return f"model:{name}:{weights}:{hashlib.sha256((template or '').encode()).hexdigest()[:12]}"


def run_systems(run_dir: Path, want_base: bool) -> tuple[Recipe, System, System | None]:
    """A run's tuned model and (when asked) its base, sharing one copy of the base weights."""
    recipe, loaded, model = load_tuned(run_dir)
    template = loaded.tokenizer.chat_template
    max_length = recipe.data.max_length
    trained_dir = RunDir(run_dir).trained_weights()
    base_key = _model_key(recipe.model.name, loaded.path, template)
    tuned = _local_system(model, loaded.tokenizer, f"{run_dir} ({recipe.method.name} on {recipe.model.name})",
                          f"{base_key}+trained:{fingerprint(trained_dir)}", _merged_lora(model), max_length)
    base = None
    if want_base:
        # the plain base model (no adapter merged in or started from) answers alike in every run on it: its
        # answers go to the shared cache too, keyed with the weights' dtype and device, which decide them as well
        shared = not recipe.model.merge and not recipe.model.adapter
        weights = next(loaded.model.parameters())
        key = f"{base_key}:{weights.dtype}:{weights.device.type}"
        if hasattr(model, "disable_adapter"):
            base = _local_system(model, loaded.tokenizer, f"{recipe.model.name} (untuned)", key,
                                 model.disable_adapter, max_length, shared=shared)
        else:
            base = _local_system(loaded.model, loaded.tokenizer, f"{recipe.model.name} (untuned)", key,
                                 max_length=max_length, shared=shared)
    return recipe, tuned, base


def model_system(name: str, recipe: Recipe) -> System:
    loaded = load_model(name, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code)
    return _local_system(loaded.model, loaded.tokenizer, name,
                         _model_key(name, loaded.path, loaded.tokenizer.chat_template),
                         max_length=recipe.data.max_length)


def endpoint_system(url: str, model: str, workers: int = 4, api_key_env: str | None = "OPENAI_API_KEY") -> System:
    """A served model as a system: requests go out ``workers`` at a time, with a progress bar."""
    from tqdm.auto import tqdm

    from seektune.models.endpoint import ChatEndpoint
    from seektune.text import split_think

    endpoint = ChatEndpoint(url, model, api_key_env)

    def answer(conversations, options: GenOptions, desc: str) -> list[Answer]:
        def one(messages):
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]] \
                if messages[-1]["role"] == "assistant" else messages
            content, reasoning = endpoint.complete(prompt, temperature=options.temperature, top_p=options.top_p,
                                                   max_tokens=options.max_new_tokens,
                                                   seed=options.seed if options.temperature > 0 else None)
            if reasoning is None and "</think>" in content:
                reasoning, content = split_think(content if "<think>" in content else "<think>" + content)
            return {"answer": content.strip(), "reasoning": reasoning}

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(one, conversations), total=len(conversations), desc=desc, unit="row"))

    return System(f"{model} at {url}", f"endpoint:{url}:{model}", answer)


def is_url(text: str) -> bool:
    return bool(re.match(r"https?://", text))


# ---------------------------------------------------------------- perplexity on the references


def reference_perplexity(model, tokenizer, rows: list[dict[str, Any]], *, batch_size: int = 16,
                         max_length: int | None = None) -> float | None:
    """exp(mean negative log-likelihood of the reference answers' tokens), teacher-forced.

    Tokens are those the trainer takes loss on (:func:`seektune.data.render.render`), so the
    figure is comparable with the eval loss during training: ``log(perplexity)`` is that loss.
    """
    import math

    from seektune.data.render import RenderError, render

    rendered = []
    for row in rows:
        try:
            rendered.append(render(tokenizer, row["messages"], max_length))
        except RenderError:
            continue  # a prompt longer than max_length has no answer tokens to score
    sums = answer_nll(model, tokenizer, rendered, batch_size)
    count = sum(n for _, n in sums)
    return math.exp(sum(total for total, _ in sums) / count) if count else None


def answer_nll(model, tokenizer, rendered: list[dict[str, list[int]]], batch_size: int = 16,
               batch_tokens: int = BATCH_TOKENS) -> list[tuple[float, int]]:
    """Per rendered row, (summed negative log-likelihood, count) of its labelled tokens, teacher-forced in
    padded batches of similar length, at most ``batch_size`` rows and ``batch_tokens`` padded tokens each
    (shared by the perplexity above and the curriculum's loss score).

    The LM head scores only the positions some row of the batch takes loss on (``logits_to_keep``): the
    full logits of long rows (rows x length x vocabulary floats) would dwarf the model."""
    import torch
    import torch.nn.functional as F

    from seektune.data.render import IGNORE_INDEX

    results: list[tuple[float, int]] = [(0.0, 0)] * len(rendered)
    if not rendered:
        return results
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    keep_supported = True
    with torch.inference_mode():
        for chunk in token_batches([len(r["input_ids"]) for r in rendered], batch_size, batch_tokens):
            batch = [rendered[i] for i in chunk]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch], device=device)
            labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in batch],
                                  device=device)
            mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch],
                                device=device)
            # position p predicts token p + 1: keep the positions whose next token is labelled in any row
            keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
            logits = None
            if keep_supported:
                try:
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
                except TypeError:  # a model whose forward has no logits_to_keep: score every position
                    logits = None
                if logits is not None and logits.shape[1] != len(keep):  # took the argument and ignored it
                    logits = logits[:, :-1][:, keep]
                keep_supported = logits is not None
            if logits is None:
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][:, keep]
            logits = logits.float()
            targets = labels[:, keep + 1]
            losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
            counts = (targets != IGNORE_INDEX).sum(dim=1)
            for row, total, count in zip(chunk, losses.sum(dim=1).tolist(), counts.tolist()):
                results[row] = (total, count)
    return results


# ---------------------------------------------------------------- reasoning


def reasoning_summary(answers: list[Answer]) -> dict[str, Any] | None:
    """How much an R1-style model thought: rows with reasoning and their mean length in words."""
    lengths = [len(tokens_of(a["reasoning"])) for a in answers if a.get("reasoning")]
    if not lengths:
        return None
    return {"rows": len(lengths), "mean_words": sum(lengths) / len(lengths), "max_words": max(lengths)}



# ---------------------------------------------------------------- the LLM judge


def judge_rows(spec, rows, base: list[str], tuned: list[str]) -> list[str]:
    """Per row "win" / "tie" / "loss" of tuned against base by the judge (asked in both orders),
    or "error: ..." when the judge's reply named no verdict. An unreachable judge stops the eval."""
    from tqdm.auto import tqdm

    from seektune.evaluate.compare import JudgeReplyError, judge_both_orders
    from seektune.models.endpoint import ChatEndpoint

    endpoint = ChatEndpoint(spec.endpoint, spec.model, spec.api_key_env)

    def one(i: int) -> str:
        question = next(m["content"] for m in reversed(rows[i]["messages"]) if m["role"] == "user")
        rubric = f"{spec.rubric}\n\nReference answer from the business:\n{rows[i]['messages'][-1]['content']}"
        try:
            return judge_both_orders(lambda m: endpoint.chat(m, temperature=0.0, max_tokens=512),
                                     question, base[i], tuned[i], rubric)
        except JudgeReplyError as exc:
            return f"error: {exc}"

    with ThreadPoolExecutor(max_workers=spec.workers) as pool:
        return list(tqdm(pool.map(one, range(len(rows))), total=len(rows), desc="judge", unit="row"))


# ---------------------------------------------------------------- inputs


def read_eval_data(path: Path, spec) -> list[dict[str, Any]]:
    """Test rows from any file `seektune prepare` reads (mapped by the recipe's ``data.format``,
    ``data.columns`` and ``data.meta_fields``), or from a split it wrote.

    Every row must end in an assistant answer (the reference); a row that does not stops
    the eval with its file:line, so no row is dropped unseen.
    """
    from seektune.data.formats import FormatError, to_record
    from seektune.data.io import RawRow, read_rows

    records, problems = [], []
    for item in read_rows([path]):
        if not isinstance(item, RawRow):
            problems.append(f"{item.origin}: {item.reason} - {item.detail}")
            continue
        try:
            fmt = "auto" if "messages" in item.data else spec.format
            record = to_record(item.data, item.origin, fmt=fmt, columns=spec.columns, meta_fields=spec.meta_fields,
                               system_prompt=spec.system_prompt)
        except FormatError as exc:
            problems.append(f"{item.origin}: {exc.reason} - {exc.detail}")
            continue
        if isinstance(item.data.get("meta"), dict):  # a split written by `seektune prepare`
            record["meta"] = {**item.data["meta"], **{k: v for k, v in record["meta"].items() if k != "origin"}}
            record["meta"].setdefault("origin", item.origin)
        if "messages" not in record or record["messages"][-1]["role"] != "assistant":
            problems.append(f"{item.origin}: no reference answer (the last turn must be the assistant's)")
            continue
        records.append(record)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{path}: {len(problems)} rows cannot be evaluated:\n  {shown}{more}")
    if not records:
        raise ValueError(f"{path} holds no rows to evaluate")
    return records


def results_dir(target: str | Path, out: str | Path | None = None) -> Path:
    """Where an eval of ``target`` writes: the run itself, else ``out``, else ``runs/eval-<model>``."""
    if is_run_dir(target):
        return Path(target)
    if out:
        return Path(out)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(target).rstrip("/").split("/")[-1]).strip("-") or "model"
    return Path("runs") / f"eval-{slug}"


# ---------------------------------------------------------------- the stage


def run(
    target: str | Path,
    *,
    against: str | None = None,
    against_model: str = "default",
    data: str | Path | None = None,
    out: str | Path | None = None,
    judge: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    report: bool = True,
    rag: str | Path | Any | None = None,
    rag_k: int = 4,
    out_of_scope: str | Path | None = None,
    glossary: str | Path | None = None,
) -> dict[str, Any]:
    """Generate and score; returns the metrics dict also written to ``<run>/eval/metrics.json``.

    ``target``: a run directory or a model. ``against``: None (a run's base model, when
    ``eval.compare_base``), ``"none"``, a run directory, a model, or an endpoint URL.
    ``judge``: overrides of the recipe's ``eval.judge`` (e.g. ``{"endpoint": url}``).
    ``rag``: a retrieval index (its directory, or an open ``seektune.rag.Index``): every system also answers
    with ``rag_k`` passages from it, and ``metrics["rag"]`` holds the four-way table
    (:mod:`seektune.evaluate.retrieval`); ``out_of_scope``: test rows the documents do not answer, for each
    system's refusal rate (needs ``rag``). ``glossary``: a glossary file whose forbidden variants decoding
    makes impossible (as ``eval.enforce_glossary``); ``term_errors`` counts them either way.
    """
    from seektune.recipe import JudgeSpec, apply_overrides, validate_recipe

    target = str(target)
    run_dir = results_dir(target, out)
    run = RunDir(run_dir)
    if is_run_dir(target):
        recipe = run.recipe()
    else:
        if data is None:
            raise ValueError(f"{target} is not a run directory; to evaluate a model give its test data with --data")
        recipe = Recipe()
    if overrides:
        scoped = [o if o.startswith(("eval.", "data.", "model.")) else f"eval.{o}" for o in overrides]
        recipe = validate_recipe(apply_overrides(recipe.model_dump(), scoped), "eval overrides")
    spec = recipe.eval
    if judge:
        settings = {**(spec.judge.model_dump() if spec.judge else {}), **judge}
        if not settings.get("endpoint"):
            raise ValueError("a judge needs an endpoint: pass --judge URL or set eval.judge.endpoint in the recipe")
        spec.judge = JudgeSpec.model_validate(settings)

    if data is not None:
        rows = read_eval_data(Path(data), recipe.data)
        split_name = str(data)
    else:
        split_file = run.split(spec.split)
        if not split_file.is_file():
            raise FileNotFoundError(f"{split_file} not found; run `seektune prepare` first or pass --data")
        rows = [row for row in read_jsonl(split_file) if "messages" in row]
        split_name = spec.split
    if spec.max_rows:
        rows = rows[: spec.max_rows]
    if not rows:
        raise ValueError(f"the {split_name} split of {run_dir} is empty; nothing to evaluate")
    if out_of_scope is not None and rag is None:
        raise ValueError("--out-of-scope compares refusals with and without retrieval; give the index with --rag")
    if rag_k < 1:
        raise ValueError(f"--rag-k must be at least 1, not {rag_k}")
    index = None
    if rag is not None:  # before any generation: a missing index or a bad out-of-scope row stops the eval early
        from seektune.evaluate.retrieval import open_index

        index = open_index(rag)
    scope_rows = read_eval_data(Path(out_of_scope), recipe.data) if out_of_scope is not None else None
    forbidden = use_glossary(spec, glossary)

    want_run_base = against in (None, "base") and spec.compare_base
    if against == "base" and not is_run_dir(target):
        raise ValueError("--against base needs a run directory as the target")
    if is_run_dir(target):
        _, tuned, baseline = run_systems(run_dir, want_run_base)
    else:
        tuned, baseline = model_system(target, recipe), None
    if against not in (None, "base", "none"):
        if is_url(against):
            baseline = endpoint_system(against, against_model)
        elif is_run_dir(against):
            _, baseline, _ = run_systems(Path(against), want_base=False)
        else:
            baseline = model_system(against, recipe)

    from seektune.models.registry import sampling_for

    temperature, top_p, warning = sampling_for(tuned.reasoning, spec.temperature, spec.top_p)
    if warning:
        log.warning("%s", warning)
    options = GenOptions(spec.batch_size, spec.max_new_tokens, temperature, top_p, recipe.train.seed,
                         batch_tokens=spec.batch_tokens, forbidden=forbidden if spec.enforce_glossary else ())
    cache = AnswerCache(run.eval_cache, spec.cache, shared_dir=shared_answers_dir())
    conversations = [row["messages"] for row in rows]
    systems = {"tuned": tuned} if baseline is None else {"base": baseline, "tuned": tuned}
    generated: dict[str, list[Answer]] = {}
    reused: dict[str, int] = {}
    for name, system in systems.items():
        generated[name], reused[name] = cache.answers(system, conversations, options, f"{name} model")
    answers = {name: [a["answer"] or "" for a in values] for name, values in generated.items()}

    glossary = spec.glossary if isinstance(spec.glossary, list) else None
    metrics = score_systems(rows, answers, glossary)
    if forbidden:
        add_term_errors(metrics, answers, spec)
    metrics["split"] = split_name
    metrics["decoding"] = {"temperature": options.temperature, "top_p": options.top_p,
                           "reasoning_model": tuned.reasoning}
    metrics["systems"] = {name: system.label for name, system in systems.items()}
    metrics["cache"] = {"reused": reused, "generated": {k: len(rows) - v for k, v in reused.items()}}
    for name, system in systems.items():
        metrics[name]["perplexity"] = system.perplexity(rows, spec.batch_size) if spec.perplexity else None
        thinking = reasoning_summary(generated[name])
        if thinking:
            metrics[name]["reasoning"] = thinking
    metrics["ci"] = confidence_intervals(rows, answers, recipe.train.seed)
    found = None
    if index is not None:
        from seektune.evaluate.retrieval import evaluate_with_retrieval

        found = evaluate_with_retrieval(rows, systems, answers, cache, options, metrics, index, rag_k, scope_rows,
                                        out_of_scope, recipe.train.seed)
        if index is not rag:  # opened here from its directory
            index.close()

    row_scores = {name: per_row_scores(rows, values, spec.ab_metric) for name, values in answers.items()}
    verdicts = None
    if "base" in answers:
        from seektune.evaluate.compare import ab_summary, summarise_outcomes

        metrics["ab"] = ab_summary(ab_scores(row_scores["base"]), ab_scores(row_scores["tuned"]),
                                   metric_name=spec.ab_metric, bar=spec.win_bar, seed=recipe.train.seed)
        by_category = slices(rows, lambda row: row["meta"].get("category"))
        if by_category:
            metrics["ab"]["by_category"] = {}
            for cat, idx in by_category.items():
                part = ab_summary([ab_scores(row_scores["base"])[i] for i in idx],
                                  [ab_scores(row_scores["tuned"])[i] for i in idx],
                                  metric_name=spec.ab_metric, bar=spec.win_bar, seed=recipe.train.seed)
                metrics["ab"]["by_category"][cat] = {k: part[k] for k in ("n", "wins", "ties", "losses", "win_rate")}
        metrics["tuned"]["win_rate"] = metrics["ab"]["win_rate"]
        if spec.judge:
            verdicts = judge_rows(spec.judge, rows, answers["base"], answers["tuned"])
            decided = [v for v in verdicts if not v.startswith("error")]
            if not decided:
                raise ValueError(f"the judge at {spec.judge.endpoint} gave no usable verdict on any row; "
                                 f"first reply problem: {verdicts[0][7:300]}")
            metrics["judge"] = summarise_outcomes(decided, metric_name=f"judge ({spec.judge.model})",
                                                  bar=spec.win_bar, seed=recipe.train.seed)
            metrics["judge"]["errors"] = len(verdicts) - len(decided)
            metrics["tuned"]["judge_win_rate"] = metrics["judge"]["win_rate"]
    elif spec.judge:
        raise ValueError("eval.judge compares two systems, but only one was evaluated (compare_base is off "
                         "and no --against was given)")

    run.eval.mkdir(parents=True, exist_ok=True)
    run.metrics.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    samples = []
    for i, row in enumerate(rows):
        sample = {
            "origin": row["meta"].get("origin"),
            "question": next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user"),
            "reference": row["messages"][-1]["content"],
            "facts": row["meta"].get("facts") or [],
        }
        if row["meta"].get("category") is not None:
            sample["category"] = row["meta"]["category"]
        for name in answers:
            sample[name] = answers[name][i]
            sample[f"{name}_{spec.ab_metric}"] = row_scores[name][i]
            if generated[name][i].get("reasoning"):
                sample[f"{name}_reasoning"] = generated[name][i]["reasoning"]
        if found is not None:  # the passages each retrieval system was given, and its answers
            sample["retrieved"] = [hit.chunk_id for hit in found.hits[i]]
            for name, values in found.answers.items():
                sample[name] = values[i]
                if found.reasoning[name][i]:
                    sample[f"{name}_reasoning"] = found.reasoning[name][i]
        if verdicts is not None:
            sample["judge"] = verdicts[i]
        samples.append(sample)
    write_jsonl(run.samples, samples)
    if report:
        write_run_report(run_dir)
    return metrics


def write_run_report(run_dir: Path) -> Path | None:
    """``<run>/report.html`` and ``report.json`` from what the run directory holds."""
    from seektune.evaluate.report import write_report

    html_path, _ = write_report(run_dir)
    return html_path
