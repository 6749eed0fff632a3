"""A/B comparison of two systems: per-row outcomes, win rate with a bootstrap CI, a sign test,
a pairwise LLM judge, ``--fail-under`` gates and agreement between human raters.

    seektune eval runs/customer-service --against BASE --fail-under rougeL=0.3,win_rate=0.7

Direction throughout: system A is the baseline (the base model), system B the candidate
(the tuned model); a "win" is a row where B beats A. ``win_rate`` counts a tie as half a
win, so 0.5 means "no better, no worse".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from seektune.text import strip_reasoning

OUTCOMES: tuple[str, ...] = ("win", "tie", "loss")
_OUTCOME_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


# ---------------------------------------------------------------- outcomes and their statistics


def per_row_outcomes(scores_a: Sequence[float], scores_b: Sequence[float], tie_margin: float = 0.0) -> list[str]:
    """Per row, B's (tuned) outcome against A (base): "win", "tie" or "loss".

    "win" where B scores more than ``tie_margin`` above A, "loss" where more than
    ``tie_margin`` below, else "tie". Higher scores must mean better.
    """
    if len(scores_a) != len(scores_b):
        raise ValueError(f"system A has {len(scores_a)} scores but system B has {len(scores_b)}; rows must pair up")
    if tie_margin < 0:
        raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
    outcomes = []
    for a, b in zip(scores_a, scores_b):
        diff = b - a
        outcomes.append("win" if diff > tie_margin else "loss" if diff < -tie_margin else "tie")
    return outcomes


def _values(outcomes: Sequence[str]) -> list[float]:
    unknown = sorted(set(outcomes) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"unknown outcomes {unknown}; expected {', '.join(OUTCOMES)}")
    if not outcomes:
        raise ValueError("no outcomes: nothing was compared")
    return [_OUTCOME_VALUE[o] for o in outcomes]


def win_rate(outcomes: Sequence[str]) -> float:
    """(wins + ties / 2) / rows: the chance B beats A on a random row, a tie split evenly."""
    values = _values(outcomes)
    return sum(values) / len(values)


def bootstrap_ci(
    outcomes: Sequence[str], n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`win_rate`, resampling rows with replacement (seeded).

    A row is one of three values, so resampling n rows is drawing the counts of wins, ties
    and losses from a multinomial: the same distribution as indexing rows, in
    O(n_resamples) memory instead of O(n_resamples x rows).
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    values = _values(outcomes)
    n = len(values)
    shares = [sum(1 for v in values if v == target) / n for target in (1.0, 0.5, 0.0)]
    counts = np.random.default_rng(seed).multinomial(n, shares, size=n_resamples)
    rates = (counts[:, 0] + 0.5 * counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(rates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-row ``values`` (resampling rows, seeded)."""
    import numpy as np

    if not values:
        raise ValueError("no values: nothing to bootstrap")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.array([data[rng.integers(0, len(data), len(data))].mean() for _ in range(n_resamples)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_delta_ci(
    values_a: Sequence[float], values_b: Sequence[float], n_resamples: int = 2000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap CI of mean(B - A) over paired rows: resampling keeps each row's two scores together,
    so the interval reflects the difference on the same questions, not two independent spreads."""
    if len(values_a) != len(values_b):
        raise ValueError(f"system A has {len(values_a)} scores but system B has {len(values_b)}; rows must pair up")
    return bootstrap_mean_ci([b - a for a, b in zip(values_a, values_b)], n_resamples, seed, confidence)


def sign_test_p(outcomes: Sequence[str]) -> float:
    """Two-sided exact binomial sign test of wins vs losses (ties left out); 1.0 with no decided row.

    scipy comes with scikit-learn, a dependency, so its exact ``binomtest`` is used.
    """
    from scipy.stats import binomtest

    _values(outcomes)
    wins, losses = outcomes.count("win"), outcomes.count("loss")
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def summarise_outcomes(outcomes: Sequence[str], *, metric_name: str, bar: float = 0.7, seed: int = 0) -> dict[str, Any]:
    """Counts, win rate, its 95% CI, sign-test p and whether the win rate clears ``bar``."""
    low, high = bootstrap_ci(outcomes, seed=seed)
    rate = win_rate(outcomes)
    return {
        "metric": metric_name,
        "n": len(outcomes),
        "wins": outcomes.count("win"),
        "ties": outcomes.count("tie"),
        "losses": outcomes.count("loss"),
        "win_rate": rate,
        "ci_low": low,
        "ci_high": high,
        "p_value": sign_test_p(outcomes),
        "bar": bar,
        "passed": rate >= bar,
    }


def ab_summary(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    metric_name: str,
    bar: float = 0.7,
    seed: int = 0,
    tie_margin: float = 0.0,
) -> dict[str, Any]:
    """:func:`summarise_outcomes` of B (tuned) vs A (base) on one per-row metric."""
    outcomes = per_row_outcomes(scores_a, scores_b, tie_margin)
    return summarise_outcomes(outcomes, metric_name=metric_name, bar=bar, seed=seed)


# ---------------------------------------------------------------- pairwise LLM judge


class JudgeReplyError(ValueError):
    """The judge's reply names no verdict; the message carries the raw reply."""


EndpointChat = Callable[[list[dict[str, str]]], str]

_JUDGE_SYSTEM = (
    "You are an impartial judge comparing two assistant answers to the same question. "
    "Judge only by the rubric; ignore the order of the answers and their length. "
    "Explain briefly, then end with one final line that is exactly 'Verdict: A', "
    "'Verdict: B' or 'Verdict: tie'."
)
_VERDICT_LINE = re.compile(r"verdict\s*[:：]\s*\**\s*\[*\s*(a|b|tie)\b", re.IGNORECASE)
_BARE_VERDICT = re.compile(r"^\W*(?:\[\[)?\s*(a|b|tie)\s*(?:\]\])?\W*$", re.IGNORECASE)


def judge_messages(question: str, answer_a: str, answer_b: str, rubric: str) -> list[dict[str, str]]:
    """The chat the judge sees: rubric in the system turn, question and both answers in the user turn."""
    user = (
        f"Rubric:\n{rubric}\n\nQuestion:\n{question}\n\n"
        f"[Answer A]\n{answer_a}\n[End of answer A]\n\n[Answer B]\n{answer_b}\n[End of answer B]"
    )
    return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> str:
    """The verdict ("A", "B" or "tie") of a judge reply: its last "Verdict: X", else a bare "A"/"[[B]]"/"tie".

    A reasoning judge's ``<think>`` block is dropped first, so a verdict it drafts while
    thinking is not mistaken for its answer.
    """
    answer, _ = strip_reasoning(reply)
    found = _VERDICT_LINE.findall(answer)
    if not found:
        bare = _BARE_VERDICT.match(answer.strip())
        found = [bare.group(1)] if bare else []
    if not found:
        raise JudgeReplyError(f"cannot find 'Verdict: A|B|tie' in the judge's reply: {reply!r}")
    verdict = found[-1].lower()
    return "tie" if verdict == "tie" else verdict.upper()


def judge_pair(endpoint_chat: EndpointChat, question: str, answer_a: str, answer_b: str, rubric: str) -> str:
    """Ask the judge once which answer is better: "A", "B" or "tie".

    ``endpoint_chat`` is any ``(messages) -> reply`` callable, e.g.
    ``lambda m: ChatEndpoint(url, model).chat(m, temperature=0)``.
    """
    return parse_verdict(endpoint_chat(judge_messages(question, answer_a, answer_b, rubric)))


def judge_both_orders(
    endpoint_chat: EndpointChat, question: str, answer_a: str, answer_b: str, rubric: str
) -> str:
    """B's (tuned) outcome against A (base): "win"/"loss" only when the judge agrees in both orders, else "tie".

    LLM judges favour a position (often the first answer); asking again with the answers
    swapped and keeping only consistent verdicts turns that bias into ties instead of wins.
    """
    first = judge_pair(endpoint_chat, question, answer_a, answer_b, rubric)
    swapped = judge_pair(endpoint_chat, question, answer_b, answer_a, rubric)
    as_b = {"B": "win", "A": "loss", "tie": "tie"}[first]
    as_b_swapped = {"A": "win", "B": "loss", "tie": "tie"}[swapped]
    return as_b if as_b == as_b_swapped else "tie"


# ---------------------------------------------------------------- --fail-under gates


def parse_fail_under(spec: str) -> dict[str, float]:
    """``"rougeL=0.3,win_rate=0.7"`` -> ``{"rougeL": 0.3, "win_rate": 0.7}``; empty items are ignored."""
    gates: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"--fail-under item {item!r} is not metric=value (e.g. rougeL=0.3)")
        try:
            bar = float(value)
        except ValueError:
            raise ValueError(f"--fail-under item {item!r}: {value!r} is not a number") from None
        if not math.isfinite(bar):
            raise ValueError(f"--fail-under item {item!r}: the bar must be a finite number")
        if name in gates:
            raise ValueError(f"--fail-under names {name!r} twice")
        gates[name] = bar
    return gates


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt_pair(value: float, bar: float) -> tuple[str, str]:
    """Two decimals, or more when two decimals would print "0.30 < 0.30"."""
    for digits in (2, 4, 6):
        shown = f"{value:.{digits}f}", f"{bar:.{digits}f}"
        if shown[0] != shown[1]:
            return shown
    return repr(value), repr(bar)


def check_gates(metrics: Mapping[str, Any], gates: Mapping[str, float]) -> list[str]:
    """Human-readable failures of ``metrics`` against ``gates`` (name -> minimum); empty when all pass.

    A gate on a metric that is missing or not a number fails and lists the metrics that can
    be gated, so a typo never passes silently.
    """
    available = sorted(name for name, value in metrics.items() if _numeric(value))
    failures = []
    for name, bar in gates.items():
        value = metrics.get(name)
        if name not in metrics:
            failures.append(f"unknown metric {name!r}; available: {', '.join(available) or 'none'}")
        elif not _numeric(value):
            failures.append(f"{name} has no value ({value!r}); available: {', '.join(available) or 'none'}")
        elif value < bar:
            shown_value, shown_bar = _fmt_pair(float(value), float(bar))
            failures.append(f"{name} {shown_value} < {shown_bar}")
    return failures


# ---------------------------------------------------------------- human raters


def krippendorff_alpha(
    ratings: Sequence[Sequence[float | None]], level: Literal["interval", "ordinal", "nominal", "ratio"] = "interval"
) -> float:
    """Krippendorff's alpha of agreement between raters; 1 is perfect, 0 is chance.

    ``ratings[r][u]`` is rater r's score of unit (answer) u, None where r did not rate u;
    alpha handles such gaps and any number of raters. Computed by the ``krippendorff``
    package. Use "interval" for 1-5 style scores, "ordinal" when only the order of the
    scale points is meaningful.
    """
    import krippendorff
    import numpy as np

    if len(ratings) < 2:
        raise ValueError(f"agreement needs at least two raters, got {len(ratings)}")
    lengths = {len(row) for row in ratings}
    if len(lengths) != 1:
        raise ValueError(f"every rater needs one entry per unit (None if unrated); row lengths are {sorted(lengths)}")
    data = np.array([[np.nan if v is None else float(v) for v in row] for row in ratings], dtype=float)
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
