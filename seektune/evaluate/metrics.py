"""Text metrics shared by every stage, so base, tuned and served models are scored one way.

BLEU and chrF come from sacrebleu, ROUGE from rouge-score, classification metrics
from scikit-learn; the rest (distinct-n, exact match, term coverage, numeric error,
answer length) are a few lines each and are written here.

Chinese is scored at the character level for ROUGE and distinct-n and with sacrebleu's
``zh`` tokeniser for BLEU; a text counts as Chinese when a good share of its letters are CJK
(:func:`seektune.text.language_of`). Answers from reasoning models should go through
:func:`seektune.text.strip_reasoning` first, so the ``<think>`` block is never scored as the answer.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Hashable, Sequence
from typing import Any

from seektune.text import cjk_tokens, facts_of, normalise_for_match, numbers_in, tokens_of


class _CharTokenizer:
    """rouge-score's tokenizer interface over :func:`seektune.text.cjk_tokens`: each ideograph is a token."""

    def tokenize(self, text: str) -> list[str]:
        return cjk_tokens(text)


# ---------------------------------------------------------------- overlap with the reference


def _rouge(predictions: Sequence[str], references: Sequence[str], key: str, lang: str) -> float:
    """Mean rouge-score F1 for ``key`` ('rouge1', 'rougeL', ...) over pairs; CJK by character."""
    from rouge_score import rouge_scorer

    if not predictions:
        return 0.0
    if lang == "zh":
        scorer = rouge_scorer.RougeScorer([key], tokenizer=_CharTokenizer())
    else:
        scorer = rouge_scorer.RougeScorer([key], use_stemmer=False)
    scores = [scorer.score(ref, pred)[key].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores)


def rouge_l(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """Mean ROUGE-L F1 over pairs (0-1)."""
    return _rouge(predictions, references, "rougeL", lang)


def rouge_n(predictions: Sequence[str], references: Sequence[str], n: int = 1, lang: str = "en") -> float:
    """Mean ROUGE-N F1 over pairs (0-1); ``n=1`` is ROUGE-1, ``n=2`` ROUGE-2."""
    if not 1 <= n <= 9:
        raise ValueError(f"rouge-score supports ROUGE-1 to ROUGE-9, not ROUGE-{n}")
    return _rouge(predictions, references, f"rouge{n}", lang)


def bleu(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """sacrebleu corpus BLEU-4 (0-100)."""
    import sacrebleu

    if not predictions:
        return 0.0
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize="zh" if lang == "zh" else "13a").score


def chrf(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """sacrebleu corpus chrF (character 6-grams, beta 2; 0-100).

    chrF works on characters with whitespace removed, so it needs no tokeniser and treats
    Chinese and English alike; ``lang`` is accepted only so every metric here is called the same way.
    """
    import sacrebleu

    del lang
    if not predictions:
        return 0.0
    return sacrebleu.corpus_chrf(list(predictions), [list(references)]).score


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of pairs equal after :func:`normalise_for_match` (0-1)."""
    if not predictions:
        return 0.0
    same = [normalise_for_match(p) == normalise_for_match(r) for p, r in zip(predictions, references)]
    return sum(same) / len(same)


def facts_found(answer: str, facts: Sequence[str]) -> list[bool]:
    answer_n = normalise_for_match(answer)
    return [normalise_for_match(fact) in answer_n for fact in facts]


def fact_accuracy(answers: Sequence[str], facts: Sequence[Sequence[str]]) -> float | None:
    """Share of rows whose answer contains every one of its key facts; None if no row has facts."""
    scored = [all(facts_found(a, f)) for a, f in zip(answers, facts) if f]
    return sum(scored) / len(scored) if scored else None


def _term_in(term: str, text_n: str) -> bool:
    """Whether a glossary term occurs in normalised text.

    Latin terms must stand as whole words ("RMA" is not found in "pharmacy"); a
    neighbouring CJK character is still a boundary, so "LarkCare在" holds "LarkCare".
    CJK terms are plain substrings, since Chinese has no spaces between words.
    """
    term_n = normalise_for_match(term)
    if not term_n:
        return False
    return re.search(rf"(?<![a-z0-9]){re.escape(term_n)}(?![a-z0-9])", text_n) is not None


def term_coverage(
    predictions: Sequence[str], terms: Sequence[str], references: Sequence[str] | None = None
) -> float | None:
    """How well answers use the domain's vocabulary (0-1); None when no row can be scored.

    With ``references`` (the usual case): per row, the glossary terms found in the answer
    among those found in the reference, i.e. recall of the reference's domain terms; rows
    whose reference holds no glossary term are skipped. Terms the answer adds beyond the
    reference neither help nor hurt.
    Without ``references``: per row, the share of the whole glossary found in the answer.
    Either way the per-row shares are averaged over rows. Matching is case- and
    width-insensitive (:func:`normalise_for_match`); see :func:`_term_in` for word boundaries.
    """
    glossary = list(dict.fromkeys(t for t in terms if normalise_for_match(t)))
    if not glossary or not predictions:
        return None
    shares = []
    for i, prediction in enumerate(predictions):
        wanted = glossary
        if references is not None:
            reference_n = normalise_for_match(references[i])
            wanted = [t for t in glossary if _term_in(t, reference_n)]
            if not wanted:
                continue
        answer_n = normalise_for_match(prediction)
        shares.append(sum(_term_in(t, answer_n) for t in wanted) / len(wanted))
    return sum(shares) / len(shares) if shares else None


# ---------------------------------------------------------------- the answers themselves


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 1) -> float:
    """Unique n-grams / total n-grams over the whole set (0-1); 0.0 when there are no n-grams.

    A diversity measure: low values mean the model repeats itself across answers. n-grams
    never cross two texts; tokens are words for English and ideographs for Chinese (:func:`tokens_of`).
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    grams = [gram for text in texts for gram in _ngrams(tokens_of(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def answer_length(texts: Sequence[str]) -> dict[str, float]:
    """Mean characters (whitespace-stripped text) and mean words per answer.

    Words are :func:`tokens_of` tokens, so each Chinese ideograph counts as one word and
    punctuation counts as none.
    """
    if not texts:
        return {"chars": 0.0, "words": 0.0}
    return {
        "chars": sum(len(t.strip()) for t in texts) / len(texts),
        "words": sum(len(tokens_of(t)) for t in texts) / len(texts),
    }


# ---------------------------------------------------------------- numeric answers

# An optional minus (ASCII hyphen, U+2212 or en dash) that is not part of a word or range
# ("2-3 days" gives 2, "-5" gives -5), an optional currency sign, then digits with
# optional thousands commas and decimals.
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w.])[-\u2212\u2013])?(?:[$€£¥]\s?)?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?"
)


def first_number(text: str) -> float | None:
    """The first number in ``text``, or None.

    Full-width digits are read (NFKC), thousands commas dropped ("1,299.50" -> 1299.5),
    currency signs skipped ("$4.95" -> 4.95, "-$5" -> -5), units ignored ("45天" -> 45).
    A comma not followed by exactly three digits ends the number ("12,34" -> 12);
    European "1.299,50" is not understood.
    """
    match = _NUMBER.search(unicodedata.normalize("NFKC", text))
    if not match:
        return None
    value = float(match.group("int").replace(",", "") + (match.group("frac") or ""))
    return -value if match.group("sign") else value


def _numeric_pairs(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[float], dict[str, int]]:
    """Absolute errors of rows where both sides hold a number, and counts of the rows left out.

    A reference without a number means the row is not a numeric question, so it is left
    out; a prediction without a number is a failure of the model, counted separately so a
    model that stops answering with numbers cannot look more accurate.
    """
    errors: list[float] = []
    counts = {"n_scored": 0, "prediction_without_number": 0, "reference_without_number": 0}
    for prediction, reference in zip(predictions, references):
        truth = first_number(reference)
        if truth is None:
            counts["reference_without_number"] += 1
            continue
        guess = first_number(prediction)
        if guess is None:
            counts["prediction_without_number"] += 1
            continue
        errors.append(abs(guess - truth))
        counts["n_scored"] += 1
    return errors, counts


def mae(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean absolute error of the first numbers (:func:`first_number`).

    ``{"mae": float | None, "n_scored", "prediction_without_number", "reference_without_number"}``;
    ``mae`` is None when no row has a number on both sides.
    """
    errors, counts = _numeric_pairs(predictions, references)
    return {"mae": sum(errors) / len(errors) if errors else None, **counts}


def rmse(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Root mean squared error of the first numbers; same shape and row rules as :func:`mae`."""
    errors, counts = _numeric_pairs(predictions, references)
    return {"rmse": math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else None, **counts}


# ---------------------------------------------------------------- classification


def accuracy(labels_true: Sequence[Hashable], labels_pred: Sequence[Hashable]) -> float:
    """Share of exact label matches (scikit-learn ``accuracy_score``)."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(list(labels_true), list(labels_pred)))


def macro_f1(
    labels_true: Sequence[Hashable], labels_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> float:
    """Unweighted mean of per-class F1 (scikit-learn, ``zero_division=0``).

    Classes default to those occurring in either sequence; pass ``labels`` to average over a
    fixed label set, so a class the model never predicts and the split never holds still counts.
    """
    from sklearn.metrics import f1_score

    return float(f1_score(list(labels_true), list(labels_pred), labels=labels, average="macro", zero_division=0))


def auc_roc(labels_true: Sequence[Hashable], scores: Any, classes: Sequence[Hashable] | None = None) -> float | None:
    """ROC AUC; None when fewer than two classes occur in ``labels_true`` (AUC is undefined).

    Binary: ``scores`` is one score per row for the positive class, which is ``classes[1]``
    (default: the larger of the two labels, scikit-learn's convention).
    Multi-class: ``scores`` is ``(rows, len(classes))`` with column k scoring ``classes[k]``
    (default classes: ``0 .. k-1``); the result is one-vs-rest AUC averaged over the classes
    that occur. Done per class rather than with ``multi_class="ovr"`` because scikit-learn
    refuses a small test split that lacks a class, whose other classes still have a meaningful AUC.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(list(labels_true))
    present = sorted(set(truth.tolist()))
    if len(present) < 2:
        return None
    values = np.asarray(scores, dtype=float)
    if values.ndim == 1:
        positive = classes[1] if classes is not None else present[-1]
        if len(present) > 2:
            raise ValueError(f"one score per row needs two classes, but labels_true holds {len(present)}")
        return float(roc_auc_score(truth == positive, values))
    columns = list(classes) if classes is not None else list(range(values.shape[1]))
    if len(columns) != values.shape[1]:
        raise ValueError(f"scores have {values.shape[1]} columns but {len(columns)} classes were given")
    unknown = [label for label in present if label not in columns]
    if unknown:
        raise ValueError(f"labels {unknown} have no score column; classes are {columns}")
    return float(np.mean([roc_auc_score(truth == label, values[:, columns.index(label)]) for label in present]))


# ---------------------------------------------------------------- everything at once


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    facts: Sequence[Sequence[str]],
    lang: str,
    *,
    full: bool = False,
) -> dict:
    """The eval stage's scores for one system: n, rougeL, bleu, fact_accuracy.

    ``full=True`` adds rouge1, rouge2, chrf, distinct_1, distinct_2, exact_match,
    answer_chars and answer_words; the default stays cheap for per-language breakdowns.
    """
    result = {
        "n": len(predictions),
        "rougeL": rouge_l(predictions, references, lang),
        "bleu": bleu(predictions, references, lang),
        "fact_accuracy": fact_accuracy(predictions, facts),
    }
    if full:
        length = answer_length(predictions)
        result.update({
            "rouge1": rouge_n(predictions, references, 1, lang),
            "rouge2": rouge_n(predictions, references, 2, lang),
            "chrf": chrf(predictions, references, lang),
            "distinct_1": distinct_n(predictions, 1),
            "distinct_2": distinct_n(predictions, 2),
            "exact_match": exact_match(predictions, references),
            "answer_chars": length["chars"],
            "answer_words": length["words"],
        })
    return result


# ---------------------------------------------------------------- grounding in retrieved passages

# a citation: [1], [2,3], [2, 3], [1-3], 【1】, ［2］ (full width), [1，2] and [1、2] as Chinese writes lists
_CITATION = re.compile(r"[\[【［]\s*(\d{1,3}(?:\s*[-–~,，、;；]\s*\d{1,3})*)\s*[\]】］]")
_CITED_NUMBER = re.compile(r"\d+|[-–~]")


def cited_passages(answer: str) -> list[int]:
    """The passage numbers an answer cites, in order of first mention, each once.

    Reads ``[1]``, ``[2,3]``, ``[2, 3]``, ``[1][2]``, ``[1-3]`` (a range: 1, 2, 3), ``【1】`` and ``［1］``,
    with ``,`` ``，`` ``、`` or ``;`` between numbers. Whether a number names a passage that was given
    is for the caller to check (:func:`citation_correct` ignores numbers outside 1..len(passages)).
    """
    cited: list[int] = []
    for match in _CITATION.finditer(answer):
        parts = _CITED_NUMBER.findall(match.group(1))
        numbers: list[int] = []
        for i, part in enumerate(parts):
            if part.isdigit():
                if i >= 2 and parts[i - 1] in "-–~" and numbers and int(part) > numbers[-1]:
                    numbers.extend(range(numbers[-1] + 1, min(int(part), numbers[-1] + 20) + 1))
                else:
                    numbers.append(int(part))
        cited += [n for n in numbers if n not in cited]
    return cited


def answer_claims(answer: str) -> list[str]:
    """What :func:`faithfulness` checks: the answer's facts (:func:`seektune.text.facts_of`: amounts,
    durations, times, phone numbers, addresses, codes) and then each number (:func:`seektune.text.numbers_in`)
    that is not already part of one of those facts. Citation markers are removed first, so ``[1]`` is no claim."""
    text = _CITATION.sub(" ", answer)
    facts = facts_of(text)
    in_facts = set().union(*(numbers_in(fact) for fact in facts))
    numbers = [n for n in sorted(numbers_in(text)) if n not in in_facts]
    return facts + numbers


def faithfulness(answer: str, passages: Sequence[str]) -> float | None:
    """Share of the answer's claims (:func:`answer_claims`) found in the passages; None for an answer with none.

    A fact is found when it occurs in the passages' text (both through :func:`normalise_for_match`); a bare
    number when it is one of the passages' numbers, so "4.95" is not found in "14.95". An answer that
    invents a fee or a time limit the passages do not give scores below 1; one that only copies them, 1.
    The check is lexical: "45天" is not found in an English passage that says "45 days".
    """
    claims = answer_claims(answer)
    if not claims:
        return None
    joined = "\n".join(passages)
    text_n, numbers = normalise_for_match(joined), numbers_in(joined)
    found = [claim in numbers if claim.replace(",", "").replace(".", "").replace(":", "").isdigit()
             else normalise_for_match(claim) in text_n for claim in claims]
    return sum(found) / len(found)


def citation_correct(answer: str, passages: Sequence[str], facts: Sequence[str]) -> bool | None:
    """Whether the passages an answer cites hold the row's reference facts.

    None (not scored) when the row has no reference facts, or when the answer cites no passage that was
    given (no ``[n]`` with n in 1..len(passages)). Otherwise True when the cited passages, taken together,
    contain every reference fact (:func:`facts_found` on their joined text), False when one is missing:
    citing a passage that does not say what the answer needed counts against the answer.
    """
    cited = [n for n in cited_passages(answer) if 1 <= n <= len(passages)]
    if not facts or not cited:
        return None
    return all(facts_found("\n".join(passages[n - 1] for n in cited), facts))


# A refusal: the answer says it cannot find or does not know the answer. Written for the refusal texts that
# synthesis trains on (seektune.recipe.synth REFUSAL_EN / REFUSAL_ZH), the retrieval prompt's "say that you
# cannot find it" / 找不到 (seektune.rag.prompt) and the common ways models decline, in English and Chinese.
_REFUSAL_EN = re.compile(
    r"\b(?:can ?not|can't|could ?not|couldn't|unable to|(?:am|was|were|is) not able to|wasn't able to)\s+"
    r"(?:find|locate|answer|say|tell|confirm|provide|give|determine|help with th(?:at|is))\b"
    r"|\b(?:don't|do not|doesn't|does not|didn't|did not)\s+(?:know|have (?:any |that |this |the |enough )?"
    r"(?:information|details|info|data))\b"
    r"|\b(?:have|has|had) no (?:information|details|idea|data)\b|\bno (?:information|details) (?:about|on|regarding)\b"
    r"|\bnot (?:sure|certain)\b|\bnot (?:mentioned|covered|stated|specified|described|included|listed|found) in\b"
    r"|\b(?:passages?|documents?|handbook|polic(?:y|ies)|sources?|context)\s+(?:do(?:es)?n't|do(?:es)? not)\s+"
    r"(?:contain|say|mention|cover|include|specify|provide|address|answer)\b",
    re.IGNORECASE)
_REFUSAL_ZH = re.compile(
    r"找不到|没有找到|未找到|查不到|没有查到|无法(?:可靠地)?(?:回答|确定|提供|告知|给出|判断|找到)|不能回答|"
    r"不知道|不清楚|不确定|没有(?:这方面的?|相关的?|有关的?|关于[^，。,.]{0,20}的)?(?:信息|资料|内容|记载|说明)|"
    r"(?:资料|文档|手册|政策|文件)[^，。,.]{0,6}(?:没有|未)(?:提到|提及|说明|包含|涉及|记载)|没有提到|未提及|没有提及")


def is_refusal(answer: str) -> bool:
    """Whether the answer declines: says it cannot find the answer, does not know, or has no information.

    English: "I can't find that", "cannot answer", "I don't know", "no information about", "not sure",
    "not mentioned in", "the passages do not contain ..." (curly apostrophes read as straight ones). Chinese:
    找不到 / 没有找到, 无法回答 / 无法可靠地回答 / 无法确定, 不知道 / 不清楚, 没有(相关)信息, 资料中没有提到 ...
    A lexical detector: an answer that declines in other words is missed, and one that quotes such a phrase
    while answering ("we are not able to answer by phone") is counted; the out-of-scope rate is meant for
    comparing systems on the same questions.
    """
    text = unicodedata.normalize("NFKC", answer).replace("\u2019", "'").replace("\u2018", "'")
    return bool(_REFUSAL_EN.search(text) or _REFUSAL_ZH.search(text))
