"""Language fit of an encoder, the n-gram classifier and how a classification run is reported (issue 16).

    .venv/bin/python -m pytest -q tests/unit/test_classify_fit.py

No model is loaded or trained here: the tokenizer is a hand-made WordPiece vocabulary (so every
[UNK] count is exact), the n-gram classifier is a logistic regression on a few rows, and the pages
are rendered from hand-written run files. Training on Chinese rows end to end is in
tests/e2e/test_classify_fit.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.unit.test_report import assert_self_contained, rows_by_name

LABELS = ["negative", "positive"]


def wordpiece(words: list[str]):
    """A BERT-style tokenizer knowing only ``words``: every ideograph is a token of its own (as in BERT)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


ENGLISH_ONLY = ["good", "bad", "product", "!", "好", "，"]


# ---------------------------------------------------------------- language fit


def test_script_language_of_tells_chinese_latin_and_other_scripts_apart():
    from seektune.text import script_language_of

    assert script_language_of("质量很好，物流很快") == "zh"
    assert script_language_of("Great phone, fast delivery") == "en"
    assert script_language_of("Ça coûte 5 €, très bien") == "en"  # Latin script with accents
    assert script_language_of("Отличный товар") == "other"
    assert script_language_of("12345 !!!") == "en"  # no letters: as language_of


def test_language_fit_counts_unknown_tokens_per_language_exactly():
    from seektune.data.language_fit import language_fit

    texts = ["质量很好，太差", "good product!", "bad stuff", "Отличный"]
    fit = language_fit(texts, wordpiece(ENGLISH_ONLY))
    # zh: 质 量 很 好 ， 太 差 -> 7 tokens, 质 量 很 太 差 unknown (好 and ， are known); 7 characters
    assert fit["zh"] == {"rows": 1, "chars": 7, "tokens": 7, "unk_tokens": 5, "unk_rate": round(5 / 7, 4),
                         "tokens_per_char": 1.0}
    # en: good product ! | bad [UNK] (a whole unknown word is one [UNK]) -> 5 tokens, 1 unknown, 20 characters
    assert fit["en"] == {"rows": 2, "chars": 20, "tokens": 5, "unk_tokens": 1, "unk_rate": 0.2,
                         "tokens_per_char": 0.25}
    assert fit["other"]["unk_rate"] == 1.0 and fit["other"]["rows"] == 1
    assert list(fit) == ["en", "other", "zh"]  # most rows first, then by name


def test_warnings_name_the_language_and_what_to_do_only_above_the_limit():
    from seektune.data.language_fit import UNK_RATE_LIMIT, language_fit, poorly_covered, warnings_for

    fit = language_fit(["质量很好，太差", "good product!", "good!"], wordpiece(ENGLISH_ONLY))
    assert UNK_RATE_LIMIT == 0.25 and poorly_covered(fit) == ["zh"]
    (warning,) = warnings_for(fit, "tiny-wordpiece")
    assert warning.startswith("tiny-wordpiece maps 71% of the zh tokens (1 rows) to [UNK]")
    assert "multilingual" in warning and "method: linear" in warning and "data.allow_poor_fit: true" in warning
    assert warnings_for(language_fit(["good product!"], wordpiece(ENGLISH_ONLY)), "m") == []


def test_training_fit_refuses_in_one_line_unless_allowed():
    from seektune.data.language_fit import PoorLanguageFit, check_training_fit

    tokenizer = wordpiece(ENGLISH_ONLY)
    texts = ["质量很好，太差", "物流很慢！", "good product!"]
    with pytest.raises(PoorLanguageFit) as refused:
        check_training_fit(texts, tokenizer, "tiny-wordpiece", allowed=False)
    message = str(refused.value)
    assert "\n" not in message and "[UNK]" in message and "data.allow_poor_fit: true" in message
    assert "method: linear" in message and "zh" in message
    allowed = check_training_fit(texts, tokenizer, "tiny-wordpiece", allowed=True)
    # 质量很好，太差: 5 of 7 unknown; 物流很慢！: 5 of 5 (！ is not ! before NFKC); good product!: 0 of 3
    assert allowed["unk_rate"] == round(10 / 15, 4)
    assert check_training_fit(["good product!"], tokenizer, "m", allowed=False)["unk_rate"] == 0.0


def test_a_tokenizer_without_an_unknown_token_has_no_unknown_rate(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from seektune.data.language_fit import language_fit

    byte_level = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)  # byte-level BPE: encodes any text
    fit = language_fit(["质量很好", "good"], byte_level)
    assert fit["zh"]["unk_rate"] == 0.0 and fit["zh"]["tokens_per_char"] > 1  # bytes, not ideographs


def test_data_card_shows_the_language_fit_and_warns_about_a_poor_one():
    from seektune.data.card import render_html
    from seektune.data.language_fit import language_fit
    from tests.unit.test_report import FULL_CARD as CARD

    fit = language_fit(["质量很好，太差", "good product!"], wordpiece(ENGLISH_ONLY))
    page = render_html({**CARD, "language_fit": fit, "language_fit_model": "tiny-wordpiece"})
    doc = assert_self_contained(page)
    section = doc.by_id("language-fit")
    assert section.text == "Language fit of tiny-wordpiece"
    warnings = doc.find_all("p", cls="warning")
    assert len(warnings) == 1 and "maps 71% of the zh tokens" in warnings[0].text
    assert "method: linear" in warnings[0].text
    table = rows_by_name(next(t for t in doc.find_all("table") if "[UNK] rate" in t.text))
    assert table["zh"] == ["1", "71.4%", "1.00", "poor"] and table["en"] == ["1", "0.0%", "0.25", "ok"]
    good = render_html({**CARD, "language_fit": language_fit(["good!"], wordpiece(ENGLISH_ONLY)),
                        "language_fit_model": "m"})
    assert 'class="warning"' not in good and "Language fit of m" in good
    assert "Language fit" not in render_html(CARD)  # a chat run's card has no such section


# ---------------------------------------------------------------- the embedded encoder alias and the recipe


def test_the_embedded_encoder_alias_resolves_to_its_local_folder_for_every_stage():
    from seektune.data.prepare import target_tokenizer
    from seektune.models.load import resolve_model_path
    from seektune.recipe import validate_recipe

    path = Path(resolve_model_path("minilm-l6-v2"))
    assert path.is_dir() and (path / "config.json").is_file() and (path / "vocab.txt").is_file()
    recipe = validate_recipe({"task": "classification", "labels": LABELS}, "test")
    tokenizer = target_tokenizer(recipe)  # what prepare uses: found without the Hub
    assert tokenizer is not None and tokenizer.unk_token == "[UNK]"


def test_classification_recipe_defaults_and_method_checks():
    from seektune.recipe import RecipeError, validate_recipe

    recipe = validate_recipe({"task": "classification", "labels": LABELS}, "test")
    assert (recipe.model.name, recipe.method.name, recipe.data.allow_poor_fit) == ("minilm-l6-v2", "full", False)
    again = validate_recipe(recipe.model_dump(mode="json"), "resolved")  # the resolved recipe says what ran
    assert (again.model.name, again.method.name) == ("minilm-l6-v2", "full")
    linear = validate_recipe({"task": "classification", "labels": LABELS, "method": {"name": "linear"},
                              "model": "some/encoder"}, "test")
    assert (linear.method.name, linear.model.name) == ("linear", "some/encoder")
    with pytest.raises(RecipeError, match="task classification cannot train with method lora"):
        validate_recipe({"task": "classification", "labels": LABELS, "method": {"name": "lora"}}, "test")
    with pytest.raises(RecipeError, match="task sft cannot train with method linear"):
        validate_recipe({"method": {"name": "linear"}}, "test")
    with pytest.raises(RecipeError, match=r"data.allow_poor_fits: unknown key \(did you mean 'data.allow_poor_fit'"):
        validate_recipe({"task": "classification", "labels": LABELS, "data": {"allow_poor_fits": True}}, "test")
    assert validate_recipe({}, "test").method.name == "lora"  # a chat recipe keeps its defaults


# ---------------------------------------------------------------- the n-gram classifier


def test_ngram_classifier_round_trips_without_pickle_and_covers_every_label(tmp_path):
    from seektune.train.ngram import NgramClassifier

    texts = ["质量很好", "非常满意", "物流很快", "质量太差", "非常失望", "物流很慢"] * 2
    ids = [1, 1, 1, 0, 0, 0] * 2
    classifier = NgramClassifier(["negative", "positive", "unused"]).fit(texts, ids)
    probabilities = classifier.predict_proba(["质量很好的东西", "太失望了", "hello"])
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[:, 2] == 0).all()  # a label never seen in training is never predicted
    assert classifier.predict(["质量很好的东西", "太失望了"]) == ["positive", "negative"]
    saved = classifier.save(tmp_path / "ngram")
    assert sorted(p.suffix for p in saved.iterdir()) == [".json", ".safetensors"]
    loaded = NgramClassifier.load(saved)
    np.testing.assert_array_equal(loaded.predict_proba(["质量很好的东西", "太失望了", "hello"]), probabilities)
    assert loaded.features == classifier.features > 0
    with pytest.raises(ValueError, match="at least 2 labels"):
        NgramClassifier(LABELS).fit(["a", "b"], [1, 1])
    with pytest.raises(FileNotFoundError, match="no ngram_classifier.json"):
        NgramClassifier.load(tmp_path / "nothing")


# ---------------------------------------------------------------- the report of a classification run


def classification_run(root: Path, method: str = "full", recorded_method: str | None = None) -> Path:
    """A classification run as the stage leaves it: recipe, train.json and eval/metrics.json."""
    def scores(accuracy: float, matrix: list[list[int]]) -> dict:
        return {"n": 10, "accuracy": accuracy, "macro_f1": accuracy - 0.01, "auc_roc": 0.6,
                "confusion_matrix": matrix, "label_names": LABELS}

    run = Path(root)
    (run / "eval").mkdir(parents=True)
    metrics = {"task": "classification", "split": "test",
               "systems": {"tuned": "fine-tuned encoder (minilm-l6-v2)", "baseline": "n-gram baseline"},
               "tuned": scores(0.5, [[3, 2], [3, 2]]), "baseline": scores(0.9, [[5, 0], [1, 4]])}
    training = {"task": "classification", "method": method, "train_rows": 30,
                "ngram": {"description": "character 1-3-gram TF-IDF + logistic regression", "features": 1234,
                          "fit_s": 0.25}}
    if method == "full":
        training |= {"steps": 2, "first_loss": 0.7, "last_loss": 0.69, "train_runtime_s": 1.5,
                     "language_fit": {"unk_rate": 0.62, "by_language": {"zh": {"unk_rate": 0.62}}},
                     "log_history": [{"loss": 0.7, "step": 1}, {"loss": 0.69, "step": 2}]}
    else:
        metrics = {**metrics, "systems": {"tuned": "n-gram classifier"}, "tuned": metrics["baseline"]}
        del metrics["baseline"]
    recipe = {"task": "classification", "labels": LABELS, "model": {"name": "minilm-l6-v2"},
              "method": {"name": recorded_method or method, "r": 16, "alpha": 32},
              "train": {"epochs": 3, "lr": 1e-4, "batch_size": 16, "max_steps": -1, "seed": 42}}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (run / "train.json").write_text(json.dumps(training), encoding="utf-8")
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return run


def test_report_puts_the_encoder_beside_the_ngram_baseline(tmp_path):
    from seektune.evaluate.report import write_report
    from tests.unit.test_report import parse_html

    html_path, _ = write_report(classification_run(tmp_path / "run"))
    doc = parse_html(html_path.read_text(encoding="utf-8"))
    versus = doc.by_id("versus")
    assert versus.text.startswith("macro-F1: fine-tuned encoder 0.490 vs n-gram baseline 0.890 "
                                  "(accuracy 0.500 vs 0.900). The baseline is better")
    assert "behind" in versus.attrs["class"]
    table = doc.by_id("metrics-table").table()
    assert table[0][-1] == "Δ tuned − baseline"
    assert rows_by_name(doc.by_id("metrics-table"))["macro-F1"] == ["0.890", "0.490", "-0.400"]
    assert "method full (every weight of the encoder)" in doc.find_all("div", cls="facts")[0].text
    assert "lora" not in doc.by_id("recipe").text and "r 16" not in doc.text
    training = doc.by_id("loss-curve")
    assert training.find_all("img") and "no training log" not in training.text
    assert "[UNK] rate of the training text 62.0% (zh 62.0%)" in training.text
    assert "1,234 n-grams" in training.text
    confusion = doc.by_id("confusion")
    assert [h.text for h in confusion.find_all("h3")] == ["tuned: fine-tuned encoder (minilm-l6-v2)",
                                                         "baseline: n-gram baseline"]
    assert confusion.find_all("table")[1].table()[1:] == [["negative", "5", "0"], ["positive", "1", "4"]]


def test_report_of_an_older_classification_run_shows_the_method_it_really_used(tmp_path):
    from seektune.evaluate.report import build_report

    report = build_report(classification_run(tmp_path / "run", recorded_method="lora"))
    assert report["recipe"]["method"] == "full" and "r" not in report["recipe"]


def test_report_of_a_linear_run_says_why_there_is_no_loss_curve(tmp_path):
    from seektune.evaluate.report import write_report
    from tests.unit.test_report import parse_html

    html_path, json_path = write_report(classification_run(tmp_path / "run", method="linear"))
    doc = parse_html(html_path.read_text(encoding="utf-8"))
    assert "method linear fits a logistic regression to convergence" in doc.by_id("loss-curve").text
    assert "linear (character n-gram TF-IDF + logistic regression; no encoder)" in doc.text
    assert json.loads(json_path.read_text())["recipe"] == {"task": "classification", "method": "linear", "seed": 42}
    assert doc.by_id("metrics-table").table()[0] == ["metric", "tuned n-gram classifier"]
    assert not [n for n in doc.walk() if n.attrs.get("id") == "versus"]
