"""The request and response bodies of the API: OpenAI's fields that seektune acts on, nothing else.

Unknown fields (``chat_template``, ``tools``, ``logit_bias``, ``adapter``...) are dropped, never
acted on, so a request cannot name a file, a template or code; ``model`` only selects among
the ids loaded at start-up. Types are strict: ``"max_tokens": "5"`` or ``"stream": "yes"`` is a
400 naming the field, never coerced (an integer is still a valid float). Limits that depend on
the server (``n`` up to ``max_n``, ``max_tokens`` up to ``max_tokens_cap``, the model ids) are
checked in ``completion.py`` and written into the OpenAPI document at start-up (``openapi.py``).

Beyond OpenAI's fields, a chat request may carry ``rag`` and ``rag_k`` (retrieval, ``retrieval.py``);
a retrieval-grounded answer carries ``citations``.

The response models exist for the OpenAPI document (what a client may rely on); the routes
build the same bodies as plain dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from seektune.serve.feedback import MAX_TEXT_CHARS
from seektune.serve.retrieval import MAX_RAG_K


def _not_text(value: Any) -> Any:
    if isinstance(value, (str, bool)):  # "5" and true are not integers; 5.0 is one, as JSON Schema has it
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def Integer(**constraints: Any) -> Any:  # noqa: N802 (a type, written like one)
    """An integer field: 5 and 5.0 pass (JSON Schema's integer), "5", 5.5 and true do not."""
    return Annotated[int, Strict(False), Field(**constraints), BeforeValidator(_not_text)]


class _Body(BaseModel):
    # Unknown OpenAI fields (tools, logit_bias, user, ...) and anything else are dropped, never acted on;
    # strict: a string is never coerced to a number or a boolean.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, strict=True)


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
    temperature: float | None = Field(None, ge=0, le=2, description=(
        "0 = greedy. Default 1 (0.6 for a reasoning model: DeepSeek-R1's recommendation)."))
    top_p: float | None = Field(None, ge=0, le=1, description="Default 1 (0.95 for a reasoning model).")
    n: Integer(ge=1) | None = Field(None, description="Choices per request, at most the server's max_n.")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        None, description="Up to 4 strings that end a choice (not returned).")
    seed: Integer() | None = Field(None, description="Any integer; the same seed and request give the same answer.")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, description=(
        "The conversation. A last message from the assistant is continued: its text is the start of "
        "the answer (a prefix), and the response holds only what the model adds to it."))
    max_tokens: Integer(ge=1) | None = None
    max_completion_tokens: Integer(ge=1) | None = None
    # seektune's own fields (the openai client sends them with extra_body)
    rag: bool | None = Field(None, description=(
        "Answer from the server's document index (`seektune serve --rag INDEX`): the last user message is the "
        "query and its passages go into that message. Default: on when the server has an index. false turns it "
        "off for this request (the response then has no `citations`); true on a server without an index is a "
        "400 (`rag_unavailable`)."))
    rag_k: Integer(ge=1, le=MAX_RAG_K) | None = Field(None, description=(
        "Passages to retrieve for this request (default: the server's --rag-k)."))


class CompletionRequest(SamplingFields):
    prompt: str = Field(min_length=1, description="Text to continue; no chat template is applied.")
    max_tokens: Integer(ge=1) | None = 16


class FeedbackRequest(_Body):
    id: str = Field(min_length=1, max_length=128, description="A completion id returned by this server.")
    rating: Literal["up", "down"]
    # regex_engine: Python's \S is str.isspace's complement, the store's own test of "empty"
    model_config = ConfigDict(regex_engine="python-re")

    correction: str | None = Field(None, pattern=r"\S", max_length=MAX_TEXT_CHARS, description="A better answer.")
    comment: str | None = Field(None, pattern=r"\S", max_length=MAX_TEXT_CHARS)
    choice: Integer(ge=0) = Field(0, description="Which choice of an n > 1 completion is rated (its index).")


# ---------------------------------------------------------------- responses (for the OpenAPI document)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AnswerMessage(_Out):
    role: Literal["assistant"]
    content: str
    reasoning_content: str | None = Field(None, description="A reasoning model's <think> part, when it has one.")


class _Choice(_Out):
    index: int
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatChoice(_Choice):
    message: AnswerMessage


class TextChoice(_Choice):
    text: str


class _Completion(_Out):
    id: str
    created: int
    model: str
    usage: Usage


class Citation(_Out):
    number: int = Field(description="The passage's [n] in the prompt.")
    chunk_id: str = Field(description="The chunk's id in the index, e.g. handbook.md#c12.")
    document: str
    position: int
    page: int | None
    heading: str | None
    score: float = Field(description="Reciprocal rank fusion of the dense and lexical ranks.")
    dense: float | None
    lexical: float | None
    preview: str = Field(description="The chunk's first 200 characters.")


class ChatCompletion(_Completion):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    citations: list[Citation] | None = Field(None, description=(
        "Only when the answer was retrieval-grounded (`serve --rag`): the passages put into the prompt, "
        "[1] first; empty when nothing matched. Streamed: in the last chunk before [DONE]."))


class TextCompletion(_Completion):
    object: Literal["text_completion"]
    choices: list[TextChoice]


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class Retrieval(_Out):
    enabled: Literal[True]
    k: int = Field(description="Passages per question unless a request sets rag_k.")
    documents: int
    chunks: int


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]
    retrieval: Retrieval | None = Field(None, description="Only on a server started with --rag INDEX.")


class FeedbackAck(_Out):
    ok: Literal[True]


class Health(_Out):
    status: Literal["ok"]
    models: list[str]


class ErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Out):
    error: ErrorDetail
