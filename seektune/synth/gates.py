"""What synthesis checks in a teacher's reply before a row is kept, and the text helpers behind it.

Every gate returns ``None`` (pass) or a reason code, the codes that ``synth/rejects.jsonl``
and the summary count:

=====================  ==================================================================
``garbage``            empty, no letters, a prompt echo, or a reply that repeats itself
``not_a_question``     the question does not read as one (no ``?``/``？`` and no question word)
``question_length``    the question is outside ``synth.min/max_question_chars``
``answer_length``      the answer is outside ``synth.min/max_answer_chars``
``not_self_contained`` the question points at the document ("this section", "the above", 上文 ...)
``wrong_language``     question or answer is not in the source chunk's language
``off_topic``          the question shares no content word with the answer it is paired with
``unsupported``        a number of the answer is not in the chunk, or too few of its content words are
``judge_unsupported``  the teacher, asked as a judge, says the chunk does not support the answer
``in_scope``           an out-of-scope question that the documents seem to answer after all
``glossary_changed``   a glossary term written differently from the glossary
``duplicate``          a near-duplicate of a kept question or of a row of the recipe's data
=====================  ==================================================================

The support check is lexical on purpose: it is cheap, exact about numbers (the facts a
customer acts on) and explainable to a reviewer, who sees the supporting spans highlighted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seektune.docs import HEADING_SEPARATOR
# the fact and number extraction is shared with the eval's faithfulness score, so it lives in seektune.text
from seektune.text import FACT_PATTERNS, facts_of, is_cjk, language_of, numbers_in, tokens_of  # noqa: F401

# sentence ends: Latin punctuation followed by space, or CJK punctuation (no space needed)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9$£€])|(?<=[。！？；])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_SELF_REFERENCE = re.compile(
    r"\b(?:this|that|the above|the following|the previous|the given|the mentioned)\s+(?:section|passage|text|"
    r"paragraph|document|sentence|excerpt|chunk|policy above|list|table|handbook excerpt)\b|\bthe above\b|"
    r"\baccording to (?:the|this) (?:passage|text|document|section)\b|\bmentioned above\b|\bin the passage\b|"
    r"上文|以上|本节|本段|这段|该段|文中|上述", re.IGNORECASE)
_ECHO = re.compile(r"\b(?:passage|sentence|handbook excerpt)\s*:|^\s*(?:question|answer|q|a)\s*[:：]\s*$|"
                   r"write one question|reply with the question", re.IGNORECASE | re.MULTILINE)
_QUESTION_WORDS = re.compile(
    r"^\s*(?:what|when|where|which|who|whom|whose|why|how|can|could|do|does|did|is|are|was|were|will|would|should|"
    r"may|might|must|have|has|am|i'd like|i want)\b|[?？]\s*$|"
    r"吗|什么|怎么|怎样|如何|多少|多久|哪|是否|能否|可以|为什么|几",
    re.IGNORECASE)
_STOP = set("""a an the and or but if then of to in on at by for with from as is are was were be been being it its
this that these those there here we you your our they them their he she his her i me my us do does did can could will
would should may might must have has had not no yes so such than too very just also any all each every some more most
other into about over after before under up down out off again once only own same both few how what when where which
who why whom s t don shall am per via""".split())


@dataclass
class Sentence:
    text: str
    start: int  # character offsets in the chunk
    end: int
    is_list_item: bool = False


def sentences(chunk: str) -> list[Sentence]:
    """The chunk's sentences with their offsets; list items and table rows are one sentence each, and a heading
    line (the chunk's first line when it holds no sentence end) is not a sentence."""
    out: list[Sentence] = []
    offset = 0
    lines = chunk.split("\n")
    for number, line in enumerate(lines):
        start_of_line = offset
        offset += len(line) + 1
        stripped = line.strip()
        ends = re.search(r"[.!?。！？；]\s*$", stripped)
        if not stripped or (not ends and (number == 0 and len(lines) > 1 or HEADING_SEPARATOR in stripped)):
            continue  # blank, or a heading path line (chunk_document puts one above each section)
        if stripped.startswith("#") or set(stripped) <= set("|-: "):
            continue
        lead = len(line) - len(line.lstrip())
        if _LIST_ITEM.match(line) or _TABLE_ROW.match(line):
            out.append(Sentence(stripped, start_of_line + lead, start_of_line + lead + len(stripped), True))
            continue
        position = 0
        for piece in _SENTENCE_END.split(line):
            if piece is None:
                continue
            index = line.find(piece, position)
            position = index + len(piece)
            text = piece.strip()
            if text:
                begin = start_of_line + index + (len(piece) - len(piece.lstrip()))
                out.append(Sentence(text, begin, begin + len(text)))
    return out


def content_words(text: str) -> set[str]:
    return {t for t in tokens_of(text) if t not in _STOP and (len(t) > 2 or not t.isascii())}


def support_share(answer: str, sources: list[str]) -> float:
    """Share of the answer's content words found in the source text(s)."""
    words = content_words(answer)
    if not words:
        return 0.0
    source = set().union(*(content_words(s) for s in sources))
    return len(words & source) / len(words)


def unsupported(answer: str, sources: list[str], threshold: float) -> bool:
    """An answer is supported when each of its numbers and ``threshold`` of its content words occur in a source."""
    joined = "\n".join(sources)
    if not numbers_in(answer) <= numbers_in(joined):
        return True
    return support_share(answer, sources) < threshold


def support_spans(answer: str, chunk: str) -> list[list[int]]:
    """[start, end) spans of the chunk's sentences that share most with the answer (what the review page marks)."""
    words = content_words(answer)
    spans = []
    for sentence in sentences(chunk):
        own = content_words(sentence.text)
        shared = len(own & words)
        if sentence.text in answer or (shared >= 2 and shared >= 0.5 * len(own)):
            spans.append([sentence.start, sentence.end])
    return spans


def _length(text: str) -> int:
    """Characters, a Chinese character counting two: a question's length limits fit both languages."""
    return len(text) + sum(1 for char in text if is_cjk(char))


def clean_question(reply: str) -> str:
    """The question in a teacher's reply: the quoted question when it quotes one, else the first line holding a
    question mark (cut after it), else the first non-empty line; list markers and "Question:" labels removed."""
    text = reply.strip()
    quoted = re.findall(r"[\"“「]([^\"”」]{6,}?[?？])[\"”」]", text)
    if quoted:
        return quoted[0].strip()
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)]|q(?:uestion)?\s*\d*\s*[:：]|问题?\s*[:：])\s*", "", line, flags=re.I).strip()
             for line in text.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        mark = max(line.find("?"), line.find("？"))
        if mark >= 0:  # the sentence holding the first question mark: "Sure! Question: How ...?" -> "How ...?"
            pieces = re.split(r"(?<=[.!:;。！：；])\s*", line[: mark + 1])
            return next(piece for piece in reversed(pieces) if piece.strip()).strip()
    return lines[0] if lines else ""


def is_garbage(text: str) -> bool:
    if not text.strip() or not re.search(r"\w", text) or _ECHO.search(text):
        return True
    words = text.split()
    return len(words) >= 8 and len(set(words)) / len(words) < 0.4  # a reply stuck in a loop


def question_gates(question: str, language: str, min_chars: int, max_chars: int) -> str | None:
    """The gates a question passes whatever its answer."""
    if is_garbage(question):
        return "garbage"
    if not min_chars <= _length(question) <= max_chars:
        return "question_length"
    if not _QUESTION_WORDS.search(question):
        return "not_a_question"
    if _SELF_REFERENCE.search(question):
        return "not_self_contained"
    if language_of(question) != language:
        return "wrong_language"
    return None


def answer_gates(answer: str, language: str, min_chars: int, max_chars: int) -> str | None:
    if is_garbage(answer):
        return "garbage"
    if not min_chars <= _length(answer) <= max_chars:
        return "answer_length"
    if language_of(answer) != language:
        return "wrong_language"
    return None


def common_words(texts: list[str], share: float = 0.25) -> set[str]:
    """Content words in at least ``share`` of the texts (the store's name, "customer", "order"...): sharing
    only those does not make a question about its answer."""
    if len(texts) < 8:
        return set()
    counts: dict[str, int] = {}
    for text in texts:
        for word in {w[:5] for w in content_words(text)}:
            counts[word] = counts.get(word, 0) + 1
    return {word for word, count in counts.items() if count >= share * len(texts)}


def off_topic(question: str, answer: str, common: set[str] | frozenset = frozenset()) -> bool:
    """A question about something else than its answer (a weak teacher's drift): they share no content word
    but the documents' ``common`` ones (compared by their first five letters: "refunds" / "refunded")."""
    q, a = {w[:5] for w in content_words(question)}, {w[:5] for w in content_words(answer)}
    return not (q & a) - set(common)


def fix_glossary(text: str, glossary: list[str] | None) -> tuple[str, list[str]]:
    """The text with each glossary term written as in the glossary (a teacher's "petal points" becomes "Petal
    Points"), and the terms that were changed."""
    fixed = []
    for term in glossary or []:
        pattern = re.compile(r"(?<!\w)" + r"\s*".join(re.escape(part) for part in term.split()) + r"(?!\w)",
                             re.IGNORECASE)
        new = pattern.sub(term, text)
        if new != text:
            fixed.append(term)
            text = new
    return text, fixed


def glossary_changed(text: str, glossary: list[str] | None) -> str | None:
    """The first glossary term the text writes differently (other case or spacing), or None."""
    for term in glossary or []:
        pattern = re.compile(r"\s*".join(re.escape(part) for part in term.split()), re.IGNORECASE)
        for match in pattern.finditer(text):
            if match.group(0) != term:
                return term
    return None
