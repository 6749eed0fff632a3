"""Batched greedy generation from a local model (the base, or base + adapter)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from seektune.text import split_think
from seektune.data.render import prompt_ids, prompt_text


BATCH_TOKENS = 16_384  # rows x (longest prompt + answer) per generation batch: the KV cache grows with it


def token_batches(lengths: list[int], max_rows: int, max_tokens: int, extra: int = 0,
                  order: list[int] | None = None) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches, in ``order`` (default: shortest first), of at most
    ``max_rows`` rows and at most ``max_tokens`` padded tokens, counted as rows x (longest + ``extra``).
    A single row over the budget gets a batch of its own: it is never dropped."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if order is None else order
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in order:
        width = max(widest, lengths[i] + extra)
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current, width = [], lengths[i] + extra
        current.append(i)
        widest = width
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    conversations: list[list[dict[str, Any]]],
    *,
    batch_size: int = 16,
    batch_tokens: int = BATCH_TOKENS,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str = "generating",
    progress: bool = True,
    constraint=None,
) -> list[dict[str, str | None]]:
    """Answer the last user turn of each conversation; returns ``{"answer", "reasoning"}`` per row.

    Prompts are sorted by length so each batch pads little, then put back in order; a batch holds
    at most ``batch_size`` rows and ``batch_tokens`` tokens (rows x (longest prompt + max_new_tokens)),
    so long prompts go in smaller batches instead of exhausting memory.
    Reasoning inside ``<think>`` is split off so it is never scored as the answer.
    Greedy by default; ``temperature > 0`` samples, seeded so a re-run gives the same answers.
    ``constraint`` (a :class:`seektune.glossary.ForbiddenVariants`) keeps its variants out of the answers.
    """
    prompts = [prompt_ids(tokenizer, messages) for messages in conversations]  # user text stays plain text
    lengths = [len(prompt_text(tokenizer, messages)) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    outputs: list[dict[str, str | None]] = [None] * len(prompts)  # type: ignore[list-item]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed)
    try:
        batches = token_batches([len(p) for p in prompts], batch_size, batch_tokens, max_new_tokens, order)
        for index in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            batch = tokenizer.pad({"input_ids": [prompts[i] for i in index]}, return_tensors="pt", padding=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                **sampling,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
                **({"logits_processor": [constraint.logits_processor(batch["input_ids"].shape[1])]}
                   if constraint is not None else {}),
            )
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            for i, tokens in zip(index, new_tokens):
                # an answer cut at max_new_tokens can end inside a multi-byte character
                text = tokenizer.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")
                reasoning, answer = split_think(text if "</think>" not in text or "<think>" in text else "<think>" + text)
                outputs[i] = {"answer": answer.strip(), "reasoning": reasoning}
    finally:
        tokenizer.padding_side = old_side
    return outputs
