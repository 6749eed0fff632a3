"""The full metric set: library metrics equal their libraries, the hand-written ones equal hand counts."""

import math
import re

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from seektune.evaluate.metrics import (
    accuracy,
    answer_length,
    auc_roc,
    bleu,
    chrf,
    distinct_n,
    exact_match,
    first_number,
    macro_f1,
    mae,
    rmse,
    rouge_l,
    rouge_n,
    score,
    term_coverage,
)

PREDS = ["Returns are accepted within 45 days of delivery.", "Shipping costs five dollars.", "I do not know."]
REFS = ["You can return items within 45 days of delivery.", "Standard shipping costs $4.95.", "LarkCare adds 3 years."]
ZH_PREDS = ["退货期限是45天。", "运费是五美元。", "LarkCare延长保修3年"]
ZH_REFS = ["签收后45天内可以退货。", "标准运费为4.95美元。", "LarkCare在标准保修之外再延长3年"]


class _ReferenceCharTokenizer:
    """Written apart from seektune's: one token per ideograph, runs of ASCII letters/digits whole."""

    def tokenize(self, text):
        return re.findall(r"[\u4e00-\u9fff]|[a-z0-9]+", text.lower())


def _rouge_score_mean(preds, refs, key, tokenizer=None):
    scorer = rouge_scorer.RougeScorer([key], tokenizer=tokenizer)  # None: rouge-score's own tokenizer
    return sum(scorer.score(r, p)[key].fmeasure for p, r in zip(preds, refs)) / len(preds)


# ---------------------------------------------------------------- library metrics equal their libraries


def test_bleu_and_chrf_equal_sacrebleu_corpus_scores():
    assert bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-6)
    assert chrf(PREDS, REFS) == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-6)
    assert bleu(ZH_PREDS, ZH_REFS, "zh") == pytest.approx(
        sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score, abs=1e-6)
    assert chrf(ZH_PREDS, ZH_REFS, "zh") == pytest.approx(sacrebleu.corpus_chrf(ZH_PREDS, [ZH_REFS]).score, abs=1e-6)
    assert chrf([], []) == 0.0


@pytest.mark.parametrize("key, n", [("rouge1", 1), ("rouge2", 2), ("rougeL", None)])
def test_rouge_equals_rouge_score_in_english_and_chinese(key, n):
    ours_en = rouge_l(PREDS, REFS) if n is None else rouge_n(PREDS, REFS, n)
    ours_zh = rouge_l(ZH_PREDS, ZH_REFS, "zh") if n is None else rouge_n(ZH_PREDS, ZH_REFS, n, "zh")
    assert ours_en == pytest.approx(_rouge_score_mean(PREDS, REFS, key), abs=1e-6)
    assert ours_zh == pytest.approx(_rouge_score_mean(ZH_PREDS, ZH_REFS, key, _ReferenceCharTokenizer()), abs=1e-6)


def test_rouge_n_chinese_by_hand():
    # pred [退,货,期,限,是,45,天] (7), ref [签,收,后,45,天,内,可,以,退,货] (10): shared 退 货 45 天
    assert rouge_n(ZH_PREDS[:1], ZH_REFS[:1], 1, "zh") == pytest.approx(2 * 4 / (7 + 10), abs=1e-9)
    # bigrams: 6 and 9, shared 退货 and 45天
    assert rouge_n(ZH_PREDS[:1], ZH_REFS[:1], 2, "zh") == pytest.approx(2 * 2 / (6 + 9), abs=1e-9)
    with pytest.raises(ValueError, match="ROUGE-0"):
        rouge_n(PREDS, REFS, 0)


# ---------------------------------------------------------------- hand-written metrics by hand


def test_distinct_n_counts_over_the_whole_set():
    texts = ["The cat, the cat.", "the dog"]  # the cat the cat | the dog
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)  # {the, cat, dog} of 6
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # the-cat twice, cat-the, the-dog; never cat-the across texts
    assert distinct_n(["退货退货。"], 1) == pytest.approx(2 / 4)  # by character, punctuation dropped
    assert distinct_n(["退货退货。"], 2) == pytest.approx(2 / 3)  # 退货 货退 退货
    assert distinct_n(["one"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


def test_exact_match_after_normalisation():
    predictions, references = ["Yes.", " 45  DAYS", "no", "４５天"], ["yes.", "45 days", "No!", "45天"]
    assert exact_match(predictions, references) == pytest.approx(3 / 4)
    assert exact_match([], []) == 0.0


def test_term_coverage_against_reference_terms():
    glossary = ["RMA", "LarkCare", "保修"]
    refs = ["Open an RMA for LarkCare.", "保修期为一年。", "Hello there."]
    preds = ["Please open an rma.", "一年保修。", "Hi"]
    # row 1: RMA found of {RMA, LarkCare} -> 1/2; row 2: 保修 of {保修} -> 1; row 3 has no term: skipped
    assert term_coverage(preds, glossary, refs) == pytest.approx(0.75)
    # without references: share of the whole glossary per answer: 1/3, 1/3, 0
    assert term_coverage(preds, glossary) == pytest.approx(2 / 9)
    assert term_coverage(["Ask the pharmacy."], ["RMA"]) == 0.0  # whole words only
    assert term_coverage(["LarkCare在标准保修之外"], ["LarkCare"]) == 1.0  # CJK neighbour is a boundary
    assert term_coverage(preds, glossary, ["no terms", "none", "nada"]) is None
    assert term_coverage(preds, []) is None


def test_first_number_reads_prices_units_and_signs():
    cases = {"1,299.50 dollars": 1299.5, "$4.95": 4.95, "45天": 45.0, "-5 degrees": -5.0, "−3": -3.0,
             "-$5": -5.0, "2-3 days": 2.0, "item-42": 42.0, "12,34": 12.0, "４５天": 45.0, "约￥99元": 99.0}
    for text, expected in cases.items():
        assert first_number(text) == expected, text
    assert first_number("no number here") is None


def test_mae_rmse_report_rows_without_numbers():
    preds = ["It costs $4.95.", "1,299.50", "about 40天", "I am not sure", "-3 °C", "anything"]
    refs = ["$5.95", "1,300", "45天", "12", "−5 °C", "Yes, it is."]
    errors = [1.0, 0.5, 5.0, 2.0]  # row 4: no number in the prediction; row 6: none in the reference
    got_mae, got_rmse = mae(preds, refs), rmse(preds, refs)
    assert got_mae["mae"] == pytest.approx(sum(errors) / 4)
    assert got_rmse["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))
    for got in (got_mae, got_rmse):
        assert (got["n_scored"], got["prediction_without_number"], got["reference_without_number"]) == (4, 1, 1)
    assert mae(["none"], ["5"]) == {"mae": None, "n_scored": 0, "prediction_without_number": 1,
                                    "reference_without_number": 0}


def test_answer_length_in_chars_and_words():
    got = answer_length([" Hello world. ", "退货期限"])
    assert got == {"chars": pytest.approx((12 + 4) / 2), "words": pytest.approx((2 + 4) / 2)}
    assert answer_length([]) == {"chars": 0.0, "words": 0.0}


# ---------------------------------------------------------------- classification


def test_classification_metrics_by_hand_and_against_sklearn():
    truth, predicted = [0, 1, 1, 0], [0, 1, 0, 0]
    assert accuracy(truth, predicted) == 0.75
    # class 0: P 2/3, R 1 -> F1 0.8; class 1: P 1, R 1/2 -> F1 2/3
    assert macro_f1(truth, predicted) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1(["a", "b"], ["a", "a"], labels=["a", "b", "c"]) == pytest.approx((2 / 3 + 0 + 0) / 3)
    # the textbook AUC: of the 4 (negative, positive) pairs, 3 are ordered correctly
    assert auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc_roc(["no", "no", "yes"], [0.2, 0.1, 0.9]) == 1.0
    assert auc_roc([1, 1], [0.3, 0.4]) is None

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    p = rng.dirichlet(np.ones(3), 40)
    pred = p.argmax(axis=1)
    assert accuracy(y, pred) == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert auc_roc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    # a split lacking class 2 still gets the AUC of classes 0 and 1
    kept = y != 2
    expected = np.mean([roc_auc_score(y[kept] == k, p[kept][:, k]) for k in (0, 1)])
    assert auc_roc(y[kept], p[kept]) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="columns"):
        auc_roc(y, p, classes=[0, 1])


# ---------------------------------------------------------------- score()


def test_score_default_keys_unchanged_and_full_adds_the_rest():
    facts = [["45 days"], [], []]
    base = score(PREDS, REFS, facts, "en")
    assert set(base) == {"n", "rougeL", "bleu", "fact_accuracy"}
    full = score(PREDS, REFS, facts, "en", full=True)
    assert {k: full[k] for k in base} == base
    assert set(full) - set(base) == {"rouge1", "rouge2", "chrf", "distinct_1", "distinct_2", "exact_match",
                                     "answer_chars", "answer_words"}
    assert full["chrf"] == pytest.approx(chrf(PREDS, REFS))
    assert full["exact_match"] == 0.0
