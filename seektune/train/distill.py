"""Knowledge distillation (``objective: distill``): the recipe's model learns from a teacher.

    seektune train examples/customer-service/distill.yaml
    seektune train examples/customer-service/distill.yaml distill.mode=sequence distill.temperature=1

The student is the recipe's model with its method (a fresh LoRA adapter by default); the
teacher is a run directory, any model the loader knows, or an OpenAI-compatible endpoint.

* **logits** (same tokenizer, local teacher): the loss on each answer token is
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(reference)``, against the
  teacher's top-k targets cached once before the student loads (``train/teacher.py``).
* **sequence** (any teacher): the teacher answers every training prompt (greedy; answers
  cached in ``<run>/distill/answers.jsonl``) and the student learns those answers with the
  SFT loss, from ``data/train.distilled.jsonl``: a split derived from ``train.jsonl``, which
  stays as prepare wrote it.

**The rest of the vocabulary.** Only the teacher's top_k tokens are stored; the mass it
puts on every other token, ``1 - sum(top_k)``, is kept as one more outcome, "the rest",
and the student's probability of it is the sum over the same tokens. The KL is then taken
between these (top_k + 1)-outcome distributions: no mass is dropped or renormalised, it is
exact when top_k covers all but one token, and it never exceeds the full KL (it equals it
when the student's tail has the teacher's shape).

Figures in ``train.json["distill"]``: teacher, mode (and why ``auto`` chose it), the
teacher cache, and (logits) the KL to the teacher on the val rows before and after training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import SFTTrainer

from seektune.data.io import read_jsonl, write_jsonl
from seektune.data.render import IGNORE_INDEX
from seektune.recipe import Recipe
from seektune.runs import run_of
from seektune.train import packing, pipeline
from seektune.train.callbacks import LoggedMetrics
from seektune.train.checkpoint import GuardedMixin
from seektune.train.private import EpochSeededSampling
from seektune.train.teacher import (  # noqa: F401  (names tests and callers reach through this module)
    DistillError,
    Teacher,
    TeacherTargets,
    choose_mode,
    labelled_positions,
    release_memory,
    row_key,
    rows_hash,
    student_tokenizer,
    teacher_targets,
    teacher_topk,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- logits mode: the maths


def topk_kl(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_log_probs: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) per row over the teacher's top-k tokens plus one "rest" outcome.

    ``student_logits`` [N, V]; ``teacher_ids`` / ``teacher_log_probs`` [N, k] from :func:`teacher_topk`.
    The teacher's rest is ``1 - sum(p_topk)``; the student's is its probability of every other token.
    """
    z = student_logits.float() / temperature
    log_z = torch.logsumexp(z, dim=-1)
    ids = teacher_ids.long()
    student_top = z.gather(-1, ids) - log_z[:, None]
    student_rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1) - log_z
    p = teacher_log_probs.float().exp()
    rest = (1 - p.sum(-1)).clamp(min=0)
    return (p * (teacher_log_probs.float() - student_top)).sum(-1) + torch.xlogy(rest, rest) - rest * student_rest


def _chunk_terms(hidden, weight, bias, targets, teacher_ids, teacher_log_probs, temperature, label_smoothing):
    logits = packing.head_logits(hidden, weight, bias)
    kl = topk_kl(logits, teacher_ids, teacher_log_probs, temperature).sum()
    ce = F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)
    return kl, ce, (logits.argmax(-1) == targets).sum()


def labelled_terms(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, teacher_ids: torch.Tensor,
                   teacher_log_probs: torch.Tensor, temperature: float, label_smoothing: float = 0.0):
    """``(sum of KL, sum of CE, correct top-1)`` over N labelled positions ([N, H] hidden states).

    The head runs a chunk of rows at a time, and under activation checkpointing when
    training, so at most one chunk of ``[rows, vocab]`` logits exists at once.
    """
    kl = ce = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    train = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    for start, end in packing.chunks(hidden.shape[0], head.weight.shape[0]):
        args = (hidden[start:end], head.weight, head.bias, targets[start:end], teacher_ids[start:end],
                teacher_log_probs[start:end], temperature, label_smoothing)
        if train:
            from torch.utils.checkpoint import checkpoint

            terms = checkpoint(_chunk_terms, *args, use_reentrant=False)
        else:
            terms = _chunk_terms(*args)
        kl, ce, correct = kl + terms[0], ce + terms[1], correct + terms[2]
    return kl, ce, correct


# ---------------------------------------------------------------- logits mode: the trainer


class WithTeacherTargets:
    """The trainer's collator (padded or padding-free), adding the rows' teacher targets in batch order."""

    def __init__(self, collate, targets: TeacherTargets):
        self.collate = collate
        self.targets = targets

    def __call__(self, examples):
        batch = self.collate(examples)
        batch["teacher_ids"], batch["teacher_log_probs"] = self.targets.for_rows(examples)
        return batch


class DistillLoss:
    """Trainer mixin: the distillation loss over the batch's labelled positions.

    The decoder's output comes through the whole model (``packing.last_hidden_state``), so
    DDP, peft and NEFTune hooks all apply; only the LM head is run here, on labelled
    positions, against the teacher's cached targets.
    """

    def __init__(self, *args, teacher_targets: TeacherTargets, temperature: float, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha = temperature, alpha
        self.data_collator = WithTeacherTargets(self.data_collator, teacher_targets)

    def distill_terms(self, model, inputs):
        """``(kl_sum, ce_sum, correct, n)`` over the batch's labelled positions."""
        inputs = dict(inputs)
        teacher_ids, teacher_log_probs = inputs.pop("teacher_ids"), inputs.pop("teacher_log_probs")
        labels = inputs.pop("labels")
        hidden = packing.last_hidden_state(model, inputs)
        offset = hidden.shape[1] - labels.shape[1]  # virtual tokens that prompt tuning puts first
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        if int(mask.sum()) != teacher_ids.shape[0]:
            raise RuntimeError(f"{int(mask.sum())} labelled positions in the batch but {teacher_ids.shape[0]} "
                               "teacher targets; the cache does not describe these rows")
        head = packing.causal_lm_of(model).get_output_embeddings()
        kl, ce, correct = labelled_terms(hidden[:, offset:-1][mask], head, targets[mask], teacher_ids,
                                         teacher_log_probs, self.temperature, self.args.label_smoothing_factor)
        return kl, ce, correct, mask.sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kl, ce, correct, n = self.distill_terms(model, inputs)
        count = n if num_items_in_batch is None else num_items_in_batch
        count = torch.as_tensor(count, device=kl.device).clamp(min=1)
        loss = (self.alpha * self.temperature ** 2 * kl + (1 - self.alpha) * ce) / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as trl: DDP averages, the count is global
        local = max(int(n), 1)
        self.record("kl", kl.item() / local)
        self.record("ce", ce.item() / local)
        self.record("mean_token_accuracy", correct.item() / local)
        if return_outputs:
            from transformers.modeling_outputs import CausalLMOutput

            return loss, CausalLMOutput(loss=loss)
        return loss


class DistillTrainer(GuardedMixin, EpochSeededSampling, DistillLoss, LoggedMetrics, SFTTrainer):
    """trl's SFTTrainer (collator, padding-free batches, checkpoints) with the distillation loss and
    seektune's guards; one line of bases, no diamond."""


@torch.no_grad()
def kl_to_teacher(trainer: DistillTrainer, dataset) -> float | None:
    """Mean KL(teacher_T || student_T) per answer token of ``dataset`` (None without rows)."""
    if dataset is None or len(dataset) == 0:
        return None
    model = trainer.model
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    kl_sum, count = 0.0, 0
    size = trainer.args.per_device_eval_batch_size
    try:
        for start in tqdm(range(0, len(dataset), size), desc="KL to the teacher", unit="batch", leave=False):
            rows = dataset.select(range(start, min(start + size, len(dataset))))
            batch = trainer.data_collator([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
            batch = {k: v.to(trainer.args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            kl, _, _, n = trainer.distill_terms(model, batch)
            kl_sum, count = kl_sum + kl.item(), count + int(n)
    finally:
        model.train(was_training)
    return kl_sum / count if count else None


class KLAfterTraining(TrainerCallback):
    """Puts the val KL of the trained student (the best checkpoint's, with early stopping) into
    ``figures``, which train.json receives."""

    def __init__(self, trainer: DistillTrainer, figures: dict[str, Any]):
        self.trainer, self.figures = trainer, figures

    def on_train_end(self, args, state, control, **kwargs):
        self.figures["val_kl_after"] = kl_to_teacher(self.trainer, self.trainer.eval_dataset)


# ---------------------------------------------------------------- sequence mode


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


DISTILLED = "train.distilled"  # the split sequence distillation trains on, derived from train


def distill_answers(recipe: Recipe, teacher: Teacher) -> dict[str, Any]:
    """Write ``data/train.distilled.jsonl``: the training rows with the teacher's answers (greedy, cached);
    returns the figures. ``train.jsonl`` is left as prepare wrote it.

    Each row's last assistant turn is the teacher's answer to what precedes it; with
    ``keep_references`` the original row stays too. Rows with no answer to replace (plain
    text) stay as they are. An empty teacher answer drops its row, counted and listed in
    ``<run>/distill/empty_answers.jsonl``.
    """
    from seektune.evaluate.cache import AnswerCache
    from seektune.evaluate.stage import GenOptions

    spec, run = recipe.distill, run_of(recipe)
    rows = read_jsonl(run.split("train"))
    answerable = [i for i, r in enumerate(rows) if r.get("messages") and r["messages"][-1]["role"] == "assistant"]
    system = teacher.system(recipe)
    options = GenOptions(spec.batch_size, spec.max_new_tokens, 0.0, 1.0, recipe.train.seed)
    answers, reused = AnswerCache(run.distill_answers).answers(
        system, [rows[i]["messages"] for i in answerable], options, "teacher")
    del system
    release_memory()
    by_row = dict(zip(answerable, answers))
    distilled, empty = [], []
    for i, row in enumerate(rows):
        if i not in by_row:
            distilled.append(row)
            continue
        if spec.keep_references:
            distilled.append({**row, "meta": {**row["meta"], "distilled": False}})
        answer = by_row[i]
        if not (answer["answer"] or "").strip():
            empty.append({"origin": row["meta"].get("origin"), "reason": "empty_teacher_answer", "row": row})
            continue
        turn = {"role": "assistant", "content": answer["answer"]}
        if answer.get("reasoning"):
            turn["reasoning"] = answer["reasoning"]
        distilled.append({"messages": row["messages"][:-1] + [turn],
                          "meta": {**row["meta"], "distilled": True, "teacher": teacher.label}})
    if empty:
        log.warning("%d of %d teacher answers were empty; those rows are left out (see %s)", len(empty),
                    len(answerable), run.distill_empty_answers)
    write_jsonl(run.distill_empty_answers, empty)
    if not distilled:
        raise DistillError(f"the teacher ({teacher.label}) gave no usable answer to any training prompt")
    write_jsonl(run.split(DISTILLED), distilled)
    figures = {"teacher_answers": len(answerable) - len(empty), "empty_answers": len(empty),
               "answers_reused": reused, "answers_generated": len(answerable) - reused,
               "reference_rows": len(answerable) if spec.keep_references else 0, "train_rows": len(distilled),
               "train_split": f"data/{DISTILLED}.jsonl"}
    run.distill_sequence.write_text(json.dumps(
        {"source_sha256": _sha256(run.split("train")), "distilled_sha256": _sha256(run.split(DISTILLED)),
         **figures}, indent=2), encoding="utf-8")
    return figures


def _distilled_already(recipe: Recipe) -> dict[str, Any]:
    """A distributed worker's view: the main process must have written the distilled rows first."""
    run = run_of(recipe)
    state = json.loads(run.distill_sequence.read_text(encoding="utf-8")) if run.distill_sequence.is_file() else {}
    fresh = (run.split(DISTILLED).is_file() and state.pop("source_sha256", None) == _sha256(run.split("train"))
             and state.pop("distilled_sha256", None) == _sha256(run.split(DISTILLED)))
    if not fresh:
        raise RuntimeError(f"distributed workers expect the teacher's answers in data/{DISTILLED}.jsonl; write them "
                           "first with one process (seektune.train.distill.prepare_teacher)")
    return state


# ---------------------------------------------------------------- the stage


def prepare_teacher(recipe: Recipe, report_rejects: bool = False) -> tuple[str, dict[str, Any], Any, Any]:
    """Everything the teacher does, before the student loads: ``(mode, figures, targets, rendered)``.

    Sequence mode writes ``data/train.distilled.jsonl`` (targets and rendered are None); logits
    mode renders the splits (``pipeline.render_splits``, rejects reported when ``report_rejects``)
    and fills the teacher cache, and the trainer reuses those rendered splits.
    """
    spec = recipe.distill
    teacher = Teacher.from_spec(spec)
    tokenizer = student_tokenizer(recipe)
    mode, fallback = choose_mode(recipe, teacher, tokenizer)
    log.info("distilling %s in %s mode", teacher.label, mode)
    figures: dict[str, Any] = {"teacher": teacher.label, "mode": mode, "requested_mode": spec.mode}
    if fallback:
        figures["fallback_reason"] = fallback
    if mode == "sequence":
        figures.update(distill_answers(recipe, teacher) if pipeline.is_main_process() else _distilled_already(recipe))
        return mode, figures, None, None
    rendered = pipeline.render_splits(recipe, tokenizer, report_rejects)
    train_set, val_set, _ = rendered
    rows = list(train_set) + (list(val_set) if val_set is not None else [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets, reused = teacher_targets(recipe, teacher, rows, pad)
    figures.update({"temperature": spec.temperature, "alpha": spec.alpha, "top_k": int(targets.ids.shape[1]),
                    "teacher_cache": "reused" if reused else "computed",
                    "teacher_positions": int(targets.ids.shape[0]), "val_rows": len(val_set) if val_set else 0})
    return mode, figures, targets, rendered


def build(recipe: Recipe, main_process: bool = True) -> pipeline.Built:
    """The teacher's work done (answers or cached targets), then the student's trainer, ready to run."""
    mode, figures, targets, rendered = prepare_teacher(recipe, report_rejects=main_process)
    if mode == "sequence":
        if figures["empty_answers"] and main_process:
            print(f"seektune: {figures['empty_answers']} empty teacher answers left out "
                  f"(listed in {run_of(recipe).distill_empty_answers})")
        built = pipeline.build_trainer(recipe, main_process, train_split=DISTILLED)
    else:
        spec = recipe.distill
        built = pipeline.build_trainer(recipe, main_process, rendered=rendered, trainer_class=DistillTrainer,
                                       teacher_targets=targets, temperature=spec.temperature, alpha=spec.alpha)
        figures["val_kl_before"] = kl_to_teacher(built.trainer, built.trainer.eval_dataset)
        built.trainer.add_callback(KLAfterTraining(built.trainer, figures))
    built.extra = {"distill": figures}
    return built


def run(recipe: Recipe) -> Path:
    """Distil the teacher into the recipe's model; returns the run directory.

        seektune train examples/customer-service/distill.yaml
    """
    main_process = pipeline.ensure_prepared(recipe)
    built = build(recipe, main_process)
    run_dir = pipeline.train_and_save(recipe, built, main_process)
    figures = built.extra["distill"]
    if main_process and figures.get("val_kl_after") is not None:
        print(f"seektune: KL to the teacher on val (T={recipe.distill.temperature:g}): "
              f"{figures['val_kl_before']:.4f} before, {figures['val_kl_after']:.4f} after")
    return run_dir
