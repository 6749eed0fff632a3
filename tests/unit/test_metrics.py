import pytest
import sacrebleu
from rouge_score import rouge_scorer

from seektune.evaluate.metrics import bleu, fact_accuracy, facts_found, rouge_l

PREDS = ["Returns are accepted within 45 days of delivery.", "Shipping costs five dollars.", "I do not know."]
REFS = ["You can return items within 45 days of delivery.", "Standard shipping costs $4.95.", "LarkCare adds 3 years."]
ZH_PREDS = ["退货期限是45天。", "运费是五美元。"]
ZH_REFS = ["签收后45天内可以退货。", "标准运费为4.95美元。"]


def test_bleu_equals_sacrebleu_corpus_score():
    assert bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert bleu(ZH_PREDS, ZH_REFS, "zh") == pytest.approx(
        sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score, abs=1e-9)


def test_rouge_l_equals_rouge_score_mean_f1():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS)) / 3
    assert rouge_l(PREDS, REFS) == pytest.approx(expected, abs=1e-9)


def test_rouge_l_chinese_is_character_level():
    # "退货期限是45天。" vs "签收后45天内可以退货。": chars 退货期限是 45 天 / 签收后 45 天内可以退货
    # tokens: [退,货,期,限,是,45,天] and [签,收,后,45,天,内,可,以,退,货]; LCS = [45, 天] or [退, 货] -> 2
    value = rouge_l(ZH_PREDS[:1], ZH_REFS[:1], "zh")
    p, r = 2 / 7, 2 / 10
    assert value == pytest.approx(2 * p * r / (p + r), abs=1e-9)


def test_fact_accuracy_requires_every_fact():
    answers = ["Returns within 45 DAYS.", "It costs $4.95 and takes 2 days.", "No idea"]
    facts = [["45 days"], ["$4.95", "3 days"], ["LarkCare"]]
    assert facts_found(answers[1], facts[1]) == [True, False]
    assert fact_accuracy(answers, facts) == pytest.approx(1 / 3)
    assert fact_accuracy(["x"], [[]]) is None
    assert facts_found("４５天内", ["45天"]) == [True]  # full-width digits normalised

