"""The request bodies of the API: OpenAI's fields that seektune acts on, nothing else.

Unknown fields (``chat_template``, ``tools``, ``logit_bias``, ``adapter``...) are dropped, never
acted on, so a request cannot name a file, a template or code; ``model`` only selects among
the ids loaded at start-up. Limits that depend on the server (``n`` up to ``max_n``,
``max_tokens`` up to ``max_tokens_cap``) are checked in ``completion.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # Unknown OpenAI fields (tools, logit_bias, user, ...) and anything else are dropped, never acted on.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingFields(_Body):
    # OpenAI's sampling fields, shared by both completion requests (a comment: a docstring would enter the schema)
    model: str = Field(max_length=256, description="A model id from GET /v1/models.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy. Default 1.")
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, description="Choices per request, at most the server's max_n.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end a choice (not returned).")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(SamplingFields):
    prompt: str = Field(description="Text to continue; no chat template is applied.")
    max_tokens: int | None = Field(16, ge=1)


class FeedbackRequest(_Body):
    id: str = Field(min_length=1, max_length=128, description="A completion id returned by this server.")
    rating: Literal["up", "down"]
    correction: str | None = Field(None, description="A better answer.")
    comment: str | None = None
    choice: int = Field(0, ge=0, description="Which choice of an n > 1 completion is rated (its index).")
