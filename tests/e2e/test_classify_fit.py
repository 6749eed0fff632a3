"""Chinese shopping reviews through a classification recipe with the embedded English encoder (issue 16).

    .venv/bin/python -m pytest -q tests/e2e/test_classify_fit.py

The reviews are generated here from a small hand-written vocabulary: an opener and a product
shared by both classes, then two sentiment phrases of four ideographs each. Every ideograph of
every sentiment phrase is outside all-MiniLM-L6-v2's vocabulary (checked below), so the encoder
sees "[UNK] [UNK] [UNK] [UNK]" for "质量很好" and for "质量低劣" alike: it cannot tell the classes
apart however long it trains, while character n-grams read the phrases directly. Training is a
few steps: these tests check what is reported and refused, not how well MiniLM learns.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli
from tests.e2e.test_classify import one_torch_thread  # noqa: F401  (autouse: one torch thread for the module)

LABELS = ["negative", "positive"]
POSITIVE = ["质量很好", "非常满意", "物流很快", "做工精细", "包装完好", "客服热情", "颜色漂亮", "穿着舒服",
            "值得购买", "推荐购买", "做工扎实", "尺码标准", "发货迅速", "材质柔软"]
NEGATIVE = ["非常失望", "物流很慢", "做工粗糙", "包装破损", "颜色发错", "穿着难受", "退货麻烦", "客服敷衍",
            "质量低劣", "尺码混乱", "颜色暗淡", "气味刺鼻", "售后推诿", "做工马虎"]
OPENERS = ["昨天收到的", "买给家人的", "第二次买的", "活动时买的", "等了三天的", "刚刚拆开的", "用了一周的"]
PRODUCTS = ["耳机", "衣服", "鞋子", "台灯", "背包", "水杯", "键盘", "被子", "枕头", "裙子", "毛衣", "外套"]
ENGLISH = {"positive": ["great quality", "fast delivery", "works well", "very happy"],
           "negative": ["poor quality", "arrived broken", "very slow delivery", "want a refund"]}


def chinese_reviews(n_per_class: int, seed: int) -> list[dict[str, str]]:
    """Balanced ``{text, label}`` rows: "<opener><product>，<phrase>，<phrase>。" with two phrases of the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_per_class):
        for label, phrases in (("positive", POSITIVE), ("negative", NEGATIVE)):
            first, second = rng.sample(phrases, 2)
            text = f"{rng.choice(OPENERS)}{rng.choice(PRODUCTS)}，{first}，{second}{rng.choice('。！')}"
            rows.append({"text": text, "label": label})
    return rows


def english_reviews(n_per_class: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"text": f"{rng.choice(['the', 'my'])} {rng.choice(['lamp', 'mug', 'bag'])}: "
                     f"{', '.join(rng.sample(ENGLISH[label], 2))}", "label": label}
            for _ in range(n_per_class) for label in LABELS]


def write_recipe(tmp_path: Path, rows: list[dict[str, str]], **sections) -> Path:
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = {
        "task": "classification", "labels": LABELS, "model": "minilm-l6-v2",
        "data": {"paths": [str(data)], "format": "text", "meta_fields": ["label"], "max_length": 32,
                 "dedup": {"near": False}, "leakage": {"check": False},
                 "split": {"train": 0.5, "val": 0.1, "test": 0.4, "seed": 1, "stratify_by": "label"}},
        "train": {"max_steps": 3, "lr": 1e-4, "batch_size": 8, "logging_steps": 1, "seed": 42},
        "output_dir": str(tmp_path / "run"),
    }
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path




def test_the_sentiment_phrases_are_invisible_to_minilm():
    """The premise of these tests: MiniLM's tokenizer turns every sentiment ideograph into [UNK]."""
    from transformers import AutoTokenizer

    from seektune.models.load import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6-v2"))
    for phrase in POSITIVE + NEGATIVE:
        assert tokenizer.tokenize(phrase) == ["[UNK]"] * 4, phrase


def test_prepare_finds_the_alias_offline_measures_unk_per_language_and_the_card_warns(tmp_path):
    rows = chinese_reviews(20, seed=1) + english_reviews(5, seed=2)
    result = cli("prepare", write_recipe(tmp_path, rows))
    data = tmp_path / "run" / "data"
    summary = json.loads((data / "summary.json").read_text(encoding="utf-8"))
    fit = summary["language_fit"]
    assert summary["language_fit_model"] == "minilm-l6-v2"
    assert set(fit) == {"zh", "en"} and fit["zh"]["rows"] == 40 and fit["en"]["rows"] == 10
    assert fit["zh"]["unk_rate"] > 0.5 and fit["zh"]["tokens_per_char"] == pytest.approx(1.0)  # one per ideograph
    assert fit["en"]["unk_rate"] == 0.0 and fit["en"]["tokens_per_char"] < 0.5
    card = json.loads((data / "card.json").read_text(encoding="utf-8"))
    assert card["token_unit"] == "tokens"  # the alias gave prepare its tokenizer: the token checks ran
    page = (data / "card.html").read_text(encoding="utf-8")
    assert page.count('class="warning"') == 1  # zh only
    assert f"minilm-l6-v2 maps {fit['zh']['unk_rate']:.0%} of the zh tokens" in page
    assert "method: linear" in page and "data.allow_poor_fit: true" in page
    assert f"zh 40 rows, [UNK] {fit['zh']['unk_rate']:.0%}" in result.output and "warning:" in result.output


def test_training_refuses_the_unk_disaster_unless_allowed_and_reports_the_baseline_beside_it(tmp_path, caplog):
    recipe = write_recipe(tmp_path, chinese_reviews(30, seed=3))
    run_dir = tmp_path / "run"
    refused = cli("train", recipe, exit_code=2)
    message = " ".join(refused.output.split())
    assert "error: minilm-l6-v2 maps" in message and "of the training text's tokens to [UNK]" in message
    assert "data.allow_poor_fit: true" in message and "method: linear" in message
    assert not (run_dir / "classifier").exists() and not (run_dir / "ngram").exists()  # nothing was trained

    result = cli("run", recipe, "data.allow_poor_fit=true")
    assert "of the training text's tokens to [UNK]" in caplog.text  # allowed, and still said
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    tuned, baseline = metrics["tuned"], metrics["baseline"]
    assert tuned["n"] == baseline["n"] == 24 and set(tuned) == set(baseline)  # the same rows, the same metrics
    assert baseline["macro_f1"] >= 0.9 and baseline["accuracy"] >= 0.9  # chance is 0.5: n-grams read the phrases
    assert tuned["macro_f1"] < 0.75  # the encoder sees the same [UNK]s for both classes
    training = json.loads((run_dir / "train.json").read_text(encoding="utf-8"))
    assert training["method"] == "full" and training["language_fit"]["unk_rate"] > 0.5
    assert training["steps"] == 3 and len([h for h in training["log_history"] if "loss" in h]) == 3

    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert (f"macro-F1: fine-tuned encoder {tuned['macro_f1']:.3f} vs n-gram baseline {baseline['macro_f1']:.3f}"
            in report)
    assert "full (every weight of the encoder)" in report and "lora" not in report
    assert 'id="loss-curve-img"' in report and "no training log" not in report
    output = " ".join(result.output.split())
    assert "vs n-gram baseline" in output and f"seektune eval {run_dir}" in output
    assert "seektune chat" not in output

    again = cli("eval", run_dir)  # a classification run is scored by eval too, and the report rewritten
    assert json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))["baseline"] == baseline
    assert "vs n-gram baseline" in again.output
    cli("chat", run_dir, "-m", "hi", exit_code=2)  # a classifier cannot chat, and says so


def test_method_linear_trains_only_the_ngram_classifier_and_evaluates(tmp_path):
    from seektune.train.ngram import NgramClassifier

    recipe = write_recipe(tmp_path, chinese_reviews(30, seed=4), method={"name": "linear"})
    result = cli("run", recipe)  # no [UNK] check: no encoder is trained
    run_dir = tmp_path / "run"
    assert (run_dir / "ngram").is_dir() and not (run_dir / "classifier").exists()
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert "baseline" not in metrics and metrics["tuned"]["macro_f1"] >= 0.9
    assert metrics["systems"]["tuned"].startswith("n-gram classifier")
    assert NgramClassifier.load(run_dir / "ngram").predict(["买给家人的水杯，质量很好，发货迅速。"]) == ["positive"]
    assert "NgramClassifier.load" in result.output and "seektune chat" not in result.output
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "linear (character n-gram TF-IDF + logistic regression; no encoder)" in report
    cli("eval", run_dir, "max_rows=10")
    assert json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))["tuned"]["n"] == 10
