"""Documents (.txt, .md, .pdf, .docx) -> text chunks of a bounded token count for continued pre-training."""

from __future__ import annotations

import copy
from typing import Any


def chunk_text(text: str, tokenizer, chunk_tokens: int = 512, overlap: int = 64) -> list[str]:
    """Split at paragraph boundaries where possible; a paragraph longer than a chunk is cut by tokens.

    Consecutive chunks share ``overlap`` tokens of context so no sentence is only ever seen cut.
    Without a tokenizer, whitespace-separated words stand in for tokens.
    """
    if overlap >= chunk_tokens:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk_tokens ({chunk_tokens})")
    if tokenizer is None:
        encode = lambda s: s.split()  # noqa: E731
        decode = lambda ids: " ".join(ids)  # noqa: E731
    else:
        encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        decode = lambda ids: tokenizer.decode(ids)  # noqa: E731
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        length = len(encode(paragraph))
        if length > chunk_tokens:
            if current:
                chunks.append("\n\n".join(current))
                current, size = [], 0
            ids = encode(paragraph)
            step = chunk_tokens - overlap
            for start in range(0, len(ids), step):
                chunks.append(decode(ids[start : start + chunk_tokens]))
                if start + chunk_tokens >= len(ids):
                    break
            continue
        if size + length > chunk_tokens and current:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += length
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def chunk_documents(records: list[dict[str, Any]], tokenizer, chunk_tokens: int, overlap: int) -> list[dict[str, Any]]:
    """Replace each document record by its chunks, each with origin ``file#chunkN``."""
    out = []
    for record in records:
        if not record.get("meta", {}).get("document"):
            out.append(record)
            continue
        for number, chunk in enumerate(chunk_text(record["text"], tokenizer, chunk_tokens, overlap), 1):
            new = copy.deepcopy(record)
            new["text"] = chunk
            new["meta"]["origin"] = f"{record['meta']['origin']}#chunk{number}"
            out.append(new)
    return out
