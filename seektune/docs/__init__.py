"""Documents for prepare, synth and rag: readers (PDF, DOCX, Markdown, HTML, text) and structure-aware chunking.

    from seektune.docs import chunk_document, read_documents
    documents, failures = read_documents(["handbook/"])        # failures: [{"document", "reason", "detail"}]
    chunks = [c for d in documents for c in chunk_document(d, tokenizer, chunk_tokens=512, overlap=64)]

This package imports only seektune.text: data, synth and rag build on it, never the other way round.
"""

from seektune.docs.chunk import Chunk, TokenCounter, chunk_document, count_tokens
from seektune.docs.read import (
    DOCUMENT_SUFFIXES,
    HEADING_SEPARATOR,
    Document,
    DocumentError,
    Section,
    find_documents,
    read_document,
    read_documents,
)

__all__ = [
    "DOCUMENT_SUFFIXES", "HEADING_SEPARATOR", "Chunk", "Document", "DocumentError", "Section", "TokenCounter",
    "chunk_document", "count_tokens", "find_documents", "read_document", "read_documents",
]
