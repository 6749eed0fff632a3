"""Will a training step fit in memory? An estimate before training, and the settings that make it fit.

    plan = memory.plan_for(model, lengths, recipe.train, padding_free=True)   # MemoryTooSmall if nothing fits
    print(plan.describe())     # "memory: ~2.9 GB per step (8 rows of up to 1,088 tokens, ...); 21.3 GB free"

A step's memory is the model, its gradients and optimiser state (fixed), plus the activations
autograd keeps for the backward pass, which grow linearly with the tokens of the micro-batch:
on SmolLM2-135M in fp32 about 2.4 MB per token without activation checkpointing, 0.56 MB with it.
Attention adds nothing quadratic: padding-free batches run sdpa per row (``packing.py``), whose
CPU and flash kernels keep no score matrix.

``train.gradient_checkpointing: auto`` (the default) picks, in order, the first of these that
fits in the memory this process may use (see `available_bytes`):

1. the recipe's batch as it is;
2. the same batch with activation checkpointing (each layer's activations are recomputed in the
   backward pass: about a third more compute, so it is only switched on when needed);
3. checkpointing and micro-batches of fewer rows, with gradient accumulation making up the
   recipe's rows per optimiser step (same data order, same loss normalisation, same result);

and when even one row of the longest length does not fit it stops before loading the data onto
the model, with the figures and what to change. ``true`` / ``false`` force checkpointing on or
off (a batch that does not fit is still split into micro-batches). The figures are deliberately
on the safe side; ``benchmarks/long_rows.py`` measures the real peaks.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GB = 2**30
HEADROOM = 0.8  # of the available memory a step may plan to use: allocator slack, the data, the rest of Python
MIN_BUDGET = GB // 2  # the interpreter, torch and the tokenizer take about this before any model


class MemoryTooSmall(RuntimeError):
    """Even one row of the longest length does not fit in the memory this process may use."""


@dataclass(frozen=True)
class MemoryPlan:
    rows_per_step: int  # rows per optimiser step, as the recipe says (batch_size x grad_accum)
    micro_batch: int  # rows per forward/backward pass
    grad_accum: int
    checkpointing: bool
    step_tokens: int  # tokens of the largest micro-batch
    fixed_bytes: int  # model, gradients, optimiser state
    activation_bytes: int  # of the largest micro-batch
    available_bytes: int
    changed: bool  # the plan differs from what the recipe asked for

    @property
    def estimate_bytes(self) -> int:
        return self.fixed_bytes + self.activation_bytes

    def describe(self) -> str:
        how = []
        if self.checkpointing:
            how.append("activation checkpointing on")
        if self.grad_accum > 1:
            how.append(f"{self.grad_accum} passes of {self.micro_batch} rows per step")
        detail = f"; {', '.join(how)}" if how else ""
        return (f"memory: ~{self.estimate_bytes / GB:.1f} GB per step ({self.step_tokens:,} tokens in the largest "
                f"pass{detail}); {self.available_bytes / GB:.1f} GB available")


# ---------------------------------------------------------------- what this process may use


def _cgroup_room() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def _rlimit_room() -> int | None:
    """Room left under this process's address-space or data-size limit (ulimit -v / -d), or None."""
    import psutil

    rooms, info = [], psutil.Process().memory_info()
    for kind, used in ((resource.RLIMIT_AS, info.vms), (resource.RLIMIT_DATA, info.rss)):
        soft, _ = resource.getrlimit(kind)
        if soft != resource.RLIM_INFINITY:
            rooms.append(soft - used)
    return min(rooms) if rooms else None


def available_bytes() -> int:
    """Memory this process may still take: the least of the machine's available memory, a container's
    cgroup limit and the process's rlimits. ``SEEKTUNE_MEMORY_GB`` overrides it (e.g. to leave room for
    other work on the machine)."""
    override = os.environ.get("SEEKTUNE_MEMORY_GB")
    if override:
        try:
            return int(float(override) * GB)
        except ValueError as err:
            raise ValueError(f"SEEKTUNE_MEMORY_GB must be a number of GB, got {override!r}") from err
    import psutil

    rooms = [psutil.virtual_memory().available, _cgroup_room(), _rlimit_room()]
    return max(0, min(room for room in rooms if room is not None))


# ---------------------------------------------------------------- what a step takes


def _dims(config) -> tuple[int, int, int, int]:
    """(layers, hidden, intermediate, vocabulary) of a decoder's config (text config for multimodal ones)."""
    config = getattr(config, "text_config", None) or config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 768)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    experts = getattr(config, "num_experts_per_tok", None) or 1  # MoE: each token runs its routed experts
    moe = getattr(config, "moe_intermediate_size", None)
    if moe:
        intermediate = max(intermediate, moe * experts)
    return layers, hidden, intermediate, getattr(config, "vocab_size", 32000)


def activation_bytes_per_token(config, checkpointing: bool, element_bytes: int = 4) -> int:
    """Bytes a micro-batch holds per token at its peak, from the decoder's shape.

    Calibrated on SmolLM2-135M (fp32, LoRA on every linear layer, padding-free, the label-only
    head; 8 rows x 320 tokens, peak resident memory less the model): 2.4 MB per token without
    checkpointing, 0.56 MB with it. Without, every layer keeps its MLP's and attention's
    intermediates (about 7 x intermediate + 16 x hidden floats a token); with it, each layer keeps
    its input and about five layers' worth of intermediates are alive around the one being
    recomputed (the backward's gradients, the allocator's reuse)."""
    layers, hidden, intermediate, _ = _dims(config)
    per_layer = 7 * intermediate + 16 * hidden
    floats = layers * 2 * hidden + 5 * per_layer if checkpointing else layers * per_layer
    return int(floats * element_bytes)


def fixed_bytes(model) -> int:
    """The model's weights, plus gradients and AdamW's two moments for every trainable parameter, plus the
    label-only head's logits chunks (``packing.CHUNK_ELEMENTS``, a forward and a backward one)."""
    from seektune.train.packing import CHUNK_ELEMENTS

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(weights + trainable * 4 * 3 + 2 * CHUNK_ELEMENTS * 4)


def _micro_tokens(lengths: list[int], rows: int, padding_free: bool) -> int:
    """Tokens of the largest micro-batch of ``rows`` rows: the longest rows together (the length-grouped
    sampler may put them in one batch); padded batches pay the longest row for every row."""
    longest = sorted(lengths, reverse=True)[:rows]
    return sum(longest) if padding_free else longest[0] * len(longest)


def plan_for(model, lengths: list[int], train, padding_free: bool, available: int | None = None) -> MemoryPlan:
    """The first setting that fits (see the module docstring); `MemoryTooSmall` when none does."""
    available = available_bytes() if available is None else available
    budget = max(0, int(available * HEADROOM) - MIN_BUDGET)
    fixed = fixed_bytes(model)
    element = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)
    rows_per_step = train.batch_size * train.grad_accum
    choice = train.gradient_checkpointing
    options = [False, True] if choice == "auto" else [bool(choice)]

    def fits(rows: int, checkpointing: bool) -> MemoryPlan:
        tokens = _micro_tokens(lengths, rows, padding_free)
        activations = tokens * activation_bytes_per_token(model.config, checkpointing, element)
        accum = math.ceil(rows_per_step / rows)
        changed = rows != train.batch_size or (checkpointing and choice == "auto")
        return MemoryPlan(rows_per_step, rows, accum, checkpointing, tokens, fixed, activations, available, changed)

    for checkpointing in options:
        candidate = fits(train.batch_size, checkpointing)
        if candidate.estimate_bytes <= budget:
            return candidate
    checkpointing = options[-1]
    for rows in range(train.batch_size - 1, 0, -1):
        if rows_per_step % rows and rows > 1:
            continue  # keep rows per step exact: micro-batches that divide it
        candidate = fits(rows, checkpointing)
        if candidate.estimate_bytes <= budget:
            return candidate
    one = fits(1, checkpointing)
    raise MemoryTooSmall(
        f"one training row of {max(lengths):,} tokens needs ~{one.estimate_bytes / GB:.1f} GB "
        f"({fixed / GB:.1f} GB model and optimiser, {one.activation_bytes / GB:.1f} GB activations"
        f"{' with checkpointing' if checkpointing else ''}), and this process has {available / GB:.1f} GB available "
        f"(planning with {HEADROOM:.0%} of it). Lower data.max_length (with data.filters.overlength: truncate), "
        "use a smaller model or method: qlora, or free memory"
        + ("; train.gradient_checkpointing: auto would also help" if not checkpointing else "") + ".")
