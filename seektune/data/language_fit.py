"""How well an encoder's tokenizer covers the text it is to classify, per language.

    seektune prepare examples/ticket-routing/recipe.yaml   # summary.json "language_fit"; the data card's section

An encoder knows the words of its vocabulary; a character outside it becomes ``[UNK]``, one id
shared by everything it cannot read. all-MiniLM-L6-v2 (``minilm-l6-v2``, an English WordPiece
vocabulary) turns about two thirds of the tokens of Chinese shopping reviews into ``[UNK]``, and a
classifier fine-tuned on what is left stays near chance while a character n-gram model on the
same rows does well. So ``prepare`` measures, per language (:func:`seektune.text.script_language_of`),
the share of tokens that are the unknown id and the tokens per character (how finely the text
is cut: a high [UNK] rate often comes with about one token per character, each ideograph alone),
the data card warns above :data:`UNK_RATE_LIMIT`, and the classification stage refuses to train
on such text unless the recipe sets ``data.allow_poor_fit: true``.

A tokenizer without an unknown token (byte-level BPE: Llama, Qwen) can encode any text; its
[UNK] rate is 0 by construction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from seektune.text import script_language_of

UNK_RATE_LIMIT = 0.25  # above this share of [UNK] tokens a language is poorly covered
CHUNK = 1024  # texts per tokenizer call
MULTILINGUAL_EXAMPLE = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"


class PoorLanguageFit(ValueError):
    """The encoder's tokenizer cannot read most of the training text; the message says what to do instead."""


def _counts(tokenizer, texts: Sequence[str]) -> tuple[int, int]:
    """(tokens, [UNK] tokens) of ``texts``, special tokens ([CLS], [SEP]) left out."""
    unk = tokenizer.unk_token_id
    tokens = unknown = 0
    for start in range(0, len(texts), CHUNK):
        for ids in tokenizer(list(texts[start:start + CHUNK]), add_special_tokens=False)["input_ids"]:
            tokens += len(ids)
            if unk is not None:
                unknown += sum(1 for i in ids if i == unk)
    return tokens, unknown


def _characters(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def language_fit(texts: Sequence[str], tokenizer) -> dict[str, dict[str, Any]]:
    """Per language of ``texts`` (most rows first): ``{"rows", "chars", "tokens", "unk_tokens", "unk_rate",
    "tokens_per_char"}``; ``unk_rate`` is the share of the language's tokens that are the unknown id."""
    by_language: dict[str, list[str]] = defaultdict(list)
    for text in texts:
        by_language[script_language_of(text)].append(text)
    fit = {}
    for language, rows in sorted(by_language.items(), key=lambda item: (-len(item[1]), item[0])):
        tokens, unknown = _counts(tokenizer, rows)
        chars = sum(_characters(t) for t in rows)
        fit[language] = {"rows": len(rows), "chars": chars, "tokens": tokens, "unk_tokens": unknown,
                         "unk_rate": round(unknown / tokens, 4) if tokens else 0.0,
                         "tokens_per_char": round(tokens / chars, 4) if chars else 0.0}
    return fit


def poorly_covered(fit: dict[str, dict[str, Any]], limit: float = UNK_RATE_LIMIT) -> list[str]:
    """The languages of ``fit`` whose [UNK] rate is above ``limit``."""
    return [language for language, part in fit.items() if part["unk_rate"] > limit]


def what_to_do(language: str = "the language") -> str:
    """The advice every warning and error about a poor fit gives, so they never disagree."""
    return (f"use an encoder whose vocabulary covers {language} (a multilingual one, e.g. "
            f"model: {MULTILINGUAL_EXAMPLE}) or method: linear (character n-grams, no vocabulary needed)")


def warnings_for(fit: dict[str, dict[str, Any]], model: str, limit: float = UNK_RATE_LIMIT) -> list[str]:
    """One sentence per poorly covered language, for the data card and prepare's summary line."""
    return [f"{model} maps {fit[lang]['unk_rate']:.0%} of the {lang} tokens ({fit[lang]['rows']} rows) to [UNK], "
            f"above {limit:.0%}: a classifier trained on them cannot read most of the text. "
            f"{what_to_do(lang)[0].upper()}{what_to_do(lang)[1:]}; training stops unless data.allow_poor_fit: true."
            for lang in poorly_covered(fit, limit)]


def summary_line(fit: dict[str, dict[str, Any]], model: str) -> str:
    """``language fit of MODEL: zh 1,400 rows, [UNK] 71%, 1.00 tokens/char; en ...`` for `seektune prepare`."""
    parts = "; ".join(f"{lang} {part['rows']:,} rows, [UNK] {part['unk_rate']:.0%}, "
                      f"{part['tokens_per_char']:.2f} tokens/char" for lang, part in fit.items())
    return f"language fit of {model}: {parts}"


def check_training_fit(texts: Sequence[str], tokenizer, model: str, allowed: bool,
                       limit: float = UNK_RATE_LIMIT) -> dict[str, Any]:
    """The [UNK] rate of the training texts; :class:`PoorLanguageFit` (one line) above ``limit`` unless ``allowed``.

    Returns ``{"unk_rate", "by_language": language_fit(...)}`` for the run's train.json.
    """
    fit = language_fit(texts, tokenizer)
    tokens = sum(part["tokens"] for part in fit.values())
    rate = round(sum(part["unk_tokens"] for part in fit.values()) / tokens, 4) if tokens else 0.0
    if rate > limit and not allowed:
        parts = ", ".join(f"{lang} {part['unk_rate']:.0%} of {part['rows']} rows" for lang, part in fit.items())
        raise PoorLanguageFit(
            f"{model} maps {rate:.0%} of the training text's tokens to [UNK] ({parts}), above {limit:.0%}; "
            f"a classifier trained on it cannot read most of the text: {what_to_do()}, or set "
            f"data.allow_poor_fit: true to train anyway")
    return {"unk_rate": rate, "by_language": fit}


# ---------------------------------------------------------------- chat models: what rows cost in tokens

OVERLONG_SHARE_LIMIT = 0.25  # above this share of a language's rows longer than data.max_length: warn


def length_fit(seen: Sequence[tuple[str, int, int]], max_length: int) -> dict[str, dict[str, Any]]:
    """Per language of the rows that reached the length check (``(language, rendered tokens, characters)``):
    ``{"rows", "tokens_per_char", "median_tokens", "p90_tokens", "over_max_length"}``."""
    by_language: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for language, tokens, chars in seen:
        by_language[language].append((tokens, chars))
    fit = {}
    for language, rows in sorted(by_language.items(), key=lambda item: (-len(item[1]), item[0])):
        lengths = sorted(tokens for tokens, _ in rows)
        chars = sum(c for _, c in rows)
        fit[language] = {"rows": len(rows), "tokens_per_char": round(sum(lengths) / chars, 3) if chars else 0.0,
                         "median_tokens": lengths[len(lengths) // 2], "p90_tokens": lengths[int(0.9 * (len(lengths) - 1))],
                         "over_max_length": sum(1 for n in lengths if n > max_length)}
    return fit


def length_warnings(fit: dict[str, dict[str, Any]], max_length: int, overlength: str, model: str) -> list[str]:
    """One sentence per language whose rows are often longer than ``max_length``: what it costs and what to do."""
    done = {"drop": "were dropped", "truncate": "are truncated (their answers' ends cut)",
            "error": "stop the run"}[overlength]
    warnings = []
    for language, part in fit.items():
        if part["over_max_length"] <= OVERLONG_SHARE_LIMIT * part["rows"]:
            continue
        warnings.append(
            f"{model}'s tokenizer spends {part['tokens_per_char']:.2f} tokens per character on {language}: "
            f"{part['over_max_length']} of {part['rows']} {language} rows "
            f"({part['over_max_length'] / part['rows']:.0%}) are longer than data.max_length {max_length} after "
            f"rendering (median {part['median_tokens']:,} tokens) and {done}. Raise data.max_length to about "
            f"{part['p90_tokens']:,} (training memory grows with it), use data.filters.overlength: truncate, or a "
            f"model whose tokenizer fits {language} better.")
    return warnings
