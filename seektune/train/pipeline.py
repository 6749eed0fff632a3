"""What every training objective shares: the student, the rendered splits, the trainer's
arguments, the run itself and what it saves.

    main_process = ensure_prepared(recipe)        # prepare the data when the run has none
    built = build_trainer(recipe, main_process)   # student + rendered splits + trl trainer
    train_and_save(recipe, built, main_process)   # train, save adapter/ or model/, write train.json

The objectives (``sft.py``, ``distill.py``, ``preference.py``) are leaves that import this module
and never each other; ``run.py`` picks one. Batches are padding-free by default and, on a CPU,
the LM head scores only labelled positions (``seektune/train/packing.py``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seektune.data import prepare
from seektune.data.io import Reject, read_jsonl, write_jsonl
from seektune.data.render import RenderError, render_record
from seektune.models.load import load_model
from seektune.recipe import Recipe
from seektune.runs import RunDir, run_of
from seektune.train import packing, prefix
from seektune.train.methods import (
    PEFT_METHODS,
    apply_freezing,
    check_available,
    count_parameters,
    peft_config,
    quantization_config,
)

log = logging.getLogger(__name__)


def render_split(tokenizer, records: list[dict[str, Any]], max_length: int, split: str):
    """Records -> a datasets.Dataset of input_ids/labels/length, plus rejects for rows that cannot train."""
    from datasets import Dataset

    rows, rejects = [], []
    for record in records:
        try:
            rendered = render_record(tokenizer, record, max_length)
        except RenderError as exc:
            rejects.append(Reject(record["meta"].get("origin", "?"), f"render:{split}", exc.reason, exc.detail, record))
            continue
        rendered["length"] = len(rendered["input_ids"])
        rows.append(rendered)
    return Dataset.from_list(rows) if rows else None, rejects


def _precision(train) -> tuple[bool, bool]:
    """(bf16, fp16) for the Trainer; half precision is only ever used on a GPU."""
    on_gpu = torch.cuda.is_available()
    if train.precision in ("bf16", "fp16") and not on_gpu:
        raise ValueError(f"train.precision={train.precision} needs a GPU; use auto or fp32 on the CPU")
    if train.precision == "auto":
        return on_gpu and torch.cuda.is_bf16_supported(), False
    return train.precision == "bf16", train.precision == "fp16"


def trackers(names: list[str]) -> list[str]:
    """The recipe's trackers, each checked to be installed (a missing one is an error, not a silent no-op)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"train.report_to lists {name}, which is not installed: pip install {name}")
    return list(names) or ["none"]


def training_args(recipe: Recipe, has_eval: bool, padding_free: bool = False,
                  config_class=None, sampling: str | None = None, memory_plan=None, **extra):
    """The recipe's training settings as trl's ``SFTConfig``, or as ``config_class`` (trl's DPOConfig,
    KTOConfig, ...: they share TrainingArguments) with ``extra`` fields of its own. ``memory_plan`` (from
    ``memory.plan_for``) sets the rows per pass, the accumulation and checkpointing."""
    import importlib.util

    from trl import SFTConfig

    config_class = config_class or SFTConfig
    sft_only = {}
    if issubclass(config_class, SFTConfig):
        sft_only = {"max_length": None,  # rows are already rendered and truncated by data.render
                    "padding_free": padding_free}  # trl's collator: one sequence per batch, per-row position_ids
    train = recipe.train
    on_gpu = torch.cuda.is_available()
    bf16, fp16 = _precision(train)
    has_eval = has_eval and train.val_loss
    eval_strategy = "no" if not has_eval else ("steps" if train.eval_steps else "epoch")
    stopping = train.early_stopping if has_eval else None
    if train.early_stopping and not has_eval:
        log.warning("train.early_stopping needs a val split; it is off for this run")
    save_strategy = eval_strategy if stopping else ("steps" if train.save_steps else "no")
    if sampling is None:
        sampling = "sequential" if train.curriculum else train.sampling  # curriculum order is the data's order
    return config_class(
        output_dir=str(run_of(recipe).checkpoints),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.lr,
        lr_scheduler_type="constant_with_warmup" if train.schedule == "constant" else train.schedule,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=memory_plan.micro_batch if memory_plan else train.batch_size,
        per_device_eval_batch_size=memory_plan.micro_batch if memory_plan else train.batch_size,
        gradient_accumulation_steps=memory_plan.grad_accum if memory_plan else train.grad_accum,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_betas[0],
        adam_beta2=train.adam_betas[1],
        adam_epsilon=train.adam_eps,
        max_grad_norm=train.max_grad_norm,
        label_smoothing_factor=train.label_smoothing,
        neftune_noise_alpha=train.neftune_alpha,
        eval_strategy=eval_strategy,
        eval_steps=train.eval_steps,
        save_strategy=save_strategy,
        save_steps=train.eval_steps if stopping and train.eval_steps else (train.save_steps or 500),
        save_total_limit=None,  # retention is GuardedTrainer's: it never deletes the newest complete checkpoint
        load_best_model_at_end=bool(stopping),
        metric_for_best_model=(stopping.metric if stopping.metric == "eval_loss" else f"eval_{stopping.metric}")
        if stopping else None,
        greater_is_better=(stopping.metric != "eval_loss") if stopping else None,
        logging_steps=train.logging_steps,
        seed=train.seed,
        data_seed=train.seed,
        full_determinism=train.deterministic,
        gradient_checkpointing=memory_plan.checkpointing if memory_plan else train.gradient_checkpointing is True,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # works with frozen inputs (LoRA) and no_grad
        bf16=bf16,
        fp16=fp16,
        # GPU only, untested here (no GPU on the project's machines): Liger's norm / RoPE / SwiGLU kernels
        use_liger_kernel=on_gpu and importlib.util.find_spec("liger_kernel") is not None,
        train_sampling_strategy=sampling,  # group_by_length (default) pads least when rows are padded
        report_to=trackers(train.report_to),
        use_cpu=not on_gpu,  # also what makes accelerate set up gloo DDP for CPU workers under torchrun
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        disable_tqdm=False,
        **sft_only,
        **extra,
    )


def batching(recipe: Recipe, model) -> str:
    """The recipe's batching, or padded where padding-free batches would be wrong for this model or method."""
    if recipe.train.batching == "padded":
        return "padded"
    blocker = packing.padding_free_blocker(model, recipe.method.name)
    if blocker:
        log.warning("padding-free batches are off for this run (%s); rows are padded instead", blocker)
        return "padded"
    return "padding_free"


@dataclass
class Built:
    """A trainer ready to run, and what ``run`` reports about it."""

    trainer: Any
    tokenizer: Any
    train_set: Any
    family: str
    batching: str
    val_records: list[dict[str, Any]] = field(default_factory=list)  # what generation metrics answer
    # the objective's own figures for train.json: a dict, or a function of the trained trainer returning one
    extra: Any = None
    shared_prefix: bool = False  # padding-free batches whose rows compute a common prefix once (prefix.py)


def load_student(recipe: Recipe):
    """The model that trains: the recipe's base, with ``model.merge`` adapters merged into it and
    ``model.adapter`` attached for further training, frozen as the method says.

    Returns ``(loaded, peft_config)``: the trainer wraps a fresh adapter from ``peft_config``; it is
    None for full / freeze and when ``model.adapter`` already put a trainable adapter on the model.
    """
    from peft import PeftModel

    method = recipe.method
    check_available(method)
    loaded = load_model(
        recipe.model.name,
        dtype=recipe.model.dtype,
        chat_template=recipe.model.chat_template,
        trust_remote_code=recipe.model.trust_remote_code,
        quantization_config=quantization_config(method),
    )
    for adapter in recipe.model.merge:
        _check_adapter(adapter, "model.merge")
        loaded.model = PeftModel.from_pretrained(loaded.model, adapter).merge_and_unload()
        log.info("merged adapter %s into the base weights", adapter)
    if recipe.model.adapter:
        _check_adapter(recipe.model.adapter, "model.adapter")
        loaded.model = PeftModel.from_pretrained(loaded.model, recipe.model.adapter, is_trainable=True)
        log.info("training on from adapter %s (its own rank and targets; method.r and friends do not apply)",
                 recipe.model.adapter)
        return loaded, None
    apply_freezing(loaded.model, method)
    config = peft_config(method, loaded.family, loaded.model) if method.name in PEFT_METHODS else None
    return loaded, config


def _check_adapter(path: str, key: str) -> None:
    if not (Path(path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{key}: {path} is not an adapter directory (no adapter_config.json)")


def render_splits(recipe: Recipe, tokenizer, main_process: bool = True, train_split: str = "train"):
    """(train_set, val_set, val_records) of the prepared data (``train_split``: a derived split such as
    ``train.distilled`` instead of ``train``); rows that cannot render are rejects in the data summary."""
    run = run_of(recipe)
    max_length = recipe.data.max_length
    train_records = read_jsonl(run.split(train_split))
    if recipe.train.curriculum:
        from seektune.train.curriculum import order_by_difficulty

        train_records = order_by_difficulty(recipe, tokenizer, train_records)
    val_records = read_jsonl(run.split("val"))
    if recipe.data.rag is not None:
        train_records, val_records = _with_retrieved_context(recipe, run, train_split, train_records, val_records,
                                                             main_process)
    train_set, train_rejects = render_split(tokenizer, train_records, max_length, train_split)
    val_set, val_rejects = render_split(tokenizer, val_records, max_length, "val")
    if main_process:
        prepare.record_late_rejects(run, "render", train_rejects + val_rejects)
    for reject in train_rejects + val_rejects:
        log.warning("skipping %s: %s (%s)", reject.origin, reject.reason, reject.detail)
    if train_set is None:
        raise ValueError("no training rows left after rendering; see data/rejects.jsonl")
    return train_set, val_set, val_records


def _with_retrieved_context(recipe: Recipe, run, train_split: str, train_records, val_records, main_process: bool):
    """``data.rag``: retrieved passages in each row's user turn (seektune.rag.context); the rows trained on
    are written to ``data/<split>.rag.jsonl`` so they can be read."""
    from seektune.rag.context import add_retrieved_context
    from seektune.rag.index import Index

    spec = recipe.data.rag
    if main_process and recipe.rag is not None and recipe.rag.documents and recipe.rag.index == spec.index:
        from seektune.rag.build import index_from_recipe  # the rag: section's index, current with its documents

        index_from_recipe(recipe, say=lambda text: print(f"seektune: {text}"),
                          warn=lambda text: log.warning("%s", text.removeprefix("seektune: ")))
    with Index.open(spec.index) as index:
        train_records, counts = add_retrieved_context(train_records, spec, index)
        val_records, _ = add_retrieved_context(val_records, spec, index)
    if main_process:
        write_jsonl(run.split(f"{train_split}.rag"), train_records)
        print(f"seektune: data.rag - {counts['oracle']} training rows with the passage holding the answer, "
              f"{counts['without_answer']} without it ({spec.without_answer}), {counts['no_source']} left plain "
              f"(no chunk holds their answer); rows in {run.split(f'{train_split}.rag')}")
    return train_records, val_records


def stopping_callbacks(recipe: Recipe, tokenizer, val_records: list[dict[str, Any]]) -> list:
    """Early stopping on val loss or on a generation metric over the val rows; none without val rows."""
    stopping = recipe.train.early_stopping
    if not stopping or not val_records:
        return []
    from transformers import EarlyStoppingCallback

    from seektune.train.callbacks import GenerationMetric

    callbacks = []
    if stopping.metric != "eval_loss":  # must run before EarlyStoppingCallback reads the metric
        callbacks.append(GenerationMetric(tokenizer, [r for r in val_records if "messages" in r],
                                          stopping.metric, stopping.generation_rows, stopping.max_new_tokens))
    callbacks.append(EarlyStoppingCallback(stopping.patience, stopping.min_delta))
    return callbacks


def progress_callback(recipe: Recipe):
    """The callback that writes ``<run>/progress.jsonl`` (steps and logged losses as training goes)."""
    from seektune.train.callbacks import ProgressFile

    return ProgressFile(run_of(recipe).progress)


def estimate_callback(recipe: Recipe, tokenizer):
    """The callback that prints the job's estimate on this machine: training from a few timed steps, the
    evaluation from one timed batch of the eval split (base and tuned when eval.compare_base)."""
    from seektune.train.callbacks import JobEstimate

    split = run_of(recipe).split(recipe.eval.split)
    rows = [r for r in read_jsonl(split) if "messages" in r] if split.is_file() else []
    if recipe.eval.max_rows:
        rows = rows[:recipe.eval.max_rows]
    return JobEstimate(tokenizer, [r["messages"] for r in rows], recipe.eval.batch_size, recipe.eval.max_new_tokens,
                       systems=2 if recipe.eval.compare_base else 1)


def build_trainer(recipe: Recipe, main_process: bool = True, trainer_class=None, rendered=None,
                  train_split: str = "train", **trainer_kwargs) -> Built:
    """Model, rendered splits and trainer for a recipe whose data is prepared.

    ``trainer_class`` (an SFTTrainer with seektune's guards, by default ``GuardedTrainer``;
    distillation passes its own) and ``trainer_kwargs`` give an objective its own loss over
    this pipeline; ``rendered`` is what :func:`render_splits` returned, when the caller
    rendered the splits already; ``train_split`` names the split to train on.
    """
    from seektune.train.checkpoint import GuardedTrainer

    loaded, adapter_config = load_student(recipe)
    tokenizer = loaded.tokenizer
    train_set, val_set, val_records = rendered or render_splits(recipe, tokenizer, main_process, train_split)

    use_tensorboard_dir(recipe)
    callbacks = [progress_callback(recipe),
                 *stopping_callbacks(recipe, tokenizer, val_records if val_set is not None else [])]
    if main_process and recipe.task == "sft" and recipe.train.estimate:
        callbacks.append(estimate_callback(recipe, tokenizer))
    if val_set is not None and recipe.train.val_loss and main_process:
        from seektune.train.callbacks import AnnounceValPass

        callbacks.append(AnnounceValPass(len(val_set), int(sum(val_set["length"]))))
    mode = batching(recipe, loaded.model)
    if mode == "padding_free":
        packing.use_packed_attention(loaded.model)
    plan = memory_plan(recipe, loaded.model, train_set["length"], mode == "padding_free", main_process)
    trainer = (trainer_class or GuardedTrainer)(
        model=loaded.model,
        args=training_args(recipe, val_set is not None, padding_free=mode == "padding_free", memory_plan=plan),
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        peft_config=adapter_config,
        callbacks=callbacks,
        keep_checkpoints=recipe.train.save_total_limit,
        **trainer_kwargs,
    )
    # rows computing their common system prompt once (prefix.py): only the plain trainer, whose loss
    # reads nothing but labels (distillation's per-position teacher targets would lose their place)
    shared = (mode == "padding_free" and trainer_class is None and recipe.train.shared_prefix
              and loaded.model.config._attn_implementation == packing.PACKED_SDPA)
    if shared:
        trainer.data_collator = prefix.SharedPrefixCollator(trainer.data_collator)
    return Built(trainer, tokenizer, train_set, loaded.family.name, mode,
                 val_records if val_set is not None else [], shared_prefix=shared)


def memory_plan(recipe: Recipe, model, lengths: list[int], padding_free: bool, main_process: bool = True):
    """The pre-flight memory estimate (``memory.py``), printed; stops with advice when nothing fits."""
    from seektune.train import memory

    plan = memory.plan_for(model, lengths, recipe.train, padding_free)
    if main_process:
        print(f"seektune: {plan.describe()}")
        if plan.changed:
            print("seektune: the recipe's batch would not fit as it is; the plan above keeps its rows per step "
                  "(set train.gradient_checkpointing: true or false to decide yourself)")
    return plan


def use_tensorboard_dir(recipe: Recipe) -> None:
    """TensorBoard (when a tracker) logs into the run's ``logs/``."""
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_of(recipe).logs)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # under torchrun / accelerate launch


def ensure_prepared(recipe: Recipe) -> bool:
    """Prepare the data when the run has none yet and save the resolved recipe; returns main_process."""
    run = run_of(recipe)
    main_process = is_main_process()
    if not run.is_prepared():
        if not main_process:
            raise RuntimeError("distributed workers expect prepared data; `seektune train --nproc` prepares it first")
        prepare.run(recipe)
    if main_process:
        run.save_recipe(recipe)
    return main_process


def train_and_save(recipe: Recipe, built: Built, main_process: bool = True) -> Path:
    """Run a built trainer (resuming as the recipe says), save the adapter or model, write train.json.

    ``built.extra`` is merged into train.json (an objective's own figures): a dict, or a function of
    the trained trainer returning one (for figures that only exist after training)."""
    from seektune.train.checkpoint import NonFiniteLoss, newest_complete

    run = run_of(recipe)
    method = recipe.method
    trainer, tokenizer, train_set = built.trainer, built.tokenizer, built.train_set
    trainable, total = count_parameters(trainer.model)
    if main_process:
        print(f"seektune: {recipe.objective} / {method.name} on {recipe.model.name} [{built.family}] - "
              f"trainable {trainable:,} / {total:,} parameters ({100 * trainable / total:.2f}%); "
              f"{len(train_set)} train rows, {sum(train_set['length']):,} tokens; "
              f"{built.batching.replace('_', '-')} batches{' (shared prefix)' if built.shared_prefix else ''}")
    resume = recipe.train.resume
    if resume == "auto":
        newest = newest_complete(run.checkpoints)
        resume = str(newest) if newest else None
        print(f"seektune: resuming from {newest}" if newest else "seektune: no complete checkpoint; starting fresh")
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except NonFiniteLoss as exc:
        # the optimiser has not stepped yet: these are the weights after the last good step
        trainer.model.save_pretrained(run.last_good, safe_serialization=True)
        run.last_good_step.write_text(f"{exc.step - 1}\n", encoding="utf-8")
        raise NonFiniteLoss(exc.step, exc.what, run.last_good) from None

    if not trainer.is_world_process_zero():
        return run.path
    save_trained(trainer.model, tokenizer, run, merged_base=bool(recipe.model.merge))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {
        "objective": recipe.objective,
        "method": recipe.method.name,
        "batching": built.batching,
        "shared_prefix": built.shared_prefix,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_rows": len(train_set),
        "train_tokens": int(sum(train_set["length"])),
        "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "log_history": history,
        **((built.extra(trainer) if callable(built.extra) else built.extra) or {}),
    }
    run.train_summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return run.path


def save_trained(model, tokenizer, run: RunDir, merged_base: bool = False) -> Path:
    """A peft model saves ``adapter/``, any other the whole ``model/`` (safetensors either way).

    ``merged_base``: the adapter sits on a base with other adapters merged in (``model.merge``),
    which no later stage would rebuild from ``model.name``, so it is merged too and the run
    holds the whole ``model/``: eval, chat, serve and export then need nothing else."""
    from peft import PeftModel

    if merged_base and isinstance(model, PeftModel) and model.peft_config[model.active_adapter].peft_type in (
            "LORA", "IA3"):
        model = model.merge_and_unload()
    elif merged_base and isinstance(model, PeftModel):
        log.warning("a %s adapter does not merge into the weights; %s/adapter sits on the base with model.merge "
                    "merged in, and only training knows that", model.peft_config[model.active_adapter].peft_type,
                    run.path)
    out_dir = run.adapter if isinstance(model, PeftModel) else run.model
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
