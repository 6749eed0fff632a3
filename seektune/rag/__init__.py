"""Retrieval: an index over documents (dense + lexical, fused) and the prompt that cites its passages."""

from seektune.rag.embed import DEFAULT_ENCODER, HashingEmbedder
from seektune.rag.index import Hit, Index, RagIndexError, lexical_tokens

__all__ = ["DEFAULT_ENCODER", "HashingEmbedder", "Hit", "Index", "RagIndexError", "lexical_tokens"]
