"""A document's sections -> chunks of at most ``chunk_tokens`` tokens, cut where the document's structure allows.

    from seektune.docs import chunk_document, read_document
    chunks = chunk_document(read_document(Path("handbook.md")), tokenizer, chunk_tokens=512, overlap=64)
    chunks[0].id, chunks[0].heading   # ('handbook.md#c1', 'Returns > Refunds')

- A heading starts a new chunk unless the chunk so far is under a quarter of ``chunk_tokens`` (a tiny
  section merges with the next one); a PDF page always starts a new chunk, so each chunk has one page.
- Within a section, chunks end at paragraph boundaries; a paragraph longer than a chunk is cut at sentence ends
  (. ! ? 。 ！ ？ ；), a sentence longer than a chunk at line ends, and a line longer than a chunk by tokens.
- Consecutive chunks of one section share whole sentences from the end of the earlier one, at most ``overlap``
  tokens, so no sentence is only ever seen without its context.
- Each chunk's text opens with its heading path as a line (counted in the budget), so a reader or a question
  generator sees where it comes from; the rest is the document's text, verbatim.

Tokens are the tokenizer's (``tokenizer(text, add_special_tokens=False)["input_ids"]``); without one, words
separated by white space, with each Chinese character a token of its own (Chinese has no spaces).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from seektune.docs.read import HEADING_SEPARATOR, Document, Section
from seektune.text import CJK_IDEOGRAPHS

_WORD = re.compile(f"[{CJK_IDEOGRAPHS}]|[^\\s{CJK_IDEOGRAPHS}]+")
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s|$)|[。！？；][”’」』）)\]]*")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

Span = tuple[int, int]  # [start, end) in a section's text


@dataclass
class Chunk:
    id: str  # "<document>#c<k>", for PDFs "<document>#p<page>.c<k>" (k counts from 1 over the document)
    document: str
    index: int  # 0-based position in the document
    text: str
    heading: str | None  # heading path of the chunk's first section
    page: int | None
    sha256: str  # hex sha256 of text (UTF-8)


class TokenCounter:
    """Counts tokens, and says where text may be cut between tokens."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(_WORD.findall(text))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def counts(self, texts: list[str]) -> list[int]:
        """:meth:`count` of each text, in one tokenizer call."""
        if self.tokenizer is None or not texts:
            return [self.count(text) for text in texts]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def token_ends(self, text: str) -> list[int]:
        """Positions in ``text`` right after each token (the tokenizer's offsets when it has them)."""
        if self.tokenizer is not None:
            try:
                offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
                return sorted({end for _, end in offsets if end > 0})
            except (NotImplementedError, ValueError, TypeError, KeyError):
                pass  # a slow tokenizer has no offsets: cut between words, measure with the tokenizer
        return [match.end() for match in _WORD.finditer(text)]


def count_tokens(text: str, tokenizer=None) -> int:
    """Tokens of ``text`` as :func:`chunk_document` counts them."""
    return TokenCounter(tokenizer).count(text)


# ---------------------------------------------------------------- spans of a section's text


def _trim(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _split(text: str, start: int, end: int, pattern: re.Pattern[str], keep_match: bool) -> list[Span]:
    """Non-blank spans of text[start:end] cut at each match (kept at the end of its span, or dropped)."""
    spans: list[Span] = []
    begin = start
    for match in pattern.finditer(text, start, end):
        span = _trim(text, begin, match.end() if keep_match else match.start())
        if span:
            spans.append(span)
        begin = match.end()
    span = _trim(text, begin, end)
    if span:
        spans.append(span)
    return spans


def paragraphs(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    return _split(text, start, len(text) if end is None else end, _PARAGRAPH_BREAK, keep_match=False)


def sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentence spans (ending at . ! ? 。 ！ ？ ；) within each paragraph of text[start:end]."""
    return [span for paragraph in paragraphs(text, start, end)
            for span in _split(text, *paragraph, _SENTENCE_END, keep_match=True)]


def _lines(text: str, start: int, end: int) -> list[Span]:
    return _split(text, start, end, re.compile("\n"), keep_match=False)


def _cut_by_tokens(text: str, start: int, end: int, fits: Callable[[Span], bool], counter: TokenCounter,
                   limit: int) -> list[Span]:
    """The longest token-aligned pieces that fit; a single token that does not fit alone is one piece.
    A piece of at most ``limit`` tokens ends within ``limit`` token ends of its start, which bounds the search."""
    ends = sorted({start + offset for offset in counter.token_ends(text[start:end])} | {end})
    pieces: list[Span] = []
    while (span := _trim(text, start, end)) is not None:
        start = span[0]
        first = bisect.bisect_right(ends, start)
        candidates = ends[first : first + limit + 1]
        best, low, high = 0, 0, len(candidates) - 1
        while low <= high:  # the largest fitting end (fit is monotone in the end, up to tokenizer merges)
            middle = (low + high) // 2
            if fits((start, candidates[middle])):
                best, low = middle, middle + 1
            else:
                high = middle - 1
        piece = _trim(text, start, candidates[best])
        if piece:
            pieces.append(piece)
        start = candidates[best]
    return pieces


def _units(text: str, fits: Callable[[list[Span]], list[bool]], counter: TokenCounter, limit: int) -> list[Span]:
    """The pieces a section is packed from: paragraphs, or for one too long its sentences, lines, token runs.
    ``fits`` says for each span whether it fits in a chunk of its own (asked for many spans at once)."""
    units: list[Span] = []
    for paragraph, paragraph_fits in zip(spans := paragraphs(text), fits(spans)):
        if paragraph_fits:
            units.append(paragraph)
            continue
        for sentence, sentence_fits in zip(spans := _split(text, *paragraph, _SENTENCE_END, True), fits(spans)):
            if sentence_fits:
                units.append(sentence)
                continue
            for line, line_fits in zip(spans := _lines(text, *sentence), fits(spans)):
                if line_fits:
                    units.append(line)
                else:
                    units.extend(_cut_by_tokens(text, *line, lambda span: fits([span])[0], counter, limit))
    return units


# ---------------------------------------------------------------- packing


class _Packer:
    """Greedy packing of section units into chunks; the current chunk is ``prefix`` (earlier tiny sections)
    followed by the current section's heading line and ``span`` of its text."""

    def __init__(self, document: Document, counter: TokenCounter, chunk_tokens: int, overlap: int):
        self.document, self.counter = document, counter
        self.chunk_tokens, self.overlap = chunk_tokens, overlap
        self.chunks: list[Chunk] = []
        self.prefix = ""
        self.first: Section | None = None  # the chunk's first section: its heading and page name the chunk
        self.section: Section | None = None
        self.heading_line: str | None = None
        self.span: Span | None = None

    def _own(self, span: Span | None) -> str:
        assert self.section is not None
        body = self.section.text[span[0] : span[1]] if span else ""
        return f"{self.heading_line}\n{body}" if self.heading_line else body

    def _text(self, span: Span | None) -> str:
        if span is None:
            return self.prefix
        return f"{self.prefix}\n\n{self._own(span)}" if self.prefix else self._own(span)

    def _fits(self, text: str) -> bool:
        return self.counter.count(text) <= self.chunk_tokens

    def _heading_line(self, heading: str | None) -> str | None:
        """The heading path, or its last part when the path would take over half a chunk (else none)."""
        if heading is None:
            return None
        for candidate in (heading, heading.rsplit(HEADING_SEPARATOR, 1)[-1]):
            if self.counter.count(candidate) <= self.chunk_tokens // 2:
                return candidate
        return None

    def emit(self) -> None:
        text = self._text(self.span)
        if text.strip() and self.first is not None:
            number = len(self.chunks) + 1
            name, page = self.document.name, self.first.page
            chunk_id = f"{name}#p{page}.c{number}" if page is not None else f"{name}#c{number}"
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            self.chunks.append(Chunk(chunk_id, name, number - 1, text, self.first.heading, page, digest))
        self.prefix, self.span, self.first = "", None, None

    def add_section(self, section: Section) -> None:
        if self.first is not None:
            current = self._text(self.span)
            if section.page != self.first.page or self.counter.count(current) * 4 >= self.chunk_tokens:
                self.emit()
            else:
                self.prefix, self.span = current, None  # a tiny chunk: this section joins it
        self.section, self.heading_line = section, self._heading_line(section.heading)
        if self.first is None:
            self.first = section

        def fit_alone(spans: list[Span]) -> list[bool]:
            return [count <= self.chunk_tokens for count in self.counter.counts([self._own(span) for span in spans])]

        units = _units(section.text, fit_alone, self.counter, self.chunk_tokens)
        costs = self.counter.counts([section.text[start:end] for start, end in units])
        index = 0
        while index < len(units):
            last = self._furthest(units, costs, index)
            if last >= index:
                self.span = (self.span[0] if self.span else units[index][0], units[last][1])
                index = last + 1
            else:
                self._start_chunk(units[index])
                index += 1

    def _furthest(self, units: list[Span], costs: list[int], index: int) -> int:
        """The last unit from ``index`` on that still fits in the current chunk (``index - 1`` when none does):
        guessed from the units' own counts, then checked against the counted text (a chunk is tokenized a few
        times, not once per sentence)."""
        start = self.span[0] if self.span else units[index][0]

        def fits_to(last: int) -> bool:
            return self._fits(self._text((start, units[last][1])))

        used = self.counter.count(self._text(self.span or (start, start)))
        join = 0 if self.counter.tokenizer is None else 1  # where a tokenizer counts, a join may cost a token
        last = index - 1
        while last + 1 < len(units) and used + costs[last + 1] + join <= self.chunk_tokens:
            last += 1
            used += costs[last] + join
        if last >= index and not fits_to(last):
            while last >= index and not fits_to(last):
                last -= 1
            return last
        while last + 1 < len(units) and fits_to(last + 1):
            last += 1
        return last

    def _start_chunk(self, unit: Span) -> None:
        """Close the current chunk; the next opens with the heading line, the overlap, and ``unit``."""
        assert self.section is not None
        previous = self.span
        self.emit()
        start = self._overlap_start(previous, unit) if previous else None
        self.first, self.span = self.section, (start if start is not None else unit[0], unit[1])

    def _overlap_start(self, previous: Span, unit: Span) -> int | None:
        """Where the next chunk starts when it repeats the previous one's last whole sentences: as many as stay
        within ``overlap`` tokens and leave room for ``unit``."""
        assert self.section is not None
        text, best = self.section.text, None
        starts = []
        for sentence in sentences(text, *previous):  # a list or table (no sentence ends) repeats whole lines
            lines = [sentence] if _SENTENCE_END.search(text, *sentence) else _lines(text, *sentence)
            starts.extend(start for start, _ in lines)
        for start in reversed(starts):
            if self.counter.count(text[start : previous[1]]) > self.overlap or not self._fits(
                self._own((start, unit[1]))
            ):
                break
            best = start
        return best


def chunk_document(doc: Document, tokenizer=None, chunk_tokens: int = 512, overlap: int = 64) -> list[Chunk]:
    """The document's chunks, in order; see the module docstring for where they are cut."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(f"chunk overlap ({overlap}) must be from 0 to below chunk_tokens ({chunk_tokens})")
    packer = _Packer(doc, TokenCounter(tokenizer), chunk_tokens, overlap)
    for section in doc.sections:
        packer.add_section(section)
    packer.emit()
    return packer.chunks
