"""FineTuner (sequence classification) trained on a tiny random-init BERT and the tiny Llama fixture.

    .venv/bin/python -m pytest -q tests/e2e/test_classify.py          # add -m "not slow" to skip real MiniLM

The data is separable by one keyword per class, so a working training loop must reach
full train accuracy; metrics are pinned against scikit-learn on the same probabilities.
The checks that need no model (labels, parameters, metrics maths) are in tests/unit/test_classify.py.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli

LABELS = ["billing", "shipping", "returns"]
KEYWORDS = {"billing": "refund", "shipping": "parcel", "returns": "exchange"}
FILLER = ["please", "help", "my", "order", "today", "thanks", "the", "is", "late", "again", "hello", "team"]
FAST = {"learning_rate": 1e-2, "batch_size": 8, "epochs": 12, "warmup_ratio": 0.0, "logging_steps": 1,
        "max_length": 32, "weight_decay": 0.0}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Models this small train fastest on one thread, and two threads fight any other torch process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def separable_rows(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts of filler words with one class keyword inserted somewhere."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n_per_class):
        for label, keyword in KEYWORDS.items():
            words = rng.sample(FILLER, 4)
            words.insert(rng.randrange(len(words) + 1), keyword)
            texts.append(" ".join(words))
            labels.append(label)
    return texts, labels


def build_wordpiece_tokenizer(path: Path):
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP]) trained on the test vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [" ".join(FILLER + list(KEYWORDS.values()) + ["courier", "charge", "swap"])] * 4
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials,
                                                              show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    return fast


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = build_wordpiece_tokenizer(path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_without_pad(tmp_path_factory, tiny_llama) -> Path:
    """The tiny Llama with its pad token removed, as many decoder tokenizers ship."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-llama-nopad")
    for item in tiny_llama.iterdir():
        if item.is_file():
            shutil.copy(item, path / item.name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def fitted_bert(tiny_bert):
    from seektune.train.classify import FineTuner

    texts, labels = separable_rows(12, seed=1)
    tuner = FineTuner(str(tiny_bert), label_names=LABELS).set_params(**FAST)
    return tuner.fit(texts, labels), texts, labels


def head_parameters(model) -> dict:
    """The new classification head: ``classifier`` in BERT, ``score`` in decoders."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("classifier", "score"))}


def train_losses(history: list[dict]) -> list[float]:
    return [h["loss"] for h in history if "loss" in h]


def test_bert_fit_changes_head_lowers_loss_and_fits_train(fitted_bert, tiny_bert):
    import torch
    from transformers import set_seed

    from seektune.train.classify import load_sequence_classifier

    tuner, texts, labels = fitted_bert
    set_seed(FAST.get("seed", 42))
    initial = load_sequence_classifier(str(tiny_bert), LABELS, tuner.tokenizer.pad_token_id)
    before, after = head_parameters(initial), head_parameters(tuner.model)
    assert set(before) == set(after) and before
    assert all(not torch.equal(before[n], after[n]) for n in before)
    losses = train_losses(tuner.history)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    predicted = tuner.predict(texts)
    assert set(predicted) <= set(LABELS)
    assert np.mean([p == t for p, t in zip(predicted, labels)]) == 1.0


def test_evaluate_of_a_fitted_model_equals_scikit_learn(fitted_bert):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    tuner, _, _ = fitted_bert
    texts, labels = separable_rows(4, seed=2)
    labels[0] = "shipping" if labels[0] != "shipping" else "billing"  # one wrong-looking row, so it is not all 1.0
    result = tuner.evaluate(texts, labels)
    truth = [LABELS.index(label) for label in labels]
    probabilities = tuner.predict_proba(texts)
    predicted = probabilities.argmax(axis=1)
    assert probabilities.shape == (len(texts), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert result["auc_roc"] == pytest.approx(roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"))
    assert result["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    assert result["label_names"] == LABELS
    assert result["n"] == len(texts)
    assert result["accuracy"] < 1.0


def test_save_load_round_trip_gives_identical_predictions(fitted_bert, tmp_path):
    from seektune.train.classify import FineTuner

    tuner, texts, _ = fitted_bert
    tuner.save(tmp_path / "router")
    assert (tmp_path / "router" / "model.safetensors").is_file()
    loaded = FineTuner.load(tmp_path / "router")
    assert loaded.label_names == LABELS and loaded.params.max_length == FAST["max_length"]
    np.testing.assert_array_equal(loaded.predict_proba(texts), tuner.predict_proba(texts))
    assert loaded.predict(texts) == tuner.predict(texts)


def test_int_labels_predict_ints_and_fit_is_deterministic(tiny_bert):
    from seektune.train.classify import FineTuner

    texts, labels = separable_rows(4, seed=3)
    ids = [LABELS.index(label) for label in labels]
    params = {**FAST, "epochs": 2}
    first = FineTuner(str(tiny_bert), num_classes=3).set_params(**params).fit(np.array(texts), np.array(ids))
    second = FineTuner(str(tiny_bert), num_classes=3).set_params(**params).fit(texts, ids)
    assert all(isinstance(p, int) for p in first.predict(texts))
    np.testing.assert_array_equal(first.predict_proba(texts), second.predict_proba(texts))


def test_llama_without_pad_token_learns_and_gets_pad_id(llama_without_pad):
    from seektune.train.classify import FineTuner, load_classifier_tokenizer

    texts, labels = separable_rows(12, seed=4)
    val_texts, val_labels = separable_rows(2, seed=5)
    assert load_classifier_tokenizer(str(llama_without_pad)).pad_token is not None
    tuner = FineTuner(str(llama_without_pad), label_names=LABELS).set_params(**FAST)
    tuner.fit(texts, labels, val_texts, val_labels)
    assert tuner.model.config.pad_token_id == tuner.tokenizer.eos_token_id
    assert any("eval_macro_f1" in h for h in tuner.history)
    losses = train_losses(tuner.history)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert np.mean([p == t for p, t in zip(tuner.predict(texts), labels)]) >= 0.9


def test_sft_task_delegates_to_the_sft_stage(tiny_llama, tmp_path):
    from seektune.train.classify import FineTuner

    questions = ["How long do I have to return something?", "What does shipping cost?"] * 4
    answers = ["Returns are accepted within 45 days.", "Standard shipping costs $4.95."] * 4
    tuner = FineTuner(str(tiny_llama), task_type="sft").set_params(
        epochs=1, batch_size=4, max_new_tokens=4, output_dir=str(tmp_path / "run"))
    tuner.fit(questions, answers)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    answers_out = tuner.predict(questions[:2])
    assert len(answers_out) == 2 and all(isinstance(a, str) for a in answers_out)
    with pytest.raises(ValueError, match="predict_proba is for task_type='classification'"):
        tuner.predict_proba(questions[:1])


@pytest.mark.slow
def test_embedded_minilm_loads_offline_and_learns(tmp_path, monkeypatch):
    from seektune.train.classify import FineTuner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts, labels = separable_rows(8, seed=6)
    tuner = FineTuner(label_names=LABELS).set_params(learning_rate=1e-4, epochs=3, batch_size=8, max_length=32)
    assert tuner.base_model == "minilm-l6-v2"
    tuner.fit(texts, labels)
    test_texts, test_labels = separable_rows(3, seed=7)
    assert tuner.evaluate(test_texts, test_labels)["accuracy"] >= 0.9
    loaded = FineTuner.load(tuner.save(tmp_path / "minilm"))
    assert loaded.predict(test_texts) == tuner.predict(test_texts)


def test_classification_task_through_a_recipe(tiny_bert, tmp_path):
    import yaml

    texts, labels = separable_rows(12, seed=3)
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(texts, labels)))
    recipe = {"task": "classification", "labels": sorted(set(labels)), "model": str(tiny_bert),
              "data": {"paths": [str(data)], "format": "text", "meta_fields": ["label"],
                       "dedup": {"exact": False, "near": False}, "leakage": {"check": False},
                       "split": {"train": 0.6, "val": 0.2, "test": 0.2, "stratify_by": "label"}},
              "train": {"epochs": 3, "lr": 5e-3, "batch_size": 8}, "output_dir": str(tmp_path / "run")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cli("train", tmp_path / "r.yaml")
    run_dir = tmp_path / "run"
    scores = json.loads((run_dir / "eval" / "metrics.json").read_text())
    metrics = scores["tuned"]
    assert (run_dir / "classifier" / "model.safetensors").is_file()
    assert metrics["n"] == sum(1 for _ in (run_dir / "data" / "test.jsonl").open())
    assert 0 <= metrics["macro_f1"] <= 1 and len(metrics["confusion_matrix"]) == len(recipe["labels"])
    # the n-gram baseline is fitted on the same train split and scored on the same rows (one keyword per class)
    assert scores["baseline"]["n"] == metrics["n"] and scores["baseline"]["accuracy"] == 1.0
    assert (run_dir / "report.html").is_file() and (run_dir / "train.json").is_file()
