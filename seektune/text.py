"""Plain-text helpers that both the data and the evaluation layers need, so neither imports the other.

    from seektune.text import language_of, split_think, strip_reasoning
    language_of("退货期限是45天。")                  # 'zh'
    split_think("<think>r</think>answer")           # ('r', 'answer')

- language: :func:`language_of` ('zh' or 'en'), :func:`script_language_of` ('zh', 'en' or 'other'),
  :func:`is_cjk`, :func:`without_code` (Markdown code removed before judging a language, since code looks
  English in any language);
- tokens: :func:`tokens_of` (words for English, single ideographs for Chinese) and :func:`cjk_tokens`;
- R1 reasoning: :func:`split_think` (a record's leading ``<think>`` block) and :func:`strip_reasoning`
  (every block of a generated answer, which is then scored without it);
- matching: :func:`normalise_for_match` (NFKC, lower case, single spaces);
- facts: :func:`facts_of` (amounts, durations, times, codes, addresses of an answer) and :func:`numbers_in`,
  shared by synthesis's gates and the eval's faithfulness score.

This module sits at the bottom of the package: it imports nothing from seektune.
"""

from __future__ import annotations

import re
import unicodedata

# CJK unified ideographs: extension A, the basic block and the compatibility block.
CJK_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
_WORD_CHAR = re.compile(r"\w")
_WORD_TOKEN = re.compile(r"[^\W_]+")
_CJK_TOKEN = re.compile(f"[{CJK_IDEOGRAPHS}]|[^\\W_{CJK_IDEOGRAPHS}]+")

# Markdown code: a fenced block (``` or ~~~, to its closing fence or the end of the text) or an inline span.
MARKDOWN_CODE = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=fence)[ \t]*$|\Z)"
    r"|(?P<ticks>`+)(?!`)[^\n]*?(?<!`)(?P=ticks)(?!`)",
    re.MULTILINE | re.DOTALL,
)


# ---------------------------------------------------------------- language


def is_cjk(char: str) -> bool:
    """Whether ``char`` (one character; '' gives False) is a CJK ideograph."""
    return bool(char) and _CJK.match(char) is not None


def language_of(text: str) -> str:
    """'zh' when at least 30% of the word characters are CJK ideographs, else 'en' (also for no words)."""
    letters = _WORD_CHAR.findall(text)
    if not letters:
        return "en"
    cjk = sum(1 for char in letters if _CJK.match(char))
    return "zh" if cjk / len(letters) >= 0.3 else "en"


def script_language_of(text: str) -> str:
    """:func:`language_of`, with 'other' for text written mostly in a script that is neither CJK nor Latin
    (Cyrillic, Arabic, Thai, kana, ...): 'en' stands for Latin script, which is all an encoder's vocabulary
    check needs to tell apart."""
    if language_of(text) == "zh":
        return "zh"
    letters = [char for char in _WORD_CHAR.findall(text) if char.isalpha()]
    latin = sum(1 for char in letters if char.isascii() or unicodedata.name(char, "").startswith("LATIN"))
    return "en" if not letters or latin / len(letters) >= 0.5 else "other"


def without_code(text: str) -> str:
    """The text with Markdown code blocks and spans replaced by a space: the prose whose language counts."""
    return MARKDOWN_CODE.sub(" ", text)


# ---------------------------------------------------------------- tokens


def cjk_tokens(text: str) -> list[str]:
    """Lower-cased tokens for Chinese: each ideograph is a token, other runs of letters and digits stay whole."""
    return _CJK_TOKEN.findall(text.lower())


def tokens_of(text: str) -> list[str]:
    """Lower-cased tokens: words for English, single ideographs for Chinese (by :func:`language_of`).

    Punctuation is dropped, so "days." and "days" are one token.
    """
    if language_of(text) == "zh":
        return cjk_tokens(text)
    return _WORD_TOKEN.findall(text.lower())


# ---------------------------------------------------------------- R1 reasoning

_LEADING_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_think(content: str) -> tuple[str | None, str]:
    """``"<think>r</think>answer"`` -> ``("r", "answer")``; content without a leading, closed think block is
    returned unchanged with ``None``. The reasoning is stripped; the answer keeps its trailing text as written.

    For a whole generated answer, whose template may have opened ``<think>`` in the prompt, use
    :func:`strip_reasoning`.
    """
    match = _LEADING_THINK.match(content)
    if not match:
        return None, content
    return match.group(1).strip(), content[match.end():]


def strip_reasoning(text: str) -> tuple[str, int]:
    """R1-style output -> ``(answer, reasoning_chars)``; the reasoning is never scored as the answer.

    Every closed ``<think>...</think>`` block is removed. A ``</think>`` with no opening tag
    (R1 chat templates put ``<think>`` in the prompt) makes everything before it reasoning;
    an unclosed ``<think>`` (generation cut off mid-thought) makes everything after it
    reasoning, so the answer is empty. ``reasoning_chars`` counts the reasoning text with
    surrounding whitespace stripped; the answer is stripped too.
    """
    reasoning: list[str] = []
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        head, text = text.split("</think>", 1)
        reasoning.append(head)

    def _take(match: re.Match[str]) -> str:
        reasoning.append(match.group(1))
        return ""

    text = _THINK_BLOCK.sub(_take, text)
    if "<think>" in text:
        text, tail = text.split("<think>", 1)
        reasoning.append(tail)
    return text.strip(), sum(len(part.strip()) for part in reasoning)


# ---------------------------------------------------------------- normalisation


def normalise_for_match(text: str) -> str:
    """NFKC (full-width digits and letters to ASCII), lower case, whitespace runs collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------- facts and numbers

_FACT_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# a fact: money, a number with its unit, a percentage, a time, an e-mail or a web address, a code in capitals
FACT_PATTERNS = [  # amounts, percentages, times, durations and counts (en, zh), phones, e-mails, sites, codes
    re.compile(r"[$£€¥]\s?\d+(?:[.,]\d+)*"),
    re.compile(r"\d+(?:[.,]\d+)*\s?%"),
    re.compile(r"\d+(?:[.,]\d+)*(?:\s?(?:a\.m\.|p\.m\.|am|pm))\b", re.IGNORECASE),
    re.compile(r"\b\d+(?:[.,]\d+)*(?:\s|-)(?:business |working |calendar )?(?:days?|weeks?|months?|years?|hours?|"
               r"minutes?|items?|orders?|points?|digits|characters|nights|dollars|percent|kg|g|lbs?|cm|m|km|miles?|inches|"
               r"feet)\b", re.IGNORECASE),
    re.compile(r"\d+(?:\.\d+)?\s?(?:个)?(?:天|周|个月|月|年|小时|分钟|元|件|%|个工作日|工作日)"),
    re.compile(r"(?<![\d-])(?:1-)?\d{3}-\d{3}-\d{4}\b"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    re.compile(r"\b(?:https?://)?(?:www\.)[\w.-]+\.[a-z]{2,}\S*"),
    re.compile(r"\b[A-Z]{2,}\d+[A-Z0-9]*\b"),
]


def numbers_in(text: str) -> set[str]:
    """The digit runs of ``text`` ("4.95", "1-800" gives "1" and "800", "2,500" stays whole), trailing
    punctuation dropped."""
    return {n.rstrip(".,:") for n in _FACT_NUMBER.findall(text)}


def facts_of(answer: str, glossary: list[str] | None = None) -> list[str]:
    """Key phrases of an answer that a correct reply must repeat: amounts, durations, times, addresses, codes,
    and the glossary terms it uses (so ``fact_accuracy`` scores synthetic rows)."""
    found: list[str] = []
    for pattern in FACT_PATTERNS:
        for match in pattern.finditer(answer):
            fact = match.group(0).strip().rstrip(".,")
            if fact and not any(fact in kept or kept in fact for kept in found):
                found.append(fact)
    for term in glossary or []:
        if term in answer and term not in found:
            found.append(term)
    return found
