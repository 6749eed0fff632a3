"""Curriculum: train on easy rows first.

    train:
      curriculum: {score: length}                 # shortest rows first
      curriculum: {score: loss}                   # rows the base model already predicts well first
      curriculum: {score: loss, model: deepseek-r1-distill-qwen-1.5b}   # a reference model decides

Rows are sorted once, before rendering, and the trainer then reads them in that order
(``sequential`` sampling), epoch after epoch. Mixing tasks in given proportions is
``data.balance`` (``by: category, ratios: {...}, mode: up|down``); a ``stages:`` recipe
runs one mix after another.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from seektune.data.render import RenderError, render_record
from seektune.recipe import Recipe

log = logging.getLogger(__name__)


def row_lengths(tokenizer, records: list[dict[str, Any]], max_length: int) -> list[float]:
    """Token count of each rendered row; a row that cannot render scores +inf (it is rejected later)."""
    scores = []
    for record in records:
        try:
            scores.append(float(len(render_record(tokenizer, record, max_length)["input_ids"])))
        except RenderError:
            scores.append(math.inf)
    return scores


def row_losses(model, tokenizer, records: list[dict[str, Any]], max_length: int, batch_size: int = 16) -> list[float]:
    """Mean loss of the model on each row's labelled tokens (its answer); +inf for a row that cannot render."""
    from seektune.evaluate.stage import answer_nll

    rendered: list[dict[str, list[int]]] = []
    index: list[int] = []
    for i, record in enumerate(records):
        try:
            rendered.append(render_record(tokenizer, record, max_length))
            index.append(i)
        except RenderError:
            pass
    model.eval()
    scores = [math.inf] * len(records)
    for i, (total, count) in zip(index, answer_nll(model, tokenizer, rendered, batch_size)):
        scores[i] = total / count if count else math.inf
    return scores


def order_by_difficulty(recipe: Recipe, tokenizer, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` sorted easy -> hard (or the reverse) by the recipe's curriculum score; ties keep data order."""
    spec = recipe.train.curriculum
    if spec is None or not records:
        return records
    max_length = recipe.data.max_length
    if spec.score == "length":
        scores = row_lengths(tokenizer, records, max_length)
    else:
        from seektune.models.load import load_model

        name = spec.model or recipe.model.name
        log.info("curriculum: scoring %d rows by the loss of %s", len(records), name)
        reference = load_model(name, dtype=recipe.model.dtype, chat_template=recipe.model.chat_template,
                               trust_remote_code=recipe.model.trust_remote_code)
        scores = row_losses(reference.model, reference.tokenizer, records, max_length)
        del reference
    order = sorted(range(len(records)), key=lambda i: scores[i], reverse=spec.reverse)
    finite = [scores[i] for i in order if math.isfinite(scores[i])]
    if finite:
        log.info("curriculum: %d rows by %s, from %.3g to %.3g", len(records), spec.score, finite[0], finite[-1])
    return [records[i] for i in order]
