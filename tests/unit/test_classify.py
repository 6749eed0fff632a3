"""FineTuner's checks that run before any model is loaded: labels, parameters, metrics, the recipe's task.

    .venv/bin/python -m pytest -q tests/unit/test_classify.py

Training a classifier (BERT, a decoder without a pad token, the embedded MiniLM, a recipe with
``task: classification``) is in tests/e2e/test_classify.py.
"""

from __future__ import annotations

import numpy as np
import pytest

LABELS = ["billing", "shipping", "returns"]


def test_metrics_equal_scikit_learn_on_seeded_probabilities():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    from seektune.train.classify import classification_metrics

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=40).tolist()
    logits = rng.normal(size=(40, 3)) + 1.5 * np.eye(3)[truth]  # mostly right, not all: no score is 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    result = classification_metrics(truth, probabilities, LABELS)
    assert result["n"] == 40 and result["label_names"] == LABELS
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert result["auc_roc"] == pytest.approx(roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"))
    assert result["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    assert 0.4 < result["accuracy"] < 1.0


def test_auc_skips_a_class_missing_from_the_labels():
    from seektune.train.classify import classification_metrics

    probabilities = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    result = classification_metrics([0, 1, 0, 1], probabilities, ["a", "b", "c"])
    assert result["auc_roc"] == pytest.approx(1.0)
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert classification_metrics([0, 0], probabilities[:2], ["a", "b", "c"])["auc_roc"] is None


def test_unknown_label_is_named_with_the_known_ones():
    from seektune.train.classify import FineTuner, UnknownLabel

    # labels are checked before the model is resolved: a path that does not exist is never read
    never_loaded = "no/such-model"
    tuner = FineTuner(never_loaded, label_names=LABELS)
    with pytest.raises(UnknownLabel, match=r"train_labels\[1\]: unknown label 'shiping' \(did you mean 'shipping'\?\)"
                                           r"; known labels: billing, shipping, returns"):
        tuner.fit(["a refund", "a parcel"], ["billing", "shiping"])
    with pytest.raises(UnknownLabel, match="class id 3 is outside 0..2"):
        tuner.fit(["a refund", "a parcel"], [0, 3])
    with pytest.raises(UnknownLabel, match="no label_names were given"):
        FineTuner(never_loaded, num_classes=3).fit(["a refund"], ["billing"])
    assert tuner.model is None


def test_set_params_rejects_unknown_keys_and_bad_values():
    from seektune.train.classify import FineTuner, ParamsError

    tuner = FineTuner()
    assert tuner.set_params(epochs=2, learning_rate=1e-4) is tuner
    assert tuner.params.epochs == 2 and tuner.params.learning_rate == 1e-4
    with pytest.raises(ParamsError, match="'learning_rte' \\(did you mean 'learning_rate'\\?\\)"):
        tuner.set_params(learning_rte=1e-4)
    with pytest.raises(ParamsError, match="batch_size"):
        tuner.set_params(batch_size=0)
    assert tuner.params.epochs == 2  # a rejected call changes nothing


def test_classification_recipe_needs_labels(tmp_path):
    import yaml

    from seektune.recipe import RecipeError, load_recipe

    recipe = {"task": "classification", "data": {"paths": ["tickets.jsonl"], "format": "text"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="task classification needs labels"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "good.yaml").write_text(yaml.safe_dump({**recipe, "labels": LABELS}))
    assert load_recipe(tmp_path / "good.yaml").labels == LABELS
