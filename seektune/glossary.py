"""Glossaries: a domain's terms, the variants that must never stand in for them, and decoding that obeys.

    定金, 订金, deposit with legal effect          # glossary.csv: term, forbidden variants (; between), note
    - {term: 定金, forbidden: [订金], note: deposit with legal effect}     # glossary.yaml

* :func:`read_glossary` reads a ``.txt`` (one term per line), ``.csv`` / ``.tsv`` or ``.yaml`` / ``.json`` file;
* :func:`term_errors` counts answers that use a forbidden variant (per 100 answers), for eval and the report;
* :class:`ForbiddenVariants` makes the variants impossible to emit while decoding: a token is banned
  when the bytes generated so far followed by its bytes would complete a variant. It works on the
  tokens' bytes, so every tokenisation of a variant is caught (a Chinese character split over
  byte-level tokens included), and it bans nothing at a step where no variant could be completed,
  so an answer that never came near one is unchanged token for token.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from seektune.text import normalise_for_match


class GlossaryError(ValueError):
    """A glossary file that cannot be used (what and where)."""


@dataclass(frozen=True)
class GlossaryEntry:
    term: str
    forbidden: tuple[str, ...] = ()
    note: str | None = None


def _entry(raw: Any, where: str) -> GlossaryEntry:
    if isinstance(raw, str):
        if not raw.strip():
            raise GlossaryError(f"{where}: an empty term")
        return GlossaryEntry(raw.strip())
    if not isinstance(raw, dict) or not isinstance(raw.get("term"), str) or not raw["term"].strip():
        raise GlossaryError(f"{where}: an entry is a term or {{term, forbidden: [...], note}}, got {raw!r}")
    unknown = set(raw) - {"term", "forbidden", "note"}
    if unknown:
        raise GlossaryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: term, forbidden, note)")
    forbidden = raw.get("forbidden") or []
    if isinstance(forbidden, str):
        forbidden = [forbidden]
    if not isinstance(forbidden, list) or not all(isinstance(v, str) and v.strip() for v in forbidden):
        raise GlossaryError(f"{where}: forbidden must be a list of non-empty strings, got {forbidden!r}")
    term = raw["term"].strip()
    clash = [v for v in forbidden if normalise_for_match(term) in normalise_for_match(v)
             or normalise_for_match(v) in normalise_for_match(term)]
    if clash:
        raise GlossaryError(f"{where}: the forbidden variant {clash[0]!r} and the term {term!r} contain one another, "
                            "so the term itself could never be written")
    return GlossaryEntry(term, tuple(v.strip() for v in forbidden), raw.get("note"))


def parse_entries(items: Iterable[Any], where: str) -> list[GlossaryEntry]:
    return [_entry(item, f"{where} entry {number}") for number, item in enumerate(items, start=1)]


def read_glossary(path: str | Path) -> list[GlossaryEntry]:
    """The entries of a glossary file (see the module docstring); GlossaryError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GlossaryError(f"glossary file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise GlossaryError(f"{path}: not valid {suffix[1:].upper()}: {err}") from None
        if isinstance(data, dict) and "entries" in data:
            data = data["entries"]
        if not isinstance(data, list):
            raise GlossaryError(f"{path}: a glossary is a list of entries")
        entries = parse_entries(data, str(path))
    elif suffix in (".csv", ".tsv"):
        entries = []
        reader = csv.reader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        for line, cells in enumerate(reader, start=1):
            cells = [cell.strip() for cell in cells]
            if not cells or not cells[0] or cells[0].startswith("#") or (line == 1 and cells[0].lower() == "term"):
                continue
            forbidden = [v.strip() for v in (cells[1] if len(cells) > 1 else "").replace("|", ";").split(";")]
            raw = {"term": cells[0], "forbidden": [v for v in forbidden if v]}
            if len(cells) > 2 and cells[2]:
                raw["note"] = cells[2]
            entries.append(_entry(raw, f"{path}:{line}"))
    else:  # one term per line
        entries = [GlossaryEntry(line.strip()) for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise GlossaryError(f"{path} holds no terms")
    return entries


def forbidden_variants(entries: Sequence[GlossaryEntry]) -> list[str]:
    return list(dict.fromkeys(v for entry in entries for v in entry.forbidden))


def enforced_variants(path: str | Path, entries: Sequence[GlossaryEntry] | None = None) -> list[str]:
    """The forbidden variants of the glossary at ``path`` (read unless ``entries`` are given), for decoding that
    enforces them (``--glossary`` on eval, chat and serve); GlossaryError when it forbids nothing."""
    variants = forbidden_variants(read_glossary(path) if entries is None else entries)
    if not variants:
        raise GlossaryError(f"{path} lists no forbidden variants (term,forbidden;variants,note): nothing to enforce")
    return variants


def variants_used(text: str, variants: Sequence[str]) -> list[str]:
    """The variants ``text`` uses as written (case and form count: exactly what decoding can forbid)."""
    return [v for v in variants if v in text]


def term_errors(answers: Sequence[str], entries: Sequence[GlossaryEntry]) -> dict[str, Any] | None:
    """How often answers use a forbidden variant as written (case and form count, as in decoding): ``per_100``
    answers, the answers affected, and the count per variant; None when the glossary forbids nothing."""
    variants = forbidden_variants(entries)
    if not variants:
        return None
    by_variant = {v: 0 for v in variants}
    affected = 0
    for answer in answers:
        used = variants_used(answer, variants)
        affected += bool(used)
        for variant in used:
            by_variant[variant] += 1
    return {"per_100": 100.0 * affected / len(answers) if answers else 0.0, "answers": affected, "n": len(answers),
            "by_variant": by_variant}


# ---------------------------------------------------------------- decoding


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id adds to the text (empty for special tokens): byte-level BPE tokens through
    GPT-2's alphabet, SentencePiece pieces with ``▁`` as a space and ``<0xNN>`` byte tokens as that byte."""
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    added_tokens = getattr(tokenizer, "added_tokens_decoder", {})
    # special tokens add nothing to the text (decode drops them): every one, not just bos / eos / pad
    special = set(tokenizer.all_special_ids) | {i for i, token in added_tokens.items() if token.special}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and "ByteLevel" in repr(backend.decoder)
    added = {token.content for token in added_tokens.values()}
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte -> character alphabet

    table = {char: byte for byte, char in bytes_to_unicode().items()}
    out: list[bytes] = []
    for token_id, piece in enumerate(pieces):
        if token_id in special or piece is None:
            out.append(b"")
        elif piece in added:
            out.append(piece.encode("utf-8"))
        elif byte_level and all(char in table for char in piece):
            out.append(bytes(table[char] for char in piece))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("▁", " ").encode("utf-8"))
    return out


class ForbiddenVariants:
    """Token bans that keep ``variants`` out of generated text (see the module docstring)."""

    def __init__(self, tokenizer, variants: Sequence[str]):
        self.variants = list(variants)
        self._bytes = token_bytes(tokenizer)
        self._encoded = [v.encode("utf-8") for v in self.variants if v]
        self._tail = max((len(v) for v in self._encoded), default=1) - 1
        # the rest of a variant after its first k bytes -> the tokens whose bytes start with it, found in one pass
        # over the vocabulary (each token is checked only against the rests that share its first byte)
        rests = {v[k:] for v in self._encoded for k in range(1, len(v))}
        by_first: dict[int, list[bytes]] = {}
        for rest in rests:
            by_first.setdefault(rest[0], []).append(rest)
        self._completing: dict[bytes, list[int]] = {rest: [] for rest in rests}
        self._always: list[int] = []  # tokens holding a whole variant
        for token_id, piece in enumerate(self._bytes):
            if not piece:
                continue
            if any(v in piece for v in self._encoded):
                self._always.append(token_id)
            for rest in by_first.get(piece[0], ()):
                if piece.startswith(rest):
                    self._completing[rest].append(token_id)

    def tail(self, generated_ids: Sequence[int]) -> bytes:
        """The last bytes of the generated text a variant could still be completed from."""
        parts, size = [], 0
        for token_id in reversed(generated_ids):
            piece = self._bytes[token_id] if 0 <= token_id < len(self._bytes) else b""
            parts.append(piece)
            size += len(piece)
            if size >= self._tail:
                break
        return b"".join(reversed(parts))[-self._tail:] if self._tail else b""

    def banned(self, generated_ids: Sequence[int]) -> list[int]:
        """The tokens that would complete a forbidden variant right after ``generated_ids``."""
        tail = self.tail(generated_ids)
        banned = list(self._always)
        for variant in self._encoded:
            for k in range(1, len(variant)):
                if tail.endswith(variant[:k]):
                    banned += self._completing[variant[k:]]
        return banned

    def apply(self, scores, generated: Sequence[Sequence[int]]):
        """Set the banned tokens' scores (a rows x vocab tensor, one row per ``generated``) to -inf, in place."""
        for row, ids in enumerate(generated):
            banned = [i for i in self.banned(ids) if i < scores.shape[-1]]
            if banned:
                scores[row, banned] = float("-inf")
        return scores

    def logits_processor(self, prompt_length: int):
        """A transformers LogitsProcessor for ``model.generate`` over prompts padded to ``prompt_length``."""
        from transformers import LogitsProcessor

        constraint = self

        class _Processor(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return constraint.apply(scores, [row[prompt_length:].tolist() for row in input_ids])

        return _Processor()
