"""Batched greedy generation from a local model (the base, or base + adapter)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from seektune.text import split_think
from seektune.data.render import prompt_ids, prompt_text


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    conversations: list[list[dict[str, Any]]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str = "generating",
) -> list[dict[str, str | None]]:
    """Answer the last user turn of each conversation; returns ``{"answer", "reasoning"}`` per row.

    Prompts are sorted by length so each batch pads little, then put back in order.
    Reasoning inside ``<think>`` is split off so it is never scored as the answer.
    Greedy by default; ``temperature > 0`` samples, seeded so a re-run gives the same answers.
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
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            index = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [prompts[i] for i in index]}, return_tensors="pt", padding=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                **sampling,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
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
