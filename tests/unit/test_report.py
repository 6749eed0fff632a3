"""The run report and the run comparison, on a hand-written run directory (no model loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from seektune.evaluate.report import (
    build_report,
    compare_runs,
    compare_table_rows,
    fmt,
    write_report,
)

SCRIPT = "<script>alert('x')</script>"

METRICS = {
    "split": "test",
    "systems": {"base": "tiny-base", "tuned": "runs/fake (lora)"},
    "base": {
        "n": 6, "rougeL": 0.25, "rouge1": 0.3, "rouge2": 0.1, "bleu": 12.5, "chrf": 30.25, "fact_accuracy": 0.2,
        "distinct_1": 0.4, "distinct_2": 0.6, "exact_match": 0.0, "answer_chars": 80.5, "answer_words": 14.0,
        "perplexity": 21.5,
        "by_language": {"en": {"n": 4, "rougeL": 0.3, "bleu": 14.0, "fact_accuracy": 0.25},
                        "zh": {"n": 2, "rougeL": 0.15, "bleu": 9.5, "fact_accuracy": None}},
        "by_category": {"returns": {"n": 3, "rougeL": 0.2, "bleu": 10.0, "fact_accuracy": 0.0},
                        "shipping": {"n": 3, "rougeL": 0.3, "bleu": 15.0, "fact_accuracy": 0.5}},
    },
    "tuned": {
        "n": 6, "rougeL": 0.625, "rouge1": 0.65, "rouge2": 0.5, "bleu": 48.75, "chrf": 61.5, "fact_accuracy": 0.6,
        "distinct_1": 0.35, "distinct_2": 0.55, "exact_match": 0.5, "answer_chars": 60.25, "answer_words": 11.0,
        "perplexity": 3.75, "win_rate": 0.75, "judge_win_rate": 0.6,
        "by_language": {"en": {"n": 4, "rougeL": 0.7, "bleu": 50.0, "fact_accuracy": 0.75},
                        "zh": {"n": 2, "rougeL": 0.45, "bleu": 41.0, "fact_accuracy": None}},
        "by_category": {"returns": {"n": 3, "rougeL": 0.55, "bleu": 44.0, "fact_accuracy": 0.5},
                        "shipping": {"n": 3, "rougeL": 0.7, "bleu": 52.0, "fact_accuracy": 0.75}},
        "reasoning": {"rows": 6, "mean_words": 42.5},
    },
    "ci": {"base": {"rougeL": [0.125, 0.375]}, "tuned": {"rougeL": [0.4375, 0.8125]},
           "delta": {"rougeL": [0.1875, 0.5625]}},
    "ab": {"metric": "rougeL", "n": 6, "wins": 4, "ties": 1, "losses": 1, "win_rate": 0.75, "ci_low": 0.4166,
           "ci_high": 1.0, "p_value": 0.375, "bar": 0.7, "passed": True,
           "by_category": {"returns": {"n": 3, "wins": 2, "ties": 0, "losses": 1, "win_rate": 0.6667},
                           "shipping": {"n": 3, "wins": 2, "ties": 1, "losses": 0, "win_rate": 0.8333}}},
    "judge": {"metric": "judge (gpt-x)", "n": 5, "wins": 3, "ties": 0, "losses": 2, "win_rate": 0.6, "ci_low": 0.2,
              "ci_high": 1.0, "p_value": 1.0, "bar": 0.7, "passed": False, "errors": 1},
}

# (base_rougeL, tuned_rougeL): deltas +0.5, -0.25, +0.875, 0, -0.0625, +0.125, and one row without scores.
SCORES = [(0.25, 0.75), (0.5, 0.25), (0.0, 0.875), (0.4, 0.4), (0.3125, 0.25), (0.5, 0.625), (None, None)]


def _sample(i: int, base: float | None, tuned: float | None) -> dict:
    return {
        "origin": f"faq.jsonl:{i + 1}", "question": f"question {i}?", "reference": f"reference {i}.",
        "facts": [f"fact {i}"], "category": "returns" if i % 2 else "shipping",
        "tuned": SCRIPT if i == 2 else f"tuned answer {i}", "base": f"base answer {i} & <b>bold</b>",
        "base_rougeL": base, "tuned_rougeL": tuned, "judge": "win" if i % 3 else "loss",
        "tuned_reasoning": f"thinking about {i}",
    }


TRAIN = {
    "method": "lora", "trainable_parameters": 1000, "total_parameters": 50000, "train_rows": 40,
    "train_tokens": 2400, "steps": 30, "best_checkpoint": None, "train_runtime_s": 12.5, "first_loss": 2.5,
    "last_loss": 0.5, "eval_loss": 0.75,
    "log_history": [
        {"loss": 2.5, "learning_rate": 1e-3, "epoch": 0.33, "step": 10},
        {"eval_loss": 1.25, "eval_runtime": 0.5, "epoch": 0.33, "step": 10},
        {"loss": 1.0, "learning_rate": 5e-4, "epoch": 0.66, "step": 20},
        {"loss": 0.5, "learning_rate": 1e-5, "epoch": 1.0, "step": 30},
        {"eval_loss": 0.75, "eval_runtime": 0.5, "epoch": 1.0, "step": 30},
        {"train_runtime": 12.5, "train_loss": 1.3, "epoch": 1.0, "step": 30},
    ],
}

CARD = {
    "accounting": {"read": 60, "added": 2, "kept": 50, "rejected": 12},
    "splits": {"train": {"rows": 40, "tokens": {"count": 40}}, "val": {"rows": 4, "tokens": {"count": 4}},
               "test": {"rows": 6, "tokens": {"count": 6}}},
    "rejected_by_reason": {"filter/min_chars": 3, "dedup/exact": 7, "format/missing_answer": 2},
    "duplicates": {"exact": 7, "near": 0, "cluster_count": 0, "clusters": []},
    "leakage": [],
}

RECIPE = {
    "model": {"name": "tiny-base", "dtype": "auto"}, "task": "sft",
    "data": {"paths": ["faq.jsonl"]},
    "method": {"name": "lora", "r": 8, "alpha": 16.0, "dropout": 0.0},
    "train": {"epochs": 1.0, "max_steps": -1, "lr": 0.0005, "batch_size": 4, "seed": 7},
    "eval": {"split": "test"}, "output_dir": "runs/fake",
}

HUMAN = {"criteria": ["helpful", "correct"], "systems": {"base": {"helpful": 2.25, "correct": 1.5},
                                                          "tuned": {"helpful": 4.25, "correct": 3.75}},
         "alpha": {"helpful": 0.71, "correct": 0.64}, "raters": 3, "items": 20}


def make_fake_run(root: Path, *, metrics: dict | None = None, full: bool = True) -> Path:
    """A run directory as the stages leave it; ``full=False`` writes only eval/metrics.json."""
    run = Path(root)
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics or METRICS), encoding="utf-8")
    if not full:
        return run
    (run / "eval" / "samples.jsonl").write_text(
        "".join(json.dumps(_sample(i, b, t)) + "\n" for i, (b, t) in enumerate(SCORES)), encoding="utf-8")
    (run / "data").mkdir(exist_ok=True)
    (run / "data" / "card.json").write_text(json.dumps(CARD), encoding="utf-8")
    (run / "train.json").write_text(json.dumps(TRAIN), encoding="utf-8")
    (run / "recipe.resolved.yaml").write_text("# resolved\n" + yaml.safe_dump(RECIPE), encoding="utf-8")
    (run / "human_eval").mkdir(exist_ok=True)
    (run / "human_eval" / "results.json").write_text(json.dumps(HUMAN), encoding="utf-8")
    return run


EXTERNAL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


# ---------------------------------------------------------------- report.json


def test_report_json_holds_the_source_numbers(tmp_path):
    run = make_fake_run(tmp_path / "run")
    _, json_path = write_report(run)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert set(report) == {"run", "created", "recipe", "data", "training", "eval", "rows", "human"}
    assert report["run"] == str(run)
    assert report["eval"] == METRICS
    assert report["training"] == TRAIN
    assert report["human"] == HUMAN
    assert report["data"] == {"accounting": CARD["accounting"], "splits": {"train": 40, "val": 4, "test": 6},
                              "rejected_by_reason": CARD["rejected_by_reason"]}
    assert report["recipe"] == {"model": "tiny-base", "task": "sft", "method": "lora", "r": 8, "alpha": 16.0,
                                "epochs": 1.0, "lr": 0.0005, "batch_size": 4, "max_steps": -1, "seed": 7}


def test_rows_won_and_lost_most_follow_the_per_row_delta(tmp_path):
    report = build_report(make_fake_run(tmp_path / "run"))
    deltas = [(t - b, i) for i, (b, t) in enumerate(SCORES) if b is not None]
    expected_won = [i for d, i in sorted(deltas, key=lambda x: -x[0]) if d > 0]
    expected_lost = [i for d, i in sorted(deltas, key=lambda x: x[0]) if d < 0]
    assert expected_won == [2, 0, 5] and expected_lost == [1, 4]  # the fixture is what the test thinks it is
    rows = report["rows"]
    assert rows["metric"] == "rougeL"
    assert [r["origin"] for r in rows["won_most"]] == [f"faq.jsonl:{i + 1}" for i in expected_won]
    assert [r["origin"] for r in rows["lost_most"]] == [f"faq.jsonl:{i + 1}" for i in expected_lost]
    assert rows["won_most"][0] == _sample(2, *SCORES[2])  # rows are copied as they are, nothing added


def test_rows_keep_at_most_five(tmp_path):
    run = make_fake_run(tmp_path / "run")
    samples = [_sample(i, 0.0, 0.01 * (i + 1)) for i in range(9)] + [_sample(9 + i, 0.5, 0.1 * i) for i in range(4)]
    (run / "eval" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    rows = build_report(run)["rows"]
    assert [r["tuned_rougeL"] for r in rows["won_most"]] == [0.09, 0.08, 0.07, 0.06, 0.05]
    assert [r["tuned_rougeL"] for r in rows["lost_most"]] == [0.0, 0.1, 0.2, 0.30000000000000004]


# ---------------------------------------------------------------- report.html


def test_html_is_self_contained_and_escapes_model_output(tmp_path):
    html_path, _ = write_report(make_fake_run(tmp_path / "run"))
    page = html_path.read_text(encoding="utf-8")
    assert not EXTERNAL.findall(page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()  # the report has no script of its own, and answers are escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert re.search(r"<section id='loss-curve'>.*?<img [^>]*src='data:image/png;base64,[A-Za-z0-9+/=]{500,}'",
                     page, re.DOTALL)
    for section in ("summary", "recipe", "data", "loss-curve", "metrics", "win-rate", "by-category",
                    "by-language", "rows", "human"):
        assert f"id='{section}'" in page, section
    assert 'id="metrics-table"' in page


def test_html_shows_metrics_ci_win_rates_and_human_eval(tmp_path):
    page = write_report(make_fake_run(tmp_path / "run"))[0].read_text(encoding="utf-8")
    table = re.search(r'<table id="metrics-table".*?</table>', page, re.DOTALL).group(0)
    assert "runs/fake (lora)" in table and "tiny-base" in table
    assert ">48.8<" in table and ">12.5<" in table  # BLEU on its 0-100 scale
    assert ">0.625<" in table and "+0.375" in table  # ROUGE-L tuned and its delta
    assert "[0.438, 0.812]" in table and "[0.188, 0.562]" in table  # tuned CI and delta CI
    assert "6 rows, 42.5 words" in table  # reasoning length of the tuned (R1-style) model
    assert "-17.75" in table  # perplexity dropped: lower is better ...
    assert re.search(r"class='good'>-17.75<", table)  # ... so the drop is shown as good
    assert "badge pass" in page and "badge fail" in page  # ab passed the bar, the judge did not
    assert "judge (gpt-x)" in page and "1 judge errors left out" in page
    assert "0.667" in page and "0.833" in page  # per-category win rates
    assert "2 / 1 / 0" in page
    assert "Krippendorff" in page and ">4.25<" in page and ">0.71<" in page
    assert "3 raters, 20 items" in page
    assert "dedup/exact" in page and page.index("dedup/exact") < page.index("filter/min_chars")  # most first


def test_only_metrics_json_is_enough(tmp_path):
    run = make_fake_run(tmp_path / "run", full=False)
    html_path, json_path = write_report(run)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert set(report) == {"run", "created", "eval", "rows"}
    assert report["rows"] == {"metric": "rougeL", "won_most": [], "lost_most": []}
    page = html_path.read_text(encoding="utf-8")
    assert "no training log" in page and "id='recipe'" not in page and "id='human'" not in page


def test_tuned_only_and_old_format_metrics(tmp_path):
    # Older metrics.json: no "systems", "ci", "ab"; the per-row metric still shows in the samples.
    old = {k: v for k, v in METRICS.items() if k in ("split", "base", "tuned")}
    run = make_fake_run(tmp_path / "old", metrics=old)
    report = build_report(run)
    assert report["rows"]["metric"] == "rougeL" and len(report["rows"]["won_most"]) == 3
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "id='win-rate'" not in page and ">base<" in page

    tuned_only = {"split": "test", "tuned": METRICS["tuned"]}
    run = make_fake_run(tmp_path / "tuned-only", metrics=tuned_only, full=False)
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "Δ tuned − base" not in page and ">0.625<" in page


def test_missing_metrics_json_says_to_run_eval(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"seektune eval"):
        build_report(tmp_path / "run")


def test_training_log_without_losses_says_so(tmp_path):
    run = make_fake_run(tmp_path / "run")
    (run / "train.json").write_text(json.dumps({**TRAIN, "log_history": [{"train_runtime": 1.0, "step": 0}]}))
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "no training log" in page and "data:image/png" not in page


def test_number_formats():
    assert fmt("bleu", 52.29953) == "52.3"
    assert fmt("rougeL", 0.5746825) == "0.575"
    assert fmt("n", 66) == "66"
    assert fmt("fact_accuracy", None) == "–"
    assert fmt("eval_loss", 0.11773991) == "0.1177"


# ---------------------------------------------------------------- compare


def _variant(root: Path, name: str, *, rouge: float, bleu: float, ppl: float, r: int, eval_loss: float) -> Path:
    metrics = json.loads(json.dumps(METRICS))
    metrics["tuned"].update(rougeL=rouge, bleu=bleu, perplexity=ppl)
    run = make_fake_run(root / name, metrics=metrics)
    recipe = json.loads(json.dumps(RECIPE))
    recipe["method"]["r"] = r
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    (run / "train.json").write_text(json.dumps({**TRAIN, "eval_loss": eval_loss}), encoding="utf-8")
    return run


def test_compare_runs_picks_the_best_run_per_metric(tmp_path):
    r8 = _variant(tmp_path, "r8", rouge=0.5, bleu=55.0, ppl=4.0, r=8, eval_loss=0.9)
    r16 = _variant(tmp_path, "r16", rouge=0.7, bleu=40.0, ppl=5.0, r=16, eval_loss=0.6)
    out = tmp_path / "cmp" / "compare.html"
    result = compare_runs([r8, r16], out)
    assert [run["run"] for run in result["runs"]] == [str(r8), str(r16)]
    assert [run["r"] for run in result["runs"]] == [8, 16]
    assert result["runs"][1]["rougeL"] == 0.7 and result["runs"][1]["eval_loss"] == 0.6
    assert result["runs"][0]["train_runtime_s"] == 12.5 and result["runs"][0]["lr"] == 0.0005
    assert result["best"]["rougeL"] == str(r16)
    assert result["best"]["bleu"] == str(r8)
    assert result["best"]["perplexity"] == str(r8)  # lower is better
    assert result["best"]["eval_loss"] == str(r16)
    main = {"rougeL", "bleu", "chrf", "fact_accuracy", "exact_match", "perplexity", "win_rate"}
    assert main <= set(result["metrics"])

    assert json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8")) == result
    page = out.read_text(encoding="utf-8")
    assert not EXTERNAL.findall(page) and "https://" not in page and "http://" not in page
    assert "<span class='best'>0.700</span>" in page and "<span class='best'>55.0</span>" in page
    assert "data:image/png;base64," in page

    header, rows = compare_table_rows(result)
    assert header[0] == "run" and len(rows) == 2 and all(len(row) == len(header) for row in rows)
    assert rows[1][header.index("ROUGE-L")] == "0.700" and rows[0][header.index("r")] == "8"
    assert rows[0][header.index("BLEU")] == "55.0" and rows[0][header.index("lr")] == "0.0005"
    assert all(isinstance(cell, str) for row in rows for cell in row)


def test_compare_highlights_every_run_tied_for_best(tmp_path):
    a = _variant(tmp_path, "a", rouge=0.45, bleu=50.0, ppl=4.0, r=8, eval_loss=0.5)
    b = _variant(tmp_path, "b", rouge=0.4, bleu=50.0, ppl=4.0, r=8, eval_loss=0.5)
    result = compare_runs([a, b], tmp_path / "compare.html")
    assert result["best"]["bleu"] == str(a)  # the first of the tied runs
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert page.count("<span class='best'>50.0</span>") == 2
    assert "<span class='best'>0.450</span>" in page and "<span class='best'>0.400</span>" not in page


def test_compare_writes_nothing_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_fake_run(tmp_path / "run")
    compare_runs([run])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_compare_needs_eval_of_every_run(tmp_path):
    good = make_fake_run(tmp_path / "good")
    (tmp_path / "untested").mkdir()
    with pytest.raises(FileNotFoundError, match=r"untested.*seektune eval"):
        compare_runs([good, tmp_path / "untested"])


def test_training_shows_distillation_preference_and_update_figures(tmp_path):
    run = make_fake_run(tmp_path / "run")
    training = {**TRAIN, "objective": "dpo",
                "distill": {"teacher": "run runs/teacher", "mode": "logits", "val_kl_before": 2.2232,
                            "val_kl_after": 0.0323},
                "preference": {"first_reward_margin": 0.0, "last_reward_margin": 0.2591}}
    (run / "train.json").write_text(json.dumps(training))
    (run / "update.json").write_text(json.dumps({
        "from": "runs/old", "replay": {"ratio": 6.0, "new_train_rows": 48, "replay_rows": 288},
        "new": {"before": {"n": 9, "fact_accuracy": 0.0}, "after": {"n": 9, "fact_accuracy": 0.889}},
        "old": {"before": {"n": 66, "fact_accuracy": 0.545}, "after": {"n": 66, "fact_accuracy": 0.5}}}))
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "run runs/teacher (logits distillation)" in page and "2.223 → 0.032" in page
    assert "dpo reward margin</td><td>0.000 → 0.259" in page
    update = page[page.index("id='update'"):]
    assert "48 new" in update and "288 replayed" in update
    assert re.search(r"old split \(n=66\)</td><td>fact accuracy</td><td>0\.545</td><td>0\.500</td><td>-0\.045", update)
