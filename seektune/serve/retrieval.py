"""Retrieval for ``seektune serve RUN --rag INDEX`` and ``seektune chat RUN --rag INDEX``.

    retriever = Retriever.open("runs/handbook-index", k=4)    # at start-up: a wrong path fails here, in one line
    prompt, citations = retriever.ground(messages)           # per chat request / turn

`ground` searches the index with the text of the **last user message** and replaces that
message's content by ``seektune.rag.prompt.with_passages(question, hits)``: the numbered passages
and the question, in the user turn (never the system prompt), so the passages are user text that
cannot forge a control token. The other messages are left as they are: earlier turns keep only
their questions, so a long conversation does not pile up old passages. The messages given are
not changed; the caller keeps them (the feedback store records the user's own question, not the
passage-stuffed turn, so rated answers export as clean training rows).

A citation is ``Hit.citation()`` (chunk_id, document, position, page, heading, score, dense,
lexical, preview: the first 200 characters) with ``number``: its ``[n]`` in the prompt.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from seektune.rag.index import Hit, Index
from seektune.rag.prompt import grounded, question_turn

DEFAULT_RAG_K = 4
MAX_RAG_K = 20  # passages per request: more would crowd the question out of a small model's context


def citations_of(hits: list[Hit]) -> list[dict[str, Any]]:
    """What a response cites: each hit's ``citation()`` with its number in the prompt (1, 2, ...)."""
    return [{"number": number, **hit.citation()} for number, hit in enumerate(hits, start=1)]


class Retriever:
    """An open index and how many passages a question gets; safe to call from several threads."""

    def __init__(self, index: Index, k: int = DEFAULT_RAG_K):
        check_k(k, "--rag-k")
        self.index, self.k = index, k
        self._lock = threading.Lock()  # one search at a time: the index's SQLite connection and encoder are shared

    @classmethod
    def open(cls, path: str | Path, k: int = DEFAULT_RAG_K) -> Retriever:
        """Open the index at ``path`` and load its encoder now, so a bad index fails before serving starts."""
        check_k(k, "--rag-k")
        index = Index.open(path)
        index.embedder  # noqa: B018 - loads the encoder at start-up, not on the first question
        return cls(index, k)

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says about retrieval."""
        return {"enabled": True, "k": self.k, "documents": len(self.index.documents()), "chunks": len(self.index)}

    def search(self, question: str, k: int | None = None) -> list[Hit]:
        with self._lock:
            return self.index.search(question, k or self.k)

    def ground(self, messages: list[dict[str, str]], k: int | None = None) -> tuple[list[dict[str, str]],
                                                                                   list[dict[str, Any]]]:
        """``(prompt messages, citations)``: the last user message holding its passages, and what they cite.

        No user message, or nothing found: the messages unchanged and no citations."""
        turn = question_turn(messages)
        if turn is None:
            return list(messages), []
        hits = self.search(messages[turn]["content"], k)
        return grounded(messages, hits), citations_of(hits)


def check_k(k: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_RAG_K:
        raise ValueError(f"{name} must be an integer from 1 to {MAX_RAG_K}, got {k!r}")


def source_lines(citations: list[dict[str, Any]]) -> list[str]:
    """Citations as the terminal shows them: ``[1] handbook.md#c12 - Shipping > Express (page 3)``."""
    lines = []
    for c in citations:
        heading = f" - {c['heading']}" if c.get("heading") else ""
        page = f" (page {c['page']})" if c.get("page") is not None else ""
        lines.append(f"[{c['number']}] {c['chunk_id']}{heading}{page}")
    return lines
