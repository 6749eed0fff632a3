"""A/B statistics, the pairwise judge, --fail-under gates and rater agreement, pinned to hand values."""

import itertools

import pytest

from seektune.evaluate.compare import (
    JudgeReplyError,
    ab_summary,
    bootstrap_ci,
    check_gates,
    judge_both_orders,
    judge_pair,
    krippendorff_alpha,
    parse_fail_under,
    parse_verdict,
    per_row_outcomes,
    sign_test_p,
    win_rate,
)

# ---------------------------------------------------------------- outcomes and statistics


def test_outcomes_are_b_against_a():
    base, tuned = [0.2, 0.5, 0.5, 0.9], [0.4, 0.5, 0.52, 0.1]
    assert per_row_outcomes(base, tuned) == ["win", "tie", "win", "loss"]
    assert per_row_outcomes(base, tuned, tie_margin=0.05) == ["win", "tie", "tie", "loss"]
    with pytest.raises(ValueError, match="pair up"):
        per_row_outcomes([1.0], [1.0, 2.0])


def test_win_rate_counts_ties_half():
    assert win_rate(["win", "win", "tie", "loss"]) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError, match="no outcomes"):
        win_rate([])
    with pytest.raises(ValueError, match="unknown outcomes"):
        win_rate(["win", "draw"])


def test_bootstrap_ci_degenerate_and_hand_cases():
    assert bootstrap_ci(["win"] * 20) == (1.0, 1.0)
    assert bootstrap_ci(["tie"] * 5) == (0.5, 0.5)
    # two rows, one win one loss: a resample's rate is 0, 0.5 or 1 with chance 1/4, 1/2, 1/4,
    # so with 2000 draws both tails reach the extremes: the 95% CI is (0, 1)
    assert bootstrap_ci(["win", "loss"]) == (0.0, 1.0)
    assert bootstrap_ci(["win", "loss"], seed=3) == bootstrap_ci(["win", "loss"], seed=3)
    # 70 wins of 100: normal approximation 0.7 +- 1.96 * sqrt(0.21 / 100) = (0.610, 0.790)
    low, high = bootstrap_ci(["win"] * 70 + ["loss"] * 30, seed=0)
    assert low == pytest.approx(0.610, abs=0.02) and high == pytest.approx(0.790, abs=0.02)
    assert bootstrap_ci(["win"] * 70 + ["loss"] * 30, confidence=0.5)[1] - 0.7 < high - 0.7


def test_sign_test_exact_binomial():
    # 8 wins, 1 loss, ties dropped: p = 2 * (C(9,0) + C(9,1)) / 2**9
    assert sign_test_p(["win"] * 8 + ["loss"] + ["tie"] * 3) == pytest.approx(2 * 10 / 512, abs=1e-12)
    assert sign_test_p(["win"] * 5 + ["loss"] * 5) == pytest.approx(1.0)
    assert sign_test_p(["tie"] * 4) == 1.0
    assert sign_test_p(["win"] * 10) == pytest.approx(2 / 1024, abs=1e-12)


def test_ab_summary_fields_and_bar():
    base = [0.1] * 10
    tuned = [0.2] * 8 + [0.1] + [0.0]
    summary = ab_summary(base, tuned, metric_name="rougeL", bar=0.7)
    assert {k: summary[k] for k in ("metric", "n", "wins", "ties", "losses", "bar")} == {
        "metric": "rougeL", "n": 10, "wins": 8, "ties": 1, "losses": 1, "bar": 0.7}
    assert summary["win_rate"] == pytest.approx(0.85)
    assert summary["ci_low"] <= 0.85 <= summary["ci_high"]
    assert summary["p_value"] == pytest.approx(2 * 10 / 512)
    assert summary["passed"] is True
    assert ab_summary(base, tuned, metric_name="rougeL", bar=0.9)["passed"] is False


# ---------------------------------------------------------------- pairwise judge


def _answer_judge(better: str):
    """A fair fake judge: prefers whichever answer slot holds ``better``."""
    def chat(messages):
        user = messages[-1]["content"]
        a = user.split("[Answer A]\n")[1].split("\n[End of answer A]")[0]
        return f"A is {'better' if a == better else 'worse'}.\nVerdict: {'A' if a == better else 'B'}"
    return chat


def test_judge_pair_and_both_orders_with_a_fair_judge():
    chat = _answer_judge("45 days")
    assert judge_pair(chat, "Return window?", "45 days", "I don't know", "correctness") == "A"
    assert judge_both_orders(chat, "Return window?", "I don't know", "45 days", "correctness") == "win"
    assert judge_both_orders(chat, "Return window?", "45 days", "I don't know", "correctness") == "loss"


def test_position_biased_judge_becomes_ties():
    seen = []

    def always_a(messages):
        seen.append(messages)
        return "Both fine, but the first is clearer.\nVerdict: A"

    assert judge_both_orders(always_a, "q", "base answer", "tuned answer", "rubric") == "tie"
    assert len(seen) == 2 and "tuned answer" in seen[1][-1]["content"].split("[Answer B]")[0]


@pytest.mark.parametrize("reply, verdict", [
    ("Reasoning...\nVerdict: B", "B"),
    ("verdict: TIE", "tie"),
    ("**Verdict:** A", "A"),
    ("Verdict：B", "B"),
    ("[[A]]", "A"),
    ("B", "B"),
    ("<think>Verdict: A? no...</think>\nVerdict: B", "B"),
    ("first draft Verdict: A\nafter all, Verdict: B", "B"),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_unparseable_verdict_names_the_reply():
    with pytest.raises(JudgeReplyError, match="I cannot decide"):
        judge_pair(lambda m: "I cannot decide.", "q", "a", "b", "r")


# ---------------------------------------------------------------- gates


def test_parse_fail_under():
    assert parse_fail_under("rougeL=0.3, win_rate=0.7,") == {"rougeL": 0.3, "win_rate": 0.7}
    assert parse_fail_under("") == {}
    for bad, named in [("rougeL0.3", "'rougeL0.3'"), ("rougeL=high", "'high'"), ("=0.3", "'=0.3'"),
                       ("bleu=nan", "'bleu=nan'"), ("bleu=1,bleu=2", "'bleu'")]:
        with pytest.raises(ValueError, match=named):
            parse_fail_under(bad)


def test_check_gates_reports_a_planted_failure_and_unknown_names():
    metrics = {"n": 50, "rougeL": 0.21, "bleu": 31.0, "win_rate": 0.72, "fact_accuracy": None, "by_language": {}}
    assert check_gates(metrics, parse_fail_under("bleu=30,win_rate=0.7")) == []
    failures = check_gates(metrics, parse_fail_under("rougeL=0.3,win_rate=0.7,rogueL=0.1,fact_accuracy=0.5"))
    assert failures[0] == "rougeL 0.21 < 0.30"
    assert failures[1] == "unknown metric 'rogueL'; available: bleu, n, rougeL, win_rate"
    assert failures[2].startswith("fact_accuracy has no value (None)")
    assert len(failures) == 3
    assert check_gates({"rougeL": 0.2999}, {"rougeL": 0.3}) == ["rougeL 0.2999 < 0.3000"]


# ---------------------------------------------------------------- rater agreement

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4-observer x 12-unit
# example with missing values; published: interval 0.849, ordinal 0.815, nominal 0.743.
_K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _interval_alpha_by_definition(ratings):
    """alpha = 1 - D_o / D_e with squared differences, over units rated at least twice."""
    units = [[row[u] for row in ratings if row[u] is not None] for u in range(len(ratings[0]))]
    units = [values for values in units if len(values) >= 2]
    pooled = [v for values in units for v in values]
    n = len(pooled)
    observed = sum(sum((a - b) ** 2 for a, b in itertools.permutations(values, 2)) / (len(values) - 1)
                   for values in units) / n
    expected = sum((a - b) ** 2 for a, b in itertools.permutations(pooled, 2)) / (n * (n - 1))
    return 1 - observed / expected


def test_krippendorff_alpha_on_the_textbook_example():
    by_definition = _interval_alpha_by_definition(_K2011)
    assert by_definition == pytest.approx(0.849, abs=5e-4)  # the published value
    assert krippendorff_alpha(_K2011) == pytest.approx(by_definition, abs=1e-9)
    assert krippendorff_alpha(_K2011, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(_K2011, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two raters"):
        krippendorff_alpha([[1, 2]])
    with pytest.raises(ValueError, match="one entry per unit"):
        krippendorff_alpha([[1, 2], [1]])


def test_bootstrap_mean_ci_of_constant_rows_is_a_point_and_paired_delta_sees_a_constant_shift():
    from seektune.evaluate.compare import bootstrap_mean_ci, paired_delta_ci

    assert bootstrap_mean_ci([0.3] * 20) == pytest.approx((0.3, 0.3))
    # B is A plus 0.1 on every row: the paired difference has no spread at all, although
    # each system's own scores spread from 0 to 1
    a = [i / 19 for i in range(20)]
    assert paired_delta_ci(a, [x + 0.1 for x in a]) == pytest.approx((0.1, 0.1))
    with pytest.raises(ValueError, match="pair up"):
        paired_delta_ci([1.0], [1.0, 2.0])


def test_bootstrap_mean_ci_matches_the_normal_approximation_on_coin_flips():
    from seektune.evaluate.compare import bootstrap_mean_ci

    # 100 rows of 0/1 with mean 0.5: standard error 0.5 / sqrt(100) = 0.05, so the 95%
    # interval is close to 0.5 -/+ 1.96 * 0.05 = (0.402, 0.598)
    low, high = bootstrap_mean_ci([0.0, 1.0] * 50, n_resamples=4000, seed=3)
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)
