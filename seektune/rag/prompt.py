"""How retrieved passages reach the model: one documented template, in the question's language.

The passages go into the **user** turn, numbered, each with its source, before the question:

    Answer the question using only the passages below. Cite the passages you use by their number,
    like [1]. If the passages do not contain the answer, say that you cannot find it.

    [1] handbook.md#c12 - Shipping > Express shipping
    Express shipping costs $14.50 per order. ...

    [2] ...

    Question: How much is express shipping?

Passages are document text, so they are data: they travel in the message content, which
``seektune.data.render`` encodes with no control token matched (a passage holding ``<|im_end|>``
cannot end the turn), and never in the system prompt.
"""

from __future__ import annotations

from seektune.rag.index import Hit
from seektune.text import language_of

INSTRUCTIONS = {
    "en": "Answer the question using only the passages below. Cite the passages you use by their number, like [1]. "
          "If the passages do not contain the answer, say that you cannot find it.",
    "zh": "请只根据下面的资料回答问题，并用编号注明引用的资料，例如 [1]。如果资料中没有答案，请说明找不到。",
}
QUESTION_LABEL = {"en": "Question", "zh": "问题"}


def passage_block(hits: list[Hit]) -> str:
    parts = []
    for number, hit in enumerate(hits, start=1):
        # the heading path, unless the chunk's text starts with it already (chunks cut by seektune.docs do)
        where = f" - {hit.heading}" if hit.heading and not hit.text.lstrip().startswith(hit.heading) else ""
        parts.append(f"[{number}] {hit.chunk_id}{where}\n{hit.text.strip()}")
    return "\n\n".join(parts)


def question_turn(messages: list[dict]) -> int | None:
    """The position of the last user message: the question retrieval answers (None: there is none)."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)


def grounded(messages: list[dict], hits: list[Hit]) -> list[dict]:
    """A copy of ``messages`` whose question turn (:func:`question_turn`) holds ``hits`` as numbered passages
    before the question; the other turns as they are (earlier questions keep no passages). Used alike by
    ``serve``/``chat --rag``, ``eval --rag`` and ``data.rag``, so all three show the model the same prompt."""
    out = [dict(message) for message in messages]
    turn = question_turn(messages)
    if turn is not None:
        out[turn]["content"] = with_passages(str(messages[turn]["content"]), hits)
    return out


def with_passages(question: str, hits: list[Hit], language: str | None = None) -> str:
    """The user turn for ``question`` with ``hits`` as numbered passages; the question alone when none."""
    if not hits:
        return question
    language = language or language_of(question)
    language = language if language in INSTRUCTIONS else "en"
    return (f"{INSTRUCTIONS[language]}\n\n{passage_block(hits)}\n\n"
            f"{QUESTION_LABEL[language]}: {question}")
