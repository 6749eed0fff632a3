"""The train stage's router: which objective trains a recipe.

    seektune train examples/customer-service/recipe.yaml            # objective: sft (the default)
    seektune train examples/customer-service/distill.yaml           # objective: distill
    seektune train examples/customer-service/stages.yaml            # stages: sft, then dpo

A classification recipe goes to ``classification``; a ``stages:`` recipe to ``stages``, which trains
each stage back through :func:`train_objective`; otherwise the recipe's ``objective`` picks its
leaf (``sft``, ``distill``, ``preference``, ``grpo``). The leaves share ``train/pipeline.py`` and never
import each other; a new objective is a new leaf and one branch in :func:`leaf`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from seektune.recipe import Recipe


def leaf(recipe: Recipe) -> ModuleType:
    """The module whose ``run(recipe)`` trains this recipe (imported on demand: each pulls in its trainer).

    Objective leaves also offer ``build(recipe, main_process) -> pipeline.Built``: the trainer ready to
    run, which ``seektune tune`` adds its callbacks to before ``pipeline.train_and_save``."""
    if recipe.task == "classification":
        from seektune.train import classification

        return classification
    if recipe.objective == "sft":
        from seektune.train import sft

        return sft
    if recipe.objective == "distill":
        from seektune.train import distill

        return distill
    if recipe.objective in ("dpo", "orpo", "kto"):
        from seektune.train import preference

        return preference
    if recipe.objective == "grpo":
        from seektune.train import grpo

        return grpo
    raise ValueError(f"objective {recipe.objective!r} has no trainer")


def train_objective(recipe: Recipe) -> Path:
    """Train one recipe (no stages) with its objective; returns the run directory."""
    return leaf(recipe).run(recipe)


def run(recipe: Recipe) -> Path:
    """Train as the recipe says and save the result; returns the run directory."""
    if recipe.stages:
        from seektune.train import stages

        return stages.run(recipe, train_objective)
    return train_objective(recipe)
