"""What passes between the HTTP routes and an engine: sampling parameters in, text deltas out.

    handle = engine.submit(adapter, prompt_ids, SamplingParams(max_tokens=64, temperature=0))
    async for delta in handle.deltas(): ...     # Delta(index, text, finish_reason, completion_tokens)
    handle.cancel()                             # the client went away: its rows are dropped

`Engine` is the interface the routes rely on; ``engine.py`` implements it over transformers
(`HFEngine`) and vLLM (`VLLMEngine`). This module imports neither torch nor a model library,
so the routes and their unit tests (with a fake engine) load in a moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class EngineError(RuntimeError):
    """Generation failed inside the engine (not the client's fault)."""


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    n: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5  # below this, logits / temperature overflows: treat as greedy


@dataclass
class Delta:
    """New text of one choice. ``finish_reason`` is set on a choice's last delta."""

    index: int
    text: str
    finish_reason: str | None = None  # "stop" | "length"
    completion_tokens: int = 0  # tokens generated for this choice so far


@dataclass
class GenerationHandle:
    """One submitted request: read its deltas, or cancel it (its rows are dropped at the next step)."""

    id: str
    adapter: str | None
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def push(self, item: Delta | BaseException | None) -> None:
        """Deliver from any thread; ``None`` ends the stream."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is gone, nobody is listening
            pass

    async def deltas(self) -> AsyncIterator[Delta]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise EngineError(f"generation failed: {item}") from item
            yield item


class Engine(Protocol):
    """What the HTTP routes use of an engine (`HFEngine`, `VLLMEngine`, or a test's fake)."""

    tokenizer: object  # a transformers tokenizer: the routes render and tokenise prompts with it
    context_length: int | None  # the model's whole context in tokens; None when unknown
    active_requests: int  # submitted and not finished
    cancelled_rows: int  # rows dropped because their client went away
    queue_depth: int  # requests waiting for a batch

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def submit(self, adapter: str | None, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle: ...
