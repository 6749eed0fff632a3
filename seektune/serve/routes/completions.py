"""``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI-compatible, streamed on request.

Rendering and tokenising run off the event loop (a long prompt takes a while); the rest is
``completion.py``.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from seektune.serve.completion import chat_job, respond, text_job
from seektune.serve.schemas import ChatCompletionRequest, CompletionRequest
from seektune.serve.state import ServeStateDep

router = APIRouter()


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible)")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: ServeStateDep):
    started = time.perf_counter()
    return await respond(state, await asyncio.to_thread(chat_job, state, body), request, started)


@router.post("/v1/completions", summary="Text completion (OpenAI-compatible; no chat template)")
async def completions(body: CompletionRequest, request: Request, state: ServeStateDep):
    started = time.perf_counter()
    return await respond(state, await asyncio.to_thread(text_job, state, body), request, started)
