"""The SFT objective: learn the data's answers (loss on assistant tokens only) through trl's SFTTrainer.

    seektune train examples/customer-service/recipe.yaml train.epochs=2

Reads the prepared splits (running ``prepare`` first when they are missing), renders them
with the chat template, trains (LoRA or any method of ``train/methods.py``) and writes
``<run>/adapter/`` (or ``model/``), ``<run>/train.json`` and TensorBoard logs in ``<run>/logs/``.
The pipeline (``train/pipeline.py``) does all of it; SFT is the objective with nothing to add.
"""

from __future__ import annotations

from pathlib import Path

from seektune.recipe import Recipe
from seektune.train import pipeline


def build(recipe: Recipe, main_process: bool = True, train_split: str = "train") -> pipeline.Built:
    """The SFT trainer over ``data/<train_split>.jsonl``, ready to run."""
    return pipeline.build_trainer(recipe, main_process, train_split=train_split)


def run(recipe: Recipe, train_split: str = "train") -> Path:
    """Fine-tune on ``data/<train_split>.jsonl`` (``train``, or a split a stage derived, e.g. an update's
    replay mix); returns the run directory."""
    main_process = pipeline.ensure_prepared(recipe)
    return pipeline.train_and_save(recipe, build(recipe, main_process, train_split), main_process)
