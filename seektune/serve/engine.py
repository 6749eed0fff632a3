"""The generation engine behind `seektune serve`: batching, one adapter per request, streaming.

    engine = HFEngine(model, tokenizer, max_batch=8)   # or catalog.load_hf_engine(run_dir, ...)
    await engine.start()
    handle = engine.submit("v2", prompt_ids, SamplingParams(max_tokens=64, temperature=0))
    async for delta in handle.deltas(): ...

Requests wait in a queue. A single worker thread takes the oldest one and every other
waiting request for the same adapter, up to ``max_batch`` rows, waiting at most
``batch_wait_ms`` for more, and runs the decode loop itself over the HF model: prefill
with left padding, then one token per step for every row, reusing ``past_key_values``.
It does not call ``generate()``, because a server must push each token to its client as
it is produced (``loop.call_soon_threadsafe`` into the request's asyncio queue), drop a row
the moment its client disconnects, and let rows finish independently; ``generate()``
offers none of these per row.

Between steps, finished rows leave the batch (and the KV cache), and waiting requests for
the same adapter join it while there is room (their prompts are prefilled and their caches
left-padded to the batch's length), so a request that arrives during a long answer starts
at once instead of waiting for the whole batch (continuous batching). A request for another
adapter at the head of the queue stops new rows from joining, so the batch drains and that
adapter gets the next batch. The queue is a deque under a lock rather than an asyncio
queue because its consumer is the worker thread.

``--engine vllm`` builds `VLLMEngine` instead: the same interface (``generation.Engine``)
over vLLM's ``AsyncLLMEngine``, for CUDA machines with vLLM installed. Which model and
adapters an engine holds, and how they are loaded from run directories, is ``catalog.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from seektune.serve.generation import Delta, EngineError, GenerationHandle, SamplingParams

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- text out


class IncrementalDetokenizer:
    """Token ids in, new text out, correct for byte-level BPE and SentencePiece.

    Decodes a short window (``prefix`` .. end) and returns what it adds to the window
    without the newest tokens, so a character split across tokens is only emitted once
    complete and SentencePiece's leading-space rule sees the same first token both times.
    """

    def __init__(self, tokenizer, skip_ids: set[int]):
        self.tokenizer, self.skip_ids = tokenizer, skip_ids
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def add(self, token_id: int) -> str:
        if token_id in self.skip_ids:
            return ""
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        after = self.tokenizer.decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # mid-character: wait for the next token
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that could start a stop string (not sent yet)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


@dataclass
class _Row:
    handle: GenerationHandle
    index: int
    detok: IncrementalDetokenizer
    text: str = ""
    sent: int = 0  # characters of ``text`` delivered
    tokens: int = 0
    counts: torch.Tensor | None = None  # generated-token counts, for presence/frequency penalties
    generator: torch.Generator | None = None  # the request's (shared by its n rows); None when greedy
    finished: bool = False

    def step(self, token_id: int, eos_ids: set[int]) -> Delta | None:
        """Take one generated token; the delta to deliver (None if nothing new yet)."""
        params = self.handle.params
        self.tokens += 1
        if token_id in eos_ids:
            return self._finish("stop")
        self.text += self.detok.add(token_id)
        if params.stop:
            start = max(0, self.sent - max(len(s) for s in params.stop))
            hits = [i for i in (self.text.find(s, start) for s in params.stop if s) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                return self._finish("stop")
        if self.tokens >= params.max_tokens:
            return self._finish("length")
        end = len(self.text) - held_back(self.text, params.stop)
        if end <= self.sent:
            return None
        delta = Delta(self.index, self.text[self.sent:end], None, self.tokens)
        self.sent = end
        return delta

    def _finish(self, reason: str) -> Delta:
        self.finished = True
        delta = Delta(self.index, self.text[self.sent:], reason, self.tokens)
        self.sent = len(self.text)
        return delta


# ---------------------------------------------------------------- sampling


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop = cumulative > top_p
    drop[1:] = drop[:-1].clone()  # keep the token that crosses top_p
    drop[0] = False  # always keep the most likely token
    sorted_logits[drop] = float("-inf")
    return torch.empty_like(logits).scatter_(0, order, sorted_logits)


def next_tokens(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
    """One token per row: penalties on the logits, then greedy or seeded top-p sampling."""
    logits = logits.float()
    chosen = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.finished:
            continue
        params = row.handle.params
        penalised = row.counts is not None
        if not penalised and params.greedy:
            continue
        row_logits = logits[i]
        if penalised:
            row_logits = row_logits - params.presence_penalty * (row.counts > 0) - params.frequency_penalty * row.counts
        if params.greedy:
            chosen[i] = int(row_logits.argmax())
            continue
        probs = torch.softmax(_top_p_filter(row_logits / params.temperature, params.top_p), dim=-1)
        chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator))
    return chosen


# ---------------------------------------------------------------- the HF engine


class _Batch:
    """The rows being decoded together: their KV cache, attention mask, next positions, last logits.

    Invariant after every forward: the cache holds ``mask.shape[1]`` positions per row.
    """

    def __init__(self, rows: list[_Row], cache, mask: torch.Tensor, positions: torch.Tensor, logits: torch.Tensor):
        self.rows, self.cache, self.mask, self.positions, self.logits = rows, cache, mask, positions, logits

    def select(self, keep: list[int]) -> None:
        """Keep only these rows, and drop the leading columns no remaining row attends to."""
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows, self.mask, self.positions = [self.rows[i] for i in keep], self.mask[index], self.positions[index]
        first = int(self.mask.any(0).int().argmax())
        if first > 0 and _mergeable(self.cache):
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    def merge(self, other: _Batch) -> None:
        """Append ``other``'s rows, left-padding the shorter cache (padding is masked out)."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.logits = torch.cat([self.logits, other.logits])
        self.rows += other.rows


def _mergeable(cache) -> bool:
    """Rows can join a running batch only with plain dynamic KV layers (not sliding, linear or quantised)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


class HFEngine:
    """Batched generation over one transformers model, optionally a PeftModel with several adapters.

    ``adapter`` in `submit` is a PEFT adapter name, or None for the model without adapters.
    ``on_step(rows)`` is called for every decode step with the rows it ran (the batch-size histogram).
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 8, batch_wait_ms: float = 10,
                 on_step: Callable[[int], None] | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.batch_wait_s = max(1, max_batch), max(0.0, batch_wait_ms / 1000)
        self.on_step = on_step
        self.constraint = None  # a seektune.glossary.ForbiddenVariants: its variants are never generated
        self.device = next(model.parameters()).device
        config = getattr(model, "config", None)
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        self.eos_ids = self._eos_ids()
        think = {tokenizer.convert_tokens_to_ids(t) for t in ("<think>", "</think>")} - {tokenizer.unk_token_id}
        special = {i for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items() if added.special}
        # special tokens never reach the client, except <think> tags: the server splits on them
        self.skip_ids = (set(tokenizer.all_special_ids) | special) - think
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.active_requests = 0  # submitted and not finished (waiting or generating)
        self.cancelled_rows = 0
        self._waiting: deque[GenerationHandle] = deque()
        self._rows_left: dict[str, int] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="seektune-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def submit(self, adapter: str | None, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
        """Queue a request (call on the event loop); read the result from ``handle.deltas()``."""
        if self._thread is None or self._stopping:
            raise EngineError("the engine is not running")
        handle = GenerationHandle(uuid.uuid4().hex, adapter, list(prompt_ids), params, asyncio.get_running_loop())
        with self._cond:
            self.active_requests += 1
            self._rows_left[handle.id] = params.n
            self._waiting.append(handle)
            self._cond.notify()
        return handle

    def _done(self, handle: GenerationHandle) -> None:
        with self._cond:
            if self._rows_left.pop(handle.id, None) is None:
                return  # already finished
            self.active_requests -= 1
        handle.push(None)

    def _row_finished(self, row: _Row) -> None:
        with self._cond:
            left = self._rows_left.get(row.handle.id, 0) - 1
            self._rows_left[row.handle.id] = left
        if left <= 0:
            self._done(row.handle)

    # -- taking requests (worker thread, under self._cond)

    def _take(self, adapter: str | None, room: int, *, head_only: bool) -> list[GenerationHandle]:
        """Waiting requests for ``adapter`` that fit in ``room`` rows, oldest first.

        ``head_only`` (joining a running batch): stop at the first request for another adapter,
        so a busy adapter cannot starve the others; a new batch skips over them instead.
        """
        taken, skipped = [], deque()
        while self._waiting:
            handle = self._waiting.popleft()
            if handle.cancelled:
                self.cancelled_rows += handle.params.n
                self._rows_left.pop(handle.id, None)
                self.active_requests -= 1
                handle.push(None)
            elif handle.adapter != adapter:
                skipped.append(handle)
                if head_only:
                    break
            elif handle.params.n <= room or (not taken and room == self.max_batch):
                taken.append(handle)
                room -= handle.params.n
            else:
                skipped.append(handle)
                break
        self._waiting.extendleft(reversed(skipped))
        return taken

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                adapter = self._waiting[0].adapter
                batch = self._take(adapter, self.max_batch, head_only=False)
                deadline = time.monotonic() + self.batch_wait_s
                while sum(h.params.n for h in batch) < self.max_batch and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                    batch += self._take(adapter, self.max_batch - sum(h.params.n for h in batch), head_only=False)
            if batch:
                self._run(batch)

    # -- generation (worker thread)

    def _adapter_context(self, adapter: str | None):
        if not hasattr(self.model, "peft_config"):
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _run(self, handles: list[GenerationHandle]) -> None:
        handles = list(handles)  # grows as requests join the running batch
        try:
            with torch.inference_mode(), self._adapter_context(handles[0].adapter):
                self._decode(handles)
        except Exception as exc:  # a failed batch must end its requests, never leave them waiting
            log.exception("generation failed for a batch of %d requests", len(handles))
            for handle in handles:
                handle.push(exc)
        finally:
            for handle in handles:
                self._done(handle)  # no-op for the requests already finished

    def _prefill(self, handles: list[GenerationHandle]) -> _Batch:
        rows: list[_Row] = []
        for handle in handles:
            params = handle.params
            generator = None
            if not params.greedy:
                generator = torch.Generator(device=self.device)
                if params.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(params.seed % 2**63)
            rows += [_Row(handle, index, IncrementalDetokenizer(self.tokenizer, self.skip_ids), generator=generator)
                     for index in range(params.n)]
        width = max(len(r.handle.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row's last prompt token is in the last column
            ids = row.handle.prompt_ids
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        logits = out.logits[:, -1, :]
        for row in rows:
            if row.handle.params.presence_penalty or row.handle.params.frequency_penalty:
                row.counts = torch.zeros(logits.shape[-1], device=self.device)
        return _Batch(rows, out.past_key_values, mask, positions[:, -1], logits)

    def _decode(self, handles: list[GenerationHandle]) -> None:
        """Prefill, then one token per step for every row; rows leave when done, and new requests
        for the same adapter join between steps while there is room (continuous batching)."""
        batch = self._prefill(handles)
        adapter = handles[0].adapter
        joinable = _mergeable(batch.cache)
        compactable = hasattr(batch.cache, "batch_select_indices")  # else finished rows ride along, ignored
        while not self._stopping:
            if self.on_step is not None:
                self.on_step(len(batch.rows))
            if self.constraint is not None:
                self.constraint.apply(batch.logits, [row.detok.ids for row in batch.rows])
            tokens = next_tokens(batch.logits, batch.rows)
            for row, token in zip(batch.rows, tokens):
                if row.finished:  # only in a cache that cannot drop rows
                    continue
                if row.handle.cancelled:
                    row.finished = True
                    with self._cond:
                        self.cancelled_rows += 1
                else:
                    if row.counts is not None:
                        row.counts[token] += 1
                    delta = row.step(token, self.eos_ids)
                    if delta is not None:
                        row.handle.push(delta)
                if row.finished:
                    self._row_finished(row)
            live = [i for i, row in enumerate(batch.rows) if not row.finished]
            newcomers = []
            if joinable and len(live) < self.max_batch and self._waiting:
                with self._cond:
                    newcomers = self._take(adapter, self.max_batch - len(live), head_only=True)
                handles += newcomers
            if not live and not newcomers:
                return
            if live:
                column = torch.tensor(tokens, device=self.device)[:, None]
                if len(live) < len(batch.rows) and compactable:
                    column = column[torch.tensor(live, device=self.device)]
                    batch.select(live)
                batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
                batch.positions = batch.positions + 1
                out = self.model(input_ids=column, attention_mask=batch.mask, position_ids=batch.positions[:, None],
                                 past_key_values=batch.cache, use_cache=True)
                batch.cache, batch.logits = out.past_key_values, out.logits[:, -1, :]
            if newcomers:
                joined = self._prefill(newcomers)
                if live:
                    batch.merge(joined)
                else:
                    batch = joined


# ---------------------------------------------------------------- vLLM


class VLLMEngine:
    """The same interface over vLLM's AsyncLLMEngine (CUDA only). vLLM batches continuously itself,
    so ``max_batch`` becomes ``max_num_seqs``; LoRA adapters are served through its LoRA support."""

    def __init__(self, model_path: str, tokenizer, adapters: dict[str, Path], *, max_batch: int,
                 context_length: int | None):
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        args = AsyncEngineArgs(model=model_path, enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
                               max_num_seqs=max_batch, trust_remote_code=False)
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.tokenizer, self.context_length = tokenizer, context_length
        self.loras = {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}
        self.active_requests = self.cancelled_rows = self.queue_depth = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def submit(self, adapter: str | None, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
        from vllm import SamplingParams as VSampling

        handle = GenerationHandle(uuid.uuid4().hex, adapter, list(prompt_ids), params, asyncio.get_running_loop())
        sampling = VSampling(n=params.n, max_tokens=params.max_tokens, temperature=params.temperature,
                             top_p=params.top_p, seed=params.seed, stop=list(params.stop) or None,
                             presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)
        task = asyncio.get_running_loop().create_task(self._run(handle, sampling))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    async def _run(self, handle: GenerationHandle, sampling) -> None:
        self.active_requests += 1
        sent = [0] * handle.params.n
        try:
            stream = self.engine.generate({"prompt_token_ids": handle.prompt_ids}, sampling, handle.id,
                                          lora_request=self.loras.get(handle.adapter))
            async for output in stream:
                if handle.cancelled:
                    await self.engine.abort(handle.id)
                    self.cancelled_rows += handle.params.n
                    break
                for choice in output.outputs:
                    text = choice.text[sent[choice.index]:]
                    sent[choice.index] = len(choice.text)
                    reason = choice.finish_reason if choice.finish_reason in ("stop", "length") else None
                    if text or reason:
                        handle.queue.put_nowait(Delta(choice.index, text, reason, len(choice.token_ids)))
        except Exception as exc:
            handle.queue.put_nowait(exc)
        finally:
            self.active_requests -= 1
            handle.queue.put_nowait(None)
