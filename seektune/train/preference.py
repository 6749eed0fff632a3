"""The train stage for preference objectives: dpo, orpo and kto through trl's trainers.

    seektune train recipe.yaml objective=dpo preference.beta=0.1

The prepared splits hold preference records (``seektune/data/formats.py``): a pair is
``{"messages": prompt + [chosen], "rejected": "text"}``, a kto row ``{"messages": prompt +
[completion], "label": bool}``. They become trl's conversational rows (``prompt`` messages,
``chosen`` / ``rejected`` / ``completion`` as one assistant message each), which trl renders
with the tokenizer's chat template. The chosen answer stays the last turn of every record,
so ``seektune eval`` scores a preference run against the chosen answers.

The reference model of dpo and kto: with a fresh LoRA adapter, trl disables the adapter, so
the reference is the base (with any ``model.merge`` adapters merged in); when training on from
``model.adapter``, trl keeps a frozen copy of that adapter as the reference; for full / freeze
it is a frozen copy of the starting weights. orpo needs none.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from seektune.data import prepare
from seektune.data.formats import rejected_message
from seektune.data.io import Reject, read_jsonl
from seektune.data.render import control_safe, mark_user_text, prompt_text
from seektune.recipe import Recipe
from seektune.runs import run_of
from seektune.train import pipeline
from seektune.train.callbacks import DropReferenceAdapter
from seektune.train.checkpoint import GuardedMixin

log = logging.getLogger(__name__)
PAIRED = ("dpo", "orpo")  # kto learns from single completions labelled desirable or not


def check_records(records: list[dict[str, Any]], objective: str, split: str) -> None:
    """Every record must carry what the objective learns from; ValueError naming how many do not and the first."""
    need = ("rejected",) if objective in PAIRED else ("label", "rejected")
    missing = [r for r in records if "messages" not in r or not any(key in r for key in need)]
    if missing:
        what = "a rejected answer" if objective in PAIRED else "a true/false label (or a rejected answer)"
        raise ValueError(
            f"objective {objective} needs rows with {what}: {len(missing)} of {len(records)} {split} rows have "
            f"none (first: {missing[0].get('meta', {}).get('origin', '?')}). Train on preference data "
            "(data.format: preference; see 'Preference tuning' in the README) or use objective: sft")


def fit_prompt(tokenizer, prompt: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]] | None:
    """The prompt within ``limit`` tokens: the oldest exchanges are dropped (a system turn stays); None when
    the last user turn alone is longer. Whole turns go, so the model never sees a prompt cut mid-template."""
    if limit is None:
        return prompt
    system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    body = prompt[len(system):]
    while True:
        text = prompt_text(tokenizer, system + body)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit:
            return system + body
        if len(body) <= 1:
            return None
        body = body[2:]  # one user turn and its answer


def trl_rows(records: list[dict[str, Any]], objective: str, tokenizer, max_prompt_length: int | None, split: str):
    """Records -> trl's conversational preference rows, and rejects for prompts that cannot fit."""
    rows, rejects = [], []
    for record in records:
        prompt = fit_prompt(tokenizer, record["messages"][:-1], max_prompt_length)
        if prompt is None:
            rejects.append(Reject(record["meta"].get("origin", "?"), f"preference:{split}", "prompt_too_long",
                                  f"the last user turn alone is longer than preference.max_prompt_length "
                                  f"{max_prompt_length}", record))
            continue
        answer = [record["messages"][-1]]
        prompt, answer = mark_user_text(tokenizer, prompt), mark_user_text(tokenizer, answer)  # see control_safe
        if objective in PAIRED:
            rows.append({"prompt": prompt, "chosen": answer,
                         "rejected": mark_user_text(tokenizer, [rejected_message(record)])})
        elif "label" in record:
            rows.append({"prompt": prompt, "completion": answer, "label": record["label"]})
        else:  # kto from a pair, as trl unpairs: the chosen answer is desirable, the rejected one is not
            rows.append({"prompt": prompt, "completion": answer, "label": True})
            rows.append({"prompt": prompt, "completion": mark_user_text(tokenizer, [rejected_message(record)]),
                         "label": False})
    return rows, rejects


def trainer_classes(objective: str):
    """(trainer class, config class) of an objective: trl's trainer with seektune's guards."""
    if objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        class GuardedDPOTrainer(GuardedMixin, DPOTrainer):
            """trl's DPOTrainer with sealed checkpoints and the non-finite loss guard."""

        return GuardedDPOTrainer, DPOConfig
    if objective == "kto":
        from trl import KTOConfig, KTOTrainer

        class GuardedKTOTrainer(GuardedMixin, KTOTrainer):
            """trl's KTOTrainer with sealed checkpoints and the non-finite loss guard."""

        return GuardedKTOTrainer, KTOConfig
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental; chosen knowingly
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class GuardedORPOTrainer(GuardedMixin, ORPOTrainer):
        """trl's ORPOTrainer with sealed checkpoints and the non-finite loss guard."""

    return GuardedORPOTrainer, ORPOConfig


def objective_fields(recipe: Recipe) -> dict[str, Any]:
    """The recipe's preference section as fields of the objective's trl config."""
    pref, objective = recipe.preference, recipe.objective
    fields: dict[str, Any] = {"beta": pref.beta, "max_length": recipe.data.max_length}
    if objective == "dpo":
        fields["loss_type"] = pref.loss_type
    elif objective == "kto":  # the default 'sigmoid' is dpo's name; kto's own loss is 'kto'
        fields["loss_type"] = "kto" if pref.loss_type == "sigmoid" else pref.loss_type
        fields.update(desirable_weight=pref.desirable_weight, undesirable_weight=pref.undesirable_weight)
    elif pref.loss_type != "sigmoid":
        log.warning("preference.loss_type=%s does not apply to orpo (its loss is fixed); ignored", pref.loss_type)
    return fields


def _row_tokens(dataset) -> list[int]:
    """Tokens one training row makes the model read: a pair is prompt + chosen and prompt + rejected."""
    columns = dataset.column_names
    if "chosen_input_ids" in columns:  # orpo: each sequence holds its prompt
        return [len(c) + len(r) for c, r in zip(dataset["chosen_input_ids"], dataset["rejected_input_ids"])]
    if "chosen_ids" in columns:
        return [2 * len(p) + len(c) + len(r)
                for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]
    return [len(p) + len(c) for p, c in zip(dataset["prompt_ids"], dataset["completion_ids"])]


def reward_figures(history: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last training reward margin and accuracy as trl logged them (dpo / orpo; kto logs no accuracy)."""
    figures: dict[str, Any] = {}
    for key, name in (("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy")):
        values = [h[key] for h in history if key in h]
        figures[f"first_{name}"] = values[0] if values else None
        figures[f"last_{name}"] = values[-1] if values else None
    return figures


def sampling(recipe: Recipe) -> str:
    """The row order: kto's KL estimate pairs each row with its neighbour in a fixed order, so it reads rows in
    order (prepare shuffled them already); trl's tokenized preference rows have no input_ids to group by length."""
    if recipe.train.curriculum:
        log.warning("train.curriculum does not apply to preference objectives; rows are read in prepared order")
    if recipe.objective == "kto" or recipe.train.curriculum or recipe.train.sampling == "sequential":
        return "sequential"
    return "random"


def run(recipe: Recipe) -> Path:
    """Train with the recipe's preference objective and save the result; returns the run directory."""
    main_process = pipeline.ensure_prepared(recipe)
    return pipeline.train_and_save(recipe, build(recipe, main_process), main_process)


def build(recipe: Recipe, main_process: bool = True) -> pipeline.Built:
    """trl's trainer for the recipe's objective over the prepared preference rows, ready to run."""
    from datasets import Dataset
    from peft import PeftModel

    objective, pref = recipe.objective, recipe.preference
    run = run_of(recipe)
    train_records = read_jsonl(run.split("train"))
    val_records = read_jsonl(run.split("val"))
    check_records(train_records, objective, "train")
    check_records(val_records, objective, "val")

    loaded, adapter_config = pipeline.load_student(recipe)
    tokenizer = control_safe(loaded.tokenizer)  # trl tokenises the rows: user text must stay plain text there too
    train_rows, rejects = trl_rows(train_records, objective, tokenizer, pref.max_prompt_length, "train")
    val_rows, val_rejects = trl_rows(val_records, objective, tokenizer, pref.max_prompt_length, "val")
    if main_process:
        prepare.record_late_rejects(run, "preference", rejects + val_rejects)
    if not train_rows:
        raise ValueError("no training rows left after fitting prompts to preference.max_prompt_length; "
                         "see data/rejects.jsonl")

    trainer_class, config_class = trainer_classes(objective)
    fields = objective_fields(recipe)
    args = pipeline.training_args(recipe, bool(val_rows), config_class=config_class,
                                  sampling=sampling(recipe), **fields)
    pipeline.use_tensorboard_dir(recipe)
    callbacks = [DropReferenceAdapter(), pipeline.progress_callback(recipe),
                 *pipeline.stopping_callbacks(recipe, tokenizer, val_records if val_rows else [])]
    extra: dict[str, Any] = {}
    if objective != "orpo" and adapter_config is None and not isinstance(loaded.model, PeftModel):
        # full / freeze: trl would reload the reference from the config's path, which misses model.merge
        extra["ref_model"] = copy.deepcopy(loaded.model).eval().requires_grad_(False)
    trainer = trainer_class(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        processing_class=tokenizer,
        peft_config=adapter_config,
        callbacks=callbacks,
        keep_checkpoints=recipe.train.save_total_limit,
        **extra,
    )
    token_counts = Dataset.from_dict({"length": _row_tokens(trainer.train_dataset)})
    reference = _reference_of(objective, adapter_config, extra)
    return pipeline.Built(trainer, tokenizer, token_counts, loaded.family.name, "padded",
                          val_records=val_records if val_rows else [],
                          extra=lambda trained: {"preference": {
                              **fields, "reference": reference, "training_rows": len(train_rows),
                              "prompts_too_long": len(rejects), **reward_figures(trained.state.log_history)}})


def _reference_of(objective: str, adapter_config, extra: dict[str, Any]) -> str:
    if objective == "orpo":
        return "none (orpo needs no reference model)"
    if "ref_model" in extra:
        return "a frozen copy of the starting weights"
    if adapter_config is None:
        return "the starting adapter (model.adapter), kept frozen"
    return "the base model (the adapter disabled)"
