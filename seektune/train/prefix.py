"""Shared-prefix batches: the tokens every row of a padding-free batch starts with are computed once.

    seektune train examples/customer-service/recipe.yaml                         # on (the default)
    seektune train examples/customer-service/recipe.yaml train.shared_prefix=false

Every customer-service row opens with the same chat-template header and system prompt
(20 of its 70 tokens on average). In a padding-free batch (``packing.py``) each row computes that
prefix again: same tokens, same positions, and a causal model's prefix never looks past
itself, so every row's copy has the same keys and values in every layer. ``SharedPrefixCollator``
keeps the prefix in the batch's first row only and drops it from the others; their tokens keep
their positions (``position_ids`` start at the prefix length), and ``packed_sdpa_attention``
lets each of them attend to the first row's prefix keys and values as well as to their own.
The backward pass sums every row's gradient into the one prefix, as the separate copies would
have summed into the shared weights. Loss and gradients equal the plain batch's
(``tests/e2e/test_shared_prefix.py``, within 1e-5 on the tiny Llama, Qwen2 and DeepseekV3).

Only tokens that carry no loss are shared: a prefix stops before the first labelled token of
any row (and before the token whose label would come from it), so no prediction is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# a batch key the model passes down to its attention function (transformers forwards **kwargs)
PREFIX_KEY = "shared_prefix_len"
# fewer shared tokens than this are not worth a second attention path
MIN_SHARED_TOKENS = 4


def shared_prefix_length(input_ids: torch.Tensor, labels: torch.Tensor, bounds: list[int]) -> int:
    """How many leading tokens every packed row can take from the first row without losing a prediction.

    ``input_ids`` and ``labels`` are the packed batch's one row; ``bounds`` its ``cu_seq_lens``.
    The prefix is the rows' longest common prefix, cut so that each row keeps at least one token
    and no row's label falls inside it or on the token right after it (that token would be
    predicted from the prefix's last position, which dropped rows no longer have).
    """
    starts, ends = bounds[:-1], bounds[1:]
    if len(starts) < 2:
        return 0
    first = input_ids[starts[0]:ends[0]]
    length = min(end - start for start, end in zip(starts, ends)) - 1
    for start, end in zip(starts[1:], ends[1:]):
        if length < MIN_SHARED_TOKENS:
            return 0
        differ = (input_ids[start:start + length] != first[:length]).nonzero()
        if len(differ):
            length = int(differ[0])
        labelled = (labels[start + 1:start + length + 1] != -100).nonzero()
        if len(labelled):  # labels[start + 1 + j] is scored: tokens 0..j stay
            length = int(labelled[0])
    return length if length >= MIN_SHARED_TOKENS else 0


@dataclass
class SharedPrefixCollator:
    """trl's padding-free collator, then the shared prefix dropped from every row but the first."""

    collator: Any  # trl's DataCollatorForLanguageModeling with padding_free=True

    def __getattr__(self, name: str):  # padding_free, pad_token_id, ...: the wrapped collator's
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return share_prefix(self.collator(examples))


def share_prefix(batch: dict[str, Any]) -> dict[str, Any]:
    """A padding-free batch with its shared prefix kept once (``PREFIX_KEY`` says how long), or unchanged."""
    if "cu_seq_lens_q" not in batch or batch["input_ids"].shape[0] != 1:
        return batch
    bounds = batch["cu_seq_lens_q"].tolist()
    if bounds[-1] != batch["input_ids"].shape[1]:
        return batch
    prefix = shared_prefix_length(batch["input_ids"][0], batch["labels"][0], bounds)
    if not prefix:
        return batch
    keep = torch.ones(bounds[-1], dtype=torch.bool)
    for start in bounds[1:-1]:
        keep[start:start + prefix] = False
    lengths = [end - start - (prefix if i else 0) for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))]
    out = dict(batch)
    for key in ("input_ids", "labels", "position_ids"):
        out[key] = batch[key][:, keep]
    cu_seq_lens = F.pad(torch.tensor(lengths).cumsum(0), (1, 0)).to(torch.int32)
    out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu_seq_lens
    out["max_length_q"] = max(lengths)
    out["max_length_k"] = max(lengths[0], prefix + max(lengths[1:]))
    if "seq_idx" in batch:
        out["seq_idx"] = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32),
                                                 torch.tensor(lengths))[None]
    out[PREFIX_KEY] = prefix
    return out


def attend_with_prefix(query, key, value, bounds: list[int], prefix: int, dropout: float, scaling, gqa: bool):
    """Causal sdpa per packed row, rows after the first also attending to the first row's ``prefix`` keys."""
    outputs = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        if end <= start:
            continue
        if index == 0:
            outputs.append(F.scaled_dot_product_attention(
                query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa))
            continue
        length = end - start
        keys = torch.cat([key[:, :, :prefix], key[:, :, start:end]], dim=2)
        values = torch.cat([value[:, :, :prefix], value[:, :, start:end]], dim=2)
        # query j sits at position prefix + j: it sees the whole prefix and its own row up to itself
        mask = torch.ones(length, prefix + length, dtype=torch.bool, device=query.device).tril(diagonal=prefix)
        outputs.append(F.scaled_dot_product_attention(query[:, :, start:end], keys, values, attn_mask=mask,
                                                      dropout_p=dropout, scale=scaling, enable_gqa=gqa))
    return torch.cat(outputs, dim=2)
