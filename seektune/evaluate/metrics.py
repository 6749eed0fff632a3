"""Text metrics shared by every stage: ROUGE-L (rouge-score), BLEU (sacrebleu) and fact accuracy.

Chinese is scored at the character level for ROUGE and with sacrebleu's ``zh``
tokeniser for BLEU; a text counts as Chinese when a good share of its letters are CJK.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w", re.UNICODE)


def language_of(text: str) -> str:
    """'zh' when at least 30% of the word characters are CJK ideographs, else 'en'."""
    letters = _WORD.findall(text)
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if _CJK.match(ch))
    return "zh" if cjk / len(letters) >= 0.3 else "en"


class _CharTokenizer:
    """rouge-score tokenizer for CJK: each ideograph is a token, other runs of word characters stay whole."""

    _TOKEN = re.compile(
        r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", re.UNICODE
    )

    def tokenize(self, text: str) -> list[str]:
        return self._TOKEN.findall(text.lower())


def rouge_l(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """Mean ROUGE-L F1 over pairs (0-1)."""
    from rouge_score import rouge_scorer

    if not predictions:
        return 0.0
    if lang == "zh":
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CharTokenizer())
    else:
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores)


def bleu(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """sacrebleu corpus BLEU-4 (0-100)."""
    import sacrebleu

    if not predictions:
        return 0.0
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize="zh" if lang == "zh" else "13a").score


def normalise_for_match(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", text).strip()


def facts_found(answer: str, facts: Sequence[str]) -> list[bool]:
    answer_n = normalise_for_match(answer)
    return [normalise_for_match(fact) in answer_n for fact in facts]


def fact_accuracy(answers: Sequence[str], facts: Sequence[Sequence[str]]) -> float | None:
    """Share of rows whose answer contains every one of its key facts; None if no row has facts."""
    scored = [all(facts_found(a, f)) for a, f in zip(answers, facts) if f]
    return sum(scored) / len(scored) if scored else None


def score(predictions: Sequence[str], references: Sequence[str], facts: Sequence[Sequence[str]], lang: str) -> dict:
    return {
        "n": len(predictions),
        "rougeL": rouge_l(predictions, references, lang),
        "bleu": bleu(predictions, references, lang),
        "fact_accuracy": fact_accuracy(predictions, facts),
    }
