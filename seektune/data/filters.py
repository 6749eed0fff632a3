"""Row filters of ``seektune prepare``, each a small named function.

    seektune prepare recipe.yaml        # data.filters configures the thresholds

``filter_reason(record, FilterConfig(...), tokenizer)`` returns ``None`` to keep the record or the first
``FilterFailure(reason, detail)``; ``reason`` is a short code for rejects.jsonl and ``detail`` says the
measured value and the limit it broke. The filters run in the order of ``FILTERS``, cheapest first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seektune.data.formats import FormatError, validate_messages
from seektune.text import language_of, without_code

LANGUAGES = ("en", "zh")


@dataclass
class FilterConfig:
    """Thresholds of the row filters; ``None`` turns a filter off. Characters are counted without whitespace."""

    min_chars: int = 1  # every turn (content + reasoning)
    max_chars: int | None = None  # the whole conversation
    min_answer_chars: int = 1  # every assistant answer (content only)
    min_tokens: int | None = None  # target tokenizer, concatenated contents; skipped without a tokenizer
    max_tokens: int | None = None
    max_repetition: float | None = 0.5  # see repetition_ratio
    max_symbol_ratio: float | None = 0.5  # see symbol_ratio
    languages: list[str] | None = None  # allowed among LANGUAGES, judged on the user and assistant turns
    check_roles: bool = True  # (system?) user, assistant, ... ending with the assistant

    def __post_init__(self) -> None:
        if self.languages is not None:
            unknown = [lang for lang in self.languages if lang not in LANGUAGES]
            if unknown:
                raise ValueError(f"unknown language(s) {unknown} in languages; allowed: {', '.join(LANGUAGES)}")
        for name in ("max_repetition", "max_symbol_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} > max_tokens {self.max_tokens}")


@dataclass(frozen=True)
class FilterFailure:
    """Why a record was filtered: ``reason`` is the code in rejects.jsonl, ``detail`` the measured value and limit."""

    reason: str
    detail: str


_WORDS = re.compile(r"\w+")
_MIN_JUDGED_CHARS = 10  # "?" or ":)" is a fine turn, too short to call garbage


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def repetition_ratio(text: str) -> float:
    """1 - unique n-grams / all n-grams: word 3-grams (lower-cased) for space-separated text, character 5-grams
    of letters and digits for Chinese. "the the the the the" scores 0.67; 0.0 below two n-grams."""
    if language_of(text) == "zh":
        chars = "".join(char for char in text if char.isalnum())
        grams: list[Any] = [chars[i:i + 5] for i in range(len(chars) - 4)]
    else:
        words = _WORDS.findall(text.lower())
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(grams) < 2:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def symbol_ratio(text: str) -> float:
    """Share of the non-whitespace characters that are neither letters (CJK included), digits nor combining marks."""
    visible = [char for char in text if not char.isspace()]
    if not visible:
        return 0.0
    symbols = sum(1 for char in visible if not (char.isalnum() or unicodedata.category(char).startswith("M")))
    return symbols / len(visible)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens without special tokens; works with a transformers tokenizer and a bare ``tokenizers.Tokenizer``."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return len(getattr(encoded, "ids", encoded))


def _turn_text(message: dict[str, Any]) -> str:
    return message.get("content", "") + "\n" + (message.get("reasoning") or "")


def _where(index: int, message: dict[str, Any]) -> str:
    return f"message {index + 1} ({message.get('role')})"


def filter_turn_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    for index, message in enumerate(record["messages"]):
        chars = visible_chars(_turn_text(message))
        if chars == 0 and config.min_chars > 0:
            return FilterFailure("empty_turn", f"{_where(index, message)} is empty")
        if chars < config.min_chars:
            return FilterFailure(
                "turn_too_short", f"{_where(index, message)} has {chars} characters < min_chars {config.min_chars}")
    return None


def filter_role_order(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if not config.check_roles:
        return None
    try:
        validate_messages(record["messages"])
    except FormatError as exc:
        return FilterFailure(exc.reason, exc.detail)
    return None


def filter_answer_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    for index, message in enumerate(record["messages"]):
        if message.get("role") != "assistant":
            continue
        chars = visible_chars(message.get("content", ""))
        if chars < config.min_answer_chars:
            return FilterFailure(
                "answer_too_short",
                f"{_where(index, message)} answer has {chars} characters < min_answer_chars {config.min_answer_chars}",
            )
    return None


def filter_total_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if config.max_chars is None:
        return None
    chars = sum(visible_chars(_turn_text(message)) for message in record["messages"])
    if chars > config.max_chars:
        return FilterFailure("too_long_chars", f"conversation has {chars} characters > max_chars {config.max_chars}")
    return None


def filter_token_count(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if tokenizer is None or (config.min_tokens is None and config.max_tokens is None):
        return None
    text = "\n".join(
        part for message in record["messages"] for part in (message.get("reasoning"), message.get("content")) if part
    )
    tokens = count_tokens(tokenizer, text)
    if config.min_tokens is not None and tokens < config.min_tokens:
        return FilterFailure("too_few_tokens", f"conversation has {tokens} tokens < min_tokens {config.min_tokens}")
    if config.max_tokens is not None and tokens > config.max_tokens:
        return FilterFailure("too_many_tokens", f"conversation has {tokens} tokens > max_tokens {config.max_tokens}")
    return None


def filter_language(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """The conversation's language, from its user and assistant turns with code removed (system prompts are
    often English in Chinese data, and one short "OK" should not decide)."""
    if config.languages is None:
        return None
    text = "\n".join(without_code(m.get("content", "")) for m in record["messages"] if m.get("role") != "system")
    if not _WORDS.search(text):
        return None
    language = language_of(text)
    if language not in config.languages:
        return FilterFailure(
            "wrong_language", f"conversation language {language!r} not in languages {config.languages}")
    return None


def filter_symbols(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if config.max_symbol_ratio is None:
        return None
    for index, message in enumerate(record["messages"]):
        text = _turn_text(message)
        if visible_chars(text) < _MIN_JUDGED_CHARS:
            continue
        ratio = symbol_ratio(text)
        if ratio > config.max_symbol_ratio:
            return FilterFailure(
                "garbage",
                f"{_where(index, message)} symbol ratio {ratio:.2f} > max_symbol_ratio {config.max_symbol_ratio}",
            )
    return None


def filter_repetition(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """Answers and their reasoning: a looping generation is the usual failure of distilled R1 data."""
    if config.max_repetition is None:
        return None
    for index, message in enumerate(record["messages"]):
        if message.get("role") != "assistant":
            continue
        for field in ("content", "reasoning"):
            ratio = repetition_ratio(message.get(field) or "")
            if ratio > config.max_repetition:
                what = "answer" if field == "content" else "reasoning"
                return FilterFailure(
                    "repetitive",
                    f"{_where(index, message)} {what} repetition {ratio:.2f} > max_repetition {config.max_repetition}",
                )
    return None


FilterFunction = Callable[[dict[str, Any], FilterConfig, Any], "FilterFailure | None"]
# Checked in this order, cheapest and most basic first; filter_reason reports the first failure.
FILTERS: dict[str, FilterFunction] = {
    "turn_length": filter_turn_length,
    "role_order": filter_role_order,
    "answer_length": filter_answer_length,
    "total_length": filter_total_length,
    "token_count": filter_token_count,
    "language": filter_language,
    "symbols": filter_symbols,
    "repetition": filter_repetition,
}
FILTER_REASONS = (
    "empty_turn", "turn_too_short", "no_turns", "bad_role_order", "odd_turn_count", "empty_question", "empty_answer",
    "answer_too_short", "too_long_chars", "too_few_tokens", "too_many_tokens", "wrong_language", "garbage",
    "repetitive",
)


def filter_reason(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """None to keep the record, else the first failing filter's reason and detail."""
    for check in FILTERS.values():
        failure = check(record, config, tokenizer)
        if failure is not None:
            return failure
    return None
