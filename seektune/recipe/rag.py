"""The ``rag:`` section of a recipe: the documents a run answers from, and the index built from them.

    rag:
      documents: [docs/handbook.md, docs/handbook_zh.md]
      index: ../../runs/handbook-index

``seektune index RECIPE`` (and ``seektune train`` / ``run`` of a recipe whose ``data.rag`` uses it)
brings the index up to date with ``documents``; ``data.rag`` uses it when it names no index
of its own. ``serve`` / ``chat`` / ``eval`` take the index directory with ``--rag``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from seektune.recipe.base import _Section


class RagSpec(_Section):
    """Where the documents are, where their index goes, and how it is cut and embedded."""

    documents: list[str] = Field(default_factory=list, description="Files or directories of documents (.md .txt "
                                 ".pdf .docx .html), relative to the recipe file; the index holds these and no others "
                                 "(a document no longer listed is removed from it on the next build). Empty: the "
                                 "index is only read, never built from the recipe.")
    index: str = Field(..., description="The index directory, relative to the recipe file.")
    encoder: str | None = Field(None, description="Embedding model of a new index (an existing index keeps its "
                                "own): `multilingual-e5-small` (the default; English, Chinese and most languages in "
                                "one space), the embedded MiniLM `minilm-l6-v2` (English only), a "
                                "sentence-transformers directory or Hub id, or `hashing` (words only).")
    chunk_tokens: int = Field(200, gt=16, description="Chunk size of a new index, in the encoder's tokens.")
    overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of a section.")
    k: int = Field(4, gt=0, le=20, description="Passages per question for data.rag when it gives no k.")

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> "RagSpec":
        if self.overlap >= self.chunk_tokens:
            raise ValueError(f"overlap ({self.overlap}) must be below chunk_tokens ({self.chunk_tokens})")
        return self
