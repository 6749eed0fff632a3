"""Completion requests from body to answer: checked against the server's limits, run on the engine, answered.

    job = chat_job(state, body)                              # 400 / 404 as an APIError naming the field
    response = await respond(state, job, request, started)   # JSON, or SSE when the body says stream

Shared by ``/v1/chat/completions`` and ``/v1/completions`` (``routes/completions.py``). Every
function takes the app's `ServeState`, so each can be called (and tested) without an app.
A greedy answer may come from the response cache; every answer is recorded in the feedback
store before the client sees it end (it may rate it at once).

With retrieval (``serve --rag``), a chat answer carries ``citations``, a list of the passages put
into the prompt, each ``Hit.citation()`` plus its ``number`` ([n] in the prompt): in the JSON body
as a top-level field, in a stream on the last chunk before [DONE] (see `stream`). No retrieval
(``rag: false``, or a server without an index): no ``citations`` field at all; an empty list means
retrieval ran and found nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from seektune.data.render import continuation_ids, encode_user_text, with_special_tokens
from seektune.models.registry import R1_SAMPLING
from seektune.serve.catalog import Catalog
from seektune.serve.errors import APIError, error_body
from seektune.serve.feedback import StoredChoice
from seektune.serve.generation import EngineError, SamplingParams
from seektune.serve.reasoning import ThinkSplitter
from seektune.serve.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields
from seektune.serve.state import ServeState

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A validated completion request, ready for the engine."""

    kind: Literal["chat", "text"]
    model: str
    adapter: str | None
    messages: list[dict[str, str]]  # what feedback records (a text prompt as one user message)
    prompt_ids: list[int]
    params: SamplingParams
    in_reasoning: bool
    stream: bool
    include_usage: bool
    prefix: str = ""  # a chat request's final assistant message: the answer's start, continued
    citations: list[dict[str, Any]] | None = None  # --rag: the passages in the prompt (None: no retrieval ran)

    def splitter(self) -> ThinkSplitter | None:
        """A chat answer's reasoning / content splitter, past the prefix (whose pieces `prefix_parts` has)."""
        if self.kind != "chat":
            return None
        splitter = ThinkSplitter(self.in_reasoning)
        splitter.feed(self.prefix)
        return splitter

    def prefix_parts(self) -> tuple[str, str]:
        """The prefix split as the answer is: (content, reasoning) it contributes to a stored choice."""
        parts = {"content": "", "reasoning_content": ""}
        for kind, text in ThinkSplitter(self.in_reasoning).feed(self.prefix) if self.prefix else []:
            parts[kind] += text
        return parts["content"], parts["reasoning_content"]


def _plain(message: ChatMessage) -> dict[str, str]:
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    return {"role": "system" if message.role == "developer" else message.role, "content": content or ""}


@dataclass
class Choice:
    """One choice of an answer as it grows: content and reasoning pieces, tokens, finish reason."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0

    def text(self) -> str:
        return "".join(self.content)

    def reasoning_text(self) -> str | None:
        return "".join(self.reasoning) or None


# ---------------------------------------------------------------- checking a request


def resolve_model(catalog: Catalog, name: str) -> str | None:
    """The adapter key of a served model id; 404 for any other name (a path included)."""
    if name not in catalog.routes:
        raise APIError(404, f"The model {name!r} does not exist; GET /v1/models lists the served ids.",
                       code="model_not_found", param="model")
    return catalog.routes[name]


def sampling_params(state: ServeState, body: SamplingFields, prompt_len: int, requested: int | None,
                    param: str) -> SamplingParams:
    """The request's sampling fields checked against the server's limits (400 naming the field)."""
    settings, engine = state.settings, state.engine
    n = body.n or 1
    if n > settings.max_n:
        raise APIError(400, f"n is {n}; this server allows at most {settings.max_n}.", code="above_server_limit",
                       param="n")
    for name in ("max_tokens", "max_completion_tokens"):  # each one given is checked, not only the one used
        asked = getattr(body, name, None)
        if asked is not None and asked > settings.max_tokens_cap:
            raise APIError(400, f"{name} is {asked}; this server allows at most {settings.max_tokens_cap}.",
                           code="above_server_limit", param=name)
    if prompt_len > settings.max_prompt_tokens:
        raise APIError(400, f"The prompt has {prompt_len} tokens; this server allows at most "
                            f"{settings.max_prompt_tokens}.", code="context_length_exceeded", param=param)
    room = engine.context_length - prompt_len if engine.context_length else settings.max_tokens_cap
    if room < 1:
        raise APIError(400, f"The prompt has {prompt_len} tokens, the model's whole context is "
                            f"{engine.context_length}.", code="context_length_exceeded", param=param)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, "stop takes at most 4 strings.", code="above_server_limit", param="stop")
    default_t, default_p = (R1_SAMPLING["temperature"], R1_SAMPLING["top_p"]) if state.reasoning else (1.0, 1.0)
    return SamplingParams(
        max_tokens=min(requested or settings.max_tokens_cap, room),
        temperature=default_t if body.temperature is None else body.temperature,
        top_p=default_p if body.top_p is None else body.top_p,
        seed=None if body.seed is None else body.seed % 2**63,  # any integer; engines take a non-negative int64
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=tuple(s for s in stop if s),
        n=n,
    )


def tokens_of(tokenizer, text: str, special: bool) -> list[int]:
    """A raw prompt's token ids, its control-token strings as plain text (BOS/EOS only where the
    tokenizer adds them itself, with ``special``); 400 for text the tokenizer cannot encode."""
    try:
        ids = encode_user_text(tokenizer, text) if text else tokenizer(text, add_special_tokens=special)["input_ids"]
    except Exception as err:  # e.g. a lone surrogate the tokenizer cannot encode
        raise APIError(400, f"The text cannot be tokenized: {err}", code="invalid_text", param="prompt") from err
    return with_special_tokens(tokenizer, ids) if special and text else ids


def retrieve(state: ServeState, body: ChatCompletionRequest,
             messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, Any]] | None]:
    """``(prompt messages, citations)``: with the server's index (unless the request says ``rag: false``) the
    last user message holds its passages (``retrieval.py``); else the messages as they are and None."""
    if body.rag is False:
        return messages, None
    if state.retriever is None:
        if body.rag:
            raise APIError(400, "rag is true, but this server was started without --rag INDEX, so it has no "
                                "documents to retrieve from; leave rag out or set it to false.",
                           code="rag_unavailable", param="rag")
        return messages, None
    try:
        return state.retriever.ground(messages, body.rag_k)
    except Exception as err:  # e.g. the index directory was removed under the running server
        log.exception("retrieval failed")
        raise APIError(500, f"Retrieval from the document index failed: {err}", "server_error",
                       "retrieval_failed") from err


def chat_job(state: ServeState, body: ChatCompletionRequest) -> Job:
    """A chat request rendered with the model's chat template (and the run's system prompt), checked.
    A last assistant message is continued (see ``render.continuation_ids``). With retrieval, the prompt's
    last user message holds the passages; ``job.messages`` (what feedback records) keeps the question."""
    adapter = resolve_model(state.catalog, body.model)
    messages = [_plain(m) for m in body.messages]
    system = state.catalog.system_prompts.get(body.model)
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    prefix = messages.pop()["content"] if messages[-1]["role"] == "assistant" else ""
    prompt, citations = retrieve(state, body, messages)
    try:  # user text (and the prefix) never becomes a control token; nor does a passage (it is user text)
        ids, text = continuation_ids(state.tokenizer, prompt + [{"role": "assistant", "content": prefix}])
    except (TypeError, UnicodeError) as err:  # e.g. a lone surrogate the tokenizer cannot encode
        raise APIError(400, f"The text cannot be tokenized: {err}", code="invalid_text", param="messages") from err
    except Exception as err:  # the chat template refused this conversation (e.g. roles out of order)
        raise APIError(400, f"The conversation cannot be rendered with the model's chat template: {err}",
                       code="invalid_conversation", param="messages") from err
    requested = body.max_completion_tokens or body.max_tokens
    params = sampling_params(state, body, len(ids), requested, "messages")
    in_reasoning = text[:len(text) - len(prefix)].rstrip().endswith(ThinkSplitter.OPEN)
    return Job("chat", body.model, adapter, messages, ids, params, in_reasoning,
               bool(body.stream), bool(body.stream_options and body.stream_options.include_usage), prefix,
               citations)


def text_job(state: ServeState, body: CompletionRequest) -> Job:
    """A plain-text request (no chat template), checked."""
    adapter = resolve_model(state.catalog, body.model)
    ids = tokens_of(state.tokenizer, body.prompt, True)
    if not ids:
        raise APIError(400, "The prompt is empty.", code="invalid_value", param="prompt")
    params = sampling_params(state, body, len(ids), body.max_tokens, "prompt")
    return Job("text", body.model, adapter, [{"role": "user", "content": body.prompt}], ids, params, False,
               bool(body.stream), bool(body.stream_options and body.stream_options.include_usage))


# ---------------------------------------------------------------- running a job


async def run_job(state: ServeState, job: Job, request: Request, started: float) -> AsyncIterator[tuple[str, Any]]:
    """Events: ("piece", (index, kind, text)), ("finish", (index, reason)); then ("done", choices)."""
    metrics, cache = state.metrics, state.cache
    metrics.prompt_tokens.inc(len(job.prompt_ids))
    choices = [Choice() for _ in range(job.params.n)]
    key = None
    if cache is not None and job.params.greedy:
        key = (job.kind, job.model, tuple(job.prompt_ids), job.params.max_tokens, job.params.stop, job.params.n,
               job.params.presence_penalty, job.params.frequency_penalty)
        hit = cache.get(key)
        (metrics.cache_misses if hit is None else metrics.cache_hits).inc()
        if hit is not None:
            metrics.ttft.observe(time.perf_counter() - started)
            for index, choice in enumerate(hit):
                if choice.reasoning:
                    yield "piece", (index, "reasoning_content", choice.reasoning_text())
                yield "piece", (index, "content", choice.text())
                yield "finish", (index, choice.finish_reason)
            yield "done", hit
            return
    splitters = [job.splitter() for _ in choices]
    handle = state.engine.submit(job.adapter, job.prompt_ids, job.params)
    gone = asyncio.Event()  # set when the client disconnects
    watcher = asyncio.create_task(_cancel_on_disconnect(request, handle, gone))
    first = True
    try:
        async for delta in handle.deltas():
            if first:
                metrics.ttft.observe(time.perf_counter() - started)
                first = False
            choice, splitter = choices[delta.index], splitters[delta.index]
            metrics.completion_tokens.inc(delta.completion_tokens - choice.tokens)
            choice.tokens = delta.completion_tokens
            if splitter is None:
                pieces = [("content", delta.text)] if delta.text else []
            else:
                pieces = splitter.feed(delta.text) + (splitter.finish() if delta.finish_reason else [])
            for kind, text in pieces:
                (choice.reasoning if kind == "reasoning_content" else choice.content).append(text)
                yield "piece", (delta.index, kind, text)
            if delta.finish_reason:
                choice.finish_reason = delta.finish_reason
                yield "finish", (delta.index, delta.finish_reason)
    finally:
        handle.cancel()  # no-op when finished; frees the rows when the client went away
        watcher.cancel()
    if gone.is_set():
        return  # the client went away: nothing to answer or cache
    if any(c.finish_reason is None for c in choices):
        raise EngineError("the engine stopped before the answer was complete")
    if key is not None:
        cache.put(key, choices)
    yield "done", choices


async def record(state: ServeState, completion_id: str, job: Job, choices: list[Choice]) -> None:
    """Keep the completion in the feedback store (its route, every choice and its finish reason), so
    `POST /v1/feedback` can rate it and an export can tell complete chat answers from the rest."""
    store = state.store
    try:  # feedback capture must never fail the completion itself
        content, reasoning = job.prefix_parts()  # a continued prefix is part of the stored answer
        first, *more = [StoredChoice(content + c.text(), (reasoning + (c.reasoning_text() or "")) or None,
                                     c.finish_reason) for c in choices]
        await asyncio.to_thread(store.record_completion, completion_id, job.model, job.messages, *first,
                                route="chat" if job.kind == "chat" else "completion", more_choices=more)
    except Exception:
        log.exception("could not record completion %s in %s", completion_id, store.path)


def usage(job: Job, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.tokens for c in choices)
    return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": completion,
            "total_tokens": len(job.prompt_ids) + completion}


async def respond(state: ServeState, job: Job, request: Request, started: float) -> Response:
    """The OpenAI-shaped answer to a job: one JSON body, or an SSE stream when it asked for one."""
    prefix = "chatcmpl-" if job.kind == "chat" else "cmpl-"
    completion_id, now = prefix + uuid.uuid4().hex, int(time.time())
    if job.stream:
        return _SSEResponse(stream(state, job, request, started, completion_id, now), media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    choices: list[Choice] = []
    try:
        async with contextlib.aclosing(run_job(state, job, request, started)) as events:
            async for event, value in events:
                if event == "done":
                    choices = value
    except EngineError as err:
        raise APIError(500, str(err), "server_error", "generation_failed") from err
    if not choices:
        return Response(status_code=499)  # the client closed the connection (nginx's code); nobody reads this
    await record(state, completion_id, job, choices)
    if job.kind == "chat":
        listed = []
        for index, c in enumerate(choices):
            message = {"role": "assistant", "content": c.text()}
            if c.reasoning_text() is not None:
                message["reasoning_content"] = c.reasoning_text()
            listed.append({"index": index, "message": message, "finish_reason": c.finish_reason,
                           "logprobs": None})
        body = {"id": completion_id, "object": "chat.completion", "created": now, "model": job.model,
                "choices": listed, "usage": usage(job, choices)}
        if job.citations is not None:
            body["citations"] = job.citations
    else:
        body = {"id": completion_id, "object": "text_completion", "created": now, "model": job.model,
                "choices": [{"index": i, "text": c.text(), "finish_reason": c.finish_reason, "logprobs": None}
                            for i, c in enumerate(choices)],
                "usage": usage(job, choices)}
    return JSONResponse(body)


async def stream(state: ServeState, job: Job, request: Request, started: float, completion_id: str, now: int):
    """SSE chunks: the role, then content / reasoning deltas and finish reasons, usage if asked, [DONE].

    A retrieval-grounded answer's ``citations`` ride on the last chunk before [DONE]: the usage chunk when
    ``stream_options.include_usage`` asked for one, else one extra chunk with ``choices: []`` (as the usage
    chunk has), after every choice's finish_reason."""
    chat = job.kind == "chat"
    base = {"id": completion_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": now, "model": job.model}

    def chunk(index: int, kind: str | None, text: str | None, finish: str | None) -> str:
        if chat:
            delta = {} if kind is None else {kind: text}
            if kind == "role":
                delta = {"role": "assistant", "content": ""}
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        return _sse({**base, "choices": [choice]})

    if chat:
        for index in range(job.params.n):
            yield chunk(index, "role", None, None)
    try:  # aclosing: a client leaving mid-stream closes run_job now, which cancels the rows
        async with contextlib.aclosing(run_job(state, job, request, started)) as events:
            async for event, value in events:
                if event == "piece":
                    index, kind, text = value
                    yield chunk(index, kind, text, None)
                elif event == "finish":
                    yield chunk(value[0], None, None, value[1])
                else:
                    await record(state, completion_id, job, value)  # before [DONE]: the client may rate it now
                    if job.include_usage or job.citations is not None:
                        last = {**base, "choices": []}
                        if job.include_usage:
                            last["usage"] = usage(job, value)
                        if job.citations is not None:
                            last["citations"] = job.citations
                        yield _sse(last)
    except EngineError as err:
        state.metrics.errors.labels("500", "generation_failed").inc()
        yield _sse(error_body(APIError(500, str(err), "server_error", "generation_failed")))
    yield _sse("[DONE]")


async def _cancel_on_disconnect(request: Request, handle, gone: asyncio.Event) -> None:
    """Cancel the handle's rows when the client disconnects (non-streaming requests too)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                handle.cancel()
                return
    except Exception:  # the request is over; nothing to watch
        return


# ---------------------------------------------------------------- server-sent events


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class _SSEResponse(StreamingResponse):
    """Closes its generator however the response ends, so a client that leaves mid-stream
    cancels its rows at once (the generator's ``finally``) instead of at garbage collection."""

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
