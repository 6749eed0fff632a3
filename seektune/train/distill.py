"""Knowledge distillation (``objective: distill``): the recipe's model learns from a teacher.

    seektune train examples/customer-service/distill.yaml
    seektune train examples/customer-service/distill.yaml distill.mode=sequence distill.temperature=1

The student is the recipe's model with its method (a fresh LoRA adapter by default); the
teacher is a run directory, any model the loader knows, or an OpenAI-compatible endpoint.

* **logits** (same tokenizer, local teacher): the loss on each answer token is
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(reference)``. The teacher
  runs once, before the student loads, over the rendered train and val rows; for each
  answer token it keeps its ``top_k`` tokens and their log-probabilities at temperature T
  in ``<run>/distill/teacher_topk.safetensors`` (described by ``teacher_topk.json``: the
  teacher's identity, T, top_k and a hash of the rows), so a rerun reuses them and a
  changed teacher, temperature, top_k or row set computes them again.
* **sequence** (any teacher): the teacher answers every training prompt (greedy; answers
  cached in ``<run>/distill/answers.jsonl``) and the student learns those answers with the
  SFT loss. ``data/train.source.jsonl`` keeps the prepared split, so a rerun starts from it.

**The rest of the vocabulary.** Only the teacher's top_k tokens are stored; the mass it
puts on every other token, ``1 - sum(top_k)``, is kept as one more outcome, "the rest",
and the student's probability of it is the sum over the same tokens. The KL is then taken
between these (top_k + 1)-outcome distributions: no mass is dropped or renormalised, it is
exact when top_k covers all but one token, and it never exceeds the full KL (it equals it
when the student's tail has the teacher's shape).

**Finding a row's targets.** Targets are keyed by a hash of the row's ``(input_ids,
labels)``, not by its index: the sampler's shuffling, curriculum order and padded or
padding-free batches cannot mix them up, and a row the teacher never saw is an error, not
a misaligned target. In a batch, the labelled positions of the rows in batch order are
the targets in the same order, whether the rows are padded or concatenated.

Figures in ``train.json["distill"]``: teacher, mode (and why ``auto`` chose it), the
teacher cache, and (logits) the KL to the teacher on the val rows before and after training.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import SFTTrainer

from seektune.data.io import read_jsonl, write_jsonl
from seektune.data.render import IGNORE_INDEX
from seektune.recipe import DistillSpec, Recipe
from seektune.train import packing, sft
from seektune.train.checkpoint import GuardedTrainer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class DistillError(ValueError):
    """A distillation setting that cannot work, with what to change."""


# ---------------------------------------------------------------- the teacher


@dataclass
class Teacher:
    """Where the teacher comes from: ``kind`` is run, model or endpoint."""

    kind: str
    source: str
    spec: DistillSpec

    @classmethod
    def from_spec(cls, spec: DistillSpec) -> "Teacher":
        from seektune.evaluate.stage import is_run_dir, is_url

        kind = "endpoint" if is_url(spec.teacher) else "run" if is_run_dir(spec.teacher) else "model"
        return cls(kind, spec.teacher, spec)

    @property
    def label(self) -> str:
        if self.kind == "endpoint":
            return f"{self.spec.teacher_model} at {self.source}"
        return f"{self.kind} {self.source}"

    def tokenizer(self):
        """The tokenizer the teacher was trained with (a run's saved one), without loading its weights."""
        from seektune.models.load import family_of, load_tokenizer, resolve_model_path
        from seektune.recipe import load_run

        if self.kind == "run":
            trained = _trained_dir(Path(self.source))
            if (trained / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(trained)
            return student_tokenizer(load_run(self.source))  # the run's base tokenizer and template
        path = resolve_model_path(self.source)
        return load_tokenizer(path, family_of(self.source, path))

    def base_path(self) -> str:
        """The directory (or Hub id) of the teacher's base weights."""
        from seektune.models.load import resolve_model_path
        from seektune.recipe import load_run

        if self.kind == "run":
            trained = _trained_dir(Path(self.source))
            return str(trained) if trained.name == "model" else resolve_model_path(load_run(self.source).model.name)
        return resolve_model_path(self.source)

    def identity(self, dtype: str) -> str:
        """What decides the teacher's outputs, cheap to compute (file hashes, never a model load)."""
        from seektune.evaluate.stage import _fingerprint

        def weights(path: str) -> str:
            return f"{path}:{_fingerprint(Path(path))}" if Path(path).is_dir() else path

        if self.kind == "run":
            trained = _trained_dir(Path(self.source))
            return f"run:{Path(self.source).resolve()}:{_fingerprint(trained)}:base={weights(self.base_path())}"
        return f"model:{weights(self.base_path())}:dtype={dtype}"

    def load(self, recipe: Recipe):
        """The teacher model, in eval mode; a run's LoRA-style adapter is merged (the copy is thrown away after)."""
        if self.kind == "run":
            from seektune.evaluate.stage import load_tuned

            _, _, model = load_tuned(Path(self.source))
            if hasattr(model, "merge_and_unload") and not model.active_peft_config.is_prompt_learning:
                model = model.merge_and_unload()
        else:
            from seektune.models.load import load_model

            model = load_model(self.source, dtype=recipe.model.dtype,
                               trust_remote_code=recipe.model.trust_remote_code).model
        return model.eval()

    def system(self, recipe: Recipe):
        """The teacher as an answering system (seektune.evaluate.stage), for sequence mode."""
        from seektune.evaluate import stage

        if self.kind == "endpoint":
            return stage.endpoint_system(self.source, self.spec.teacher_model, workers=self.spec.batch_size,
                                         api_key_env=self.spec.api_key_env)
        if self.kind == "run":
            return stage.run_systems(Path(self.source), want_base=False)[1]
        return stage.model_system(self.source, recipe)


def _trained_dir(run_dir: Path) -> Path:
    adapter = run_dir / "adapter"
    if (adapter / "adapter_config.json").is_file():
        return adapter
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    raise FileNotFoundError(f"distill.teacher {run_dir} has no trained adapter or model yet; train it first")


def _release_memory() -> None:
    """Give a deleted teacher's memory back before the student loads."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def student_tokenizer(recipe: Recipe):
    """The student's tokenizer and chat template, without loading its weights."""
    from seektune.models.load import family_of, load_tokenizer, resolve_model_path

    spec = recipe.model
    path = resolve_model_path(spec.name)
    return load_tokenizer(path, family_of(spec.name, path), spec.chat_template, spec.trust_remote_code)


def _head_size(path: str) -> int | None:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).get_text_config().vocab_size
    except (OSError, ValueError):
        return None


def logits_blocker(recipe: Recipe, teacher: Teacher, tokenizer) -> str | None:
    """Why logits distillation cannot work for this student and teacher, or None when it can."""
    from transformers import AutoConfig

    from seektune.models.load import resolve_model_path

    if teacher.kind == "endpoint":
        return "an endpoint teacher sends text, not next-token distributions"
    theirs, ours = teacher.tokenizer().get_vocab(), tokenizer.get_vocab()
    if theirs != ours:
        differ = len(set(theirs.items()) ^ set(ours.items()))
        return (f"the teacher's tokenizer is not the student's ({len(theirs)} vs {len(ours)} tokens, "
                f"{differ} entries differ)")
    student_path = resolve_model_path(recipe.model.name)
    heads = _head_size(teacher.base_path()), _head_size(student_path)
    if None not in heads and heads[0] != heads[1]:
        return f"the teacher scores {heads[0]} tokens and the student {heads[1]}"
    config = AutoConfig.from_pretrained(student_path, trust_remote_code=recipe.model.trust_remote_code)
    scaled = [k for k in packing.SCALED_HEAD_KEYS if getattr(config.get_text_config(), k, None) not in (None, 1.0)]
    if scaled:
        return f"the student's LM head scales its logits ({', '.join(scaled)})"
    return None


def choose_mode(recipe: Recipe, teacher: Teacher, tokenizer) -> tuple[str, str | None]:
    """``(mode, why auto fell back to sequence)``; logits mode that cannot work is a DistillError."""
    mode = recipe.distill.mode
    if mode == "sequence":
        return "sequence", None
    blocker = logits_blocker(recipe, teacher, tokenizer)
    if blocker is None:
        return "logits", None
    if mode == "logits":
        raise DistillError(f"distill.mode logits needs the student's tokenizer and a local teacher, but {blocker}; "
                           "set distill.mode to sequence (or auto) to learn the teacher's answers instead")
    log.warning("distill.mode auto: %s, so the student learns the teacher's answers (sequence mode)", blocker)
    return "sequence", blocker


# ---------------------------------------------------------------- logits mode: the maths


def teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely tokens of each row of ``logits`` ([N, V]) and their log-probabilities at
    ``temperature`` (over the whole vocabulary). ``k`` is capped at V - 1 so "the rest" always exists."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = log_probs.topk(min(k, logits.shape[-1] - 1), dim=-1)
    return ids.to(torch.int32), values


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


# ---------------------------------------------------------------- logits mode: the teacher cache


def row_key(input_ids, labels) -> int:
    """A row's identity for its cached targets: 8 bytes of the sha256 of its tokens and labels."""
    digest = hashlib.sha256()
    for part in (input_ids, labels):
        digest.update(np.asarray(part, dtype=np.int64).tobytes())
        digest.update(b"|")
    return int.from_bytes(digest.digest()[:8], "little", signed=True)


def labelled_positions(labels) -> list[int]:
    """Positions whose logits predict a labelled token (the next one): the rows' loss positions."""
    return [t for t in range(len(labels) - 1) if labels[t + 1] != IGNORE_INDEX]


@dataclass
class TeacherTargets:
    """Cached teacher targets: per row key, a ``[start, end)`` range of ``ids`` / ``log_probs`` ([N, k])."""

    spans: dict[int, tuple[int, int]]
    ids: torch.Tensor
    log_probs: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def for_rows(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets of the rows' labelled positions, rows in order, as ``[N, k]`` tensors."""
        spans = []
        for row in rows:
            key = row_key(row["input_ids"], row["labels"])
            if key not in self.spans:
                raise DistillError("a training row has no cached teacher targets (the rows changed after the "
                                   "teacher ran); delete <run>/distill/teacher_topk.json to compute them again")
            spans.append(self.spans[key])
        index = torch.cat([torch.arange(start, end) for start, end in spans] or [torch.zeros(0, dtype=torch.long)])
        return self.ids[index], self.log_probs[index]

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        keys = sorted(self.spans)
        tensors = {"row_keys": torch.tensor(keys, dtype=torch.int64),
                   "spans": torch.tensor([self.spans[k] for k in keys], dtype=torch.int64).reshape(-1, 2),
                   "ids": self.ids.contiguous(), "log_probs": self.log_probs.contiguous()}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> "TeacherTargets":
        from safetensors.torch import load_file

        tensors = load_file(path)
        spans = {int(k): (int(s), int(e)) for k, (s, e) in zip(tensors["row_keys"], tensors["spans"].tolist())}
        return cls(spans, tensors["ids"], tensors["log_probs"], meta)


def rows_hash(rows) -> str:
    """Order-free hash of a row set (a curriculum reordering keeps the cache; a changed row does not)."""
    keys = sorted({row_key(r["input_ids"], r["labels"]) for r in rows})
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


@torch.inference_mode()
def score_rows(model, rows, top_k: int, temperature: float, batch_size: int, pad_id: int) -> TeacherTargets:
    """The teacher's top-k at every labelled position of each distinct row, in right-padded batches
    sorted by length. Logits are kept from the first labelled position of the batch onwards."""
    from tqdm.auto import tqdm

    unique = list({row_key(r["input_ids"], r["labels"]): r for r in rows}.items())
    unique.sort(key=lambda item: len(item[1]["input_ids"]))
    device = next(model.parameters()).device
    spans, ids, log_probs, total = {}, [], [], 0
    for start in tqdm(range(0, len(unique), batch_size), desc="teacher", unit="batch"):
        batch = unique[start:start + batch_size]
        positions = [labelled_positions(row["labels"]) for _, row in batch]
        width = max(len(row["input_ids"]) for _, row in batch)
        first = min((p[0] for p in positions if p), default=width - 1)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, (_, row) in enumerate(batch):
            input_ids[b, :len(row["input_ids"])] = torch.tensor(row["input_ids"])
            mask[b, :len(row["input_ids"])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       logits_to_keep=width - first).logits[:, -(width - first):]
        for b, (key, _) in enumerate(batch):
            picked = logits[b, [t - first for t in positions[b]]]
            top_ids, top_log_probs = teacher_topk(picked, top_k, temperature)
            ids.append(top_ids.cpu())
            log_probs.append(top_log_probs.cpu())
            spans[key] = (total, total + len(positions[b]))
            total += len(positions[b])
    return TeacherTargets(spans, torch.cat(ids), torch.cat(log_probs))


def teacher_targets(recipe: Recipe, teacher: Teacher, rows, pad_id: int) -> tuple[TeacherTargets, bool]:
    """The teacher's cached targets for ``rows``, computed (and the teacher freed) unless the cache
    in ``<run>/distill/`` was made by the same teacher, temperature, top_k and rows. Returns
    ``(targets, reused)``."""
    spec = recipe.distill
    folder = recipe.run_dir / "distill"
    meta_path, tensor_path = folder / "teacher_topk.json", folder / "teacher_topk.safetensors"
    wanted = {"format": CACHE_FORMAT, "teacher": teacher.identity(recipe.model.dtype),
              "temperature": spec.temperature, "top_k": spec.top_k, "rows_sha256": rows_hash(rows)}
    if meta_path.is_file() and tensor_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in wanted} == wanted:
            log.info("teacher targets reused from %s", tensor_path)
            return TeacherTargets.load(tensor_path, meta), True
    if not sft.is_main_process():
        raise RuntimeError("distributed workers expect the teacher's targets in <run>/distill/; compute them first "
                           "with one process (seektune.train.distill.prepare_teacher)")
    log.info("scoring %d rows with the teacher (%s) at T=%g, top %d", len(rows), teacher.label, spec.temperature,
             spec.top_k)
    model = teacher.load(recipe)
    targets = score_rows(model, rows, spec.top_k, spec.temperature, spec.batch_size, pad_id)
    del model
    _release_memory()
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the tensors and their description change together
    targets.save(tensor_path)
    targets.meta = {**wanted, "teacher_label": teacher.label, "rows": len(targets.spans),
                    "positions": int(targets.ids.shape[0]), "stored_top_k": int(targets.ids.shape[1])}
    meta_path.write_text(json.dumps(targets.meta, indent=2), encoding="utf-8")
    return targets, False


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


def _return_hidden_states(base) -> None:
    """Let ``model(..., seektune_hidden_states=True)`` return the decoder's output instead of logits.

    The call still goes through every wrapper (DDP, peft, NEFTune hooks), so only the LM
    head is skipped: distillation runs it on labelled positions itself.
    """
    previous = base.forward

    @functools.wraps(type(base).forward)
    def forward(self, *args, seektune_hidden_states=False, **kwargs):
        if not seektune_hidden_states:
            return previous(*args, **kwargs)
        for unused in ("labels", "fused_lm_head", "shift_labels", "num_items_in_batch", "logits_to_keep"):
            kwargs.pop(unused, None)
        kwargs["use_cache"] = False
        return self.base_model(*args, **kwargs)

    base.forward = types.MethodType(forward, base)


class _DistillLoss(SFTTrainer):
    """The distillation loss; :class:`DistillTrainer` puts GuardedTrainer's checks around it."""

    def __init__(self, *args, teacher_targets: TeacherTargets, temperature: float, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha = temperature, alpha
        self.data_collator = WithTeacherTargets(self.data_collator, teacher_targets)
        self.student = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        _return_hidden_states(self.student)

    def distill_terms(self, model, inputs):
        """``(kl_sum, ce_sum, correct, n)`` over the batch's labelled positions."""
        teacher_ids, teacher_log_probs = inputs.pop("teacher_ids"), inputs.pop("teacher_log_probs")
        labels = inputs.pop("labels")
        hidden = model(**inputs, seektune_hidden_states=True).last_hidden_state
        offset = hidden.shape[1] - labels.shape[1]  # virtual tokens that prompt tuning puts first
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        if int(mask.sum()) != teacher_ids.shape[0]:
            raise RuntimeError(f"{int(mask.sum())} labelled positions in the batch but {teacher_ids.shape[0]} "
                               "teacher targets; the cache does not describe these rows")
        head = self.student.get_output_embeddings()
        kl, ce, correct = labelled_terms(hidden[:, offset:-1][mask], head, targets[mask], teacher_ids,
                                         teacher_log_probs, self.temperature, self.args.label_smoothing_factor)
        return kl, ce, correct, mask.sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        kl, ce, correct, n = self.distill_terms(model, inputs)
        count = n if num_items_in_batch is None else num_items_in_batch
        count = torch.as_tensor(count, device=kl.device).clamp(min=1)
        loss = (self.alpha * self.temperature ** 2 * kl + (1 - self.alpha) * ce) / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as trl: DDP averages, the count is global
        local = max(int(n), 1)
        self._metrics[mode]["kl"].append(kl.item() / local)
        self._metrics[mode]["ce"].append(ce.item() / local)
        self._metrics[mode]["mean_token_accuracy"].append(correct.item() / local)
        if return_outputs:
            from transformers.modeling_outputs import CausalLMOutput

            return loss, CausalLMOutput(loss=loss)
        return loss


class DistillTrainer(GuardedTrainer, _DistillLoss):
    """GuardedTrainer (checkpoints, non-finite guard) over the distillation loss."""


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
            batch = trainer._prepare_inputs(trainer.data_collator(
                [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]))
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


def source_rows(run_dir: Path, restore: bool = False) -> list[dict[str, Any]]:
    """The prepared train split as ``prepare`` wrote it, kept in ``data/train.source.jsonl``.

    ``train.jsonl`` becomes the distilled rows; when it no longer is the file written here
    (the data was prepared again), it is the new source. ``restore`` puts the source back
    in ``train.jsonl`` (logits mode after a sequence-mode run in the same directory).
    """
    data = run_dir / "data"
    source, train, state = data / "train.source.jsonl", data / "train.jsonl", run_dir / "distill" / "sequence.json"
    written = json.loads(state.read_text(encoding="utf-8")).get("train_sha256") if state.is_file() else None
    if not source.is_file() or written != _sha256(train):
        _copy(train, source)
    elif restore:
        _copy(source, train)
        state.unlink()
    return read_jsonl(source)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def distill_answers(recipe: Recipe, teacher: Teacher) -> dict[str, Any]:
    """Replace the training rows with the teacher's answers (greedy, cached); returns the figures.

    Each row's last assistant turn is the teacher's answer to what precedes it; with
    ``keep_references`` the original row stays too. Rows with no answer to replace (plain
    text) stay as they are. An empty teacher answer drops its row, counted and listed in
    ``<run>/distill/empty_answers.jsonl``.
    """
    from seektune.evaluate.stage import AnswerCache, GenOptions

    spec, run_dir = recipe.distill, recipe.run_dir
    rows = source_rows(run_dir)
    answerable = [i for i, r in enumerate(rows) if r.get("messages") and r["messages"][-1]["role"] == "assistant"]
    system = teacher.system(recipe)
    options = GenOptions(spec.batch_size, spec.max_new_tokens, 0.0, 1.0, recipe.train.seed)
    answers, reused = AnswerCache(run_dir / "distill" / "answers.jsonl").answers(
        system, [rows[i]["messages"] for i in answerable], options, "teacher")
    del system
    _release_memory()
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
                    len(answerable), run_dir / "distill" / "empty_answers.jsonl")
    write_jsonl(run_dir / "distill" / "empty_answers.jsonl", empty)
    if not distilled:
        raise DistillError(f"the teacher ({teacher.label}) gave no usable answer to any training prompt")
    train = run_dir / "data" / "train.jsonl"
    write_jsonl(train.with_suffix(".tmp"), distilled)
    os.replace(train.with_suffix(".tmp"), train)
    figures = {"teacher_answers": len(answerable) - len(empty), "empty_answers": len(empty),
               "answers_reused": reused, "answers_generated": len(answerable) - reused,
               "reference_rows": len(answerable) if spec.keep_references else 0, "train_rows": len(distilled)}
    (run_dir / "distill" / "sequence.json").write_text(
        json.dumps({"train_sha256": _sha256(train), **figures}, indent=2), encoding="utf-8")
    return figures


def _distilled_already(recipe: Recipe) -> dict[str, Any]:
    """A distributed worker's view: the main process must have written the distilled rows first."""
    state, train = recipe.run_dir / "distill" / "sequence.json", recipe.run_dir / "data" / "train.jsonl"
    figures = json.loads(state.read_text(encoding="utf-8")) if state.is_file() else {}
    if figures.pop("train_sha256", None) != _sha256(train):
        raise RuntimeError("distributed workers expect the teacher's answers in data/train.jsonl; write them first "
                           "with one process (seektune.train.distill.prepare_teacher)")
    return figures


# ---------------------------------------------------------------- the stage


def prepare_teacher(recipe: Recipe, report_rejects: bool = False) -> tuple[str, dict[str, Any], Any, Any]:
    """Everything the teacher does, before the student loads: ``(mode, figures, targets, rendered)``.

    Sequence mode rewrites ``data/train.jsonl`` (targets and rendered are None); logits mode
    renders the splits (``sft.render_splits``, rejects reported when ``report_rejects``) and
    fills the teacher cache, and the trainer reuses those rendered splits.
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
        figures.update(distill_answers(recipe, teacher) if sft.is_main_process() else _distilled_already(recipe))
        return mode, figures, None, None
    data = recipe.run_dir / "data"
    if (data / "train.source.jsonl").is_file() and sft.is_main_process():
        source_rows(recipe.run_dir, restore=True)  # an earlier sequence-mode run rewrote train.jsonl
    rendered = sft.render_splits(recipe, tokenizer, report_rejects)
    train_set, val_set, _ = rendered
    rows = list(train_set) + (list(val_set) if val_set is not None else [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets, reused = teacher_targets(recipe, teacher, rows, pad)
    figures.update({"temperature": spec.temperature, "alpha": spec.alpha, "top_k": int(targets.ids.shape[1]),
                    "teacher_cache": "reused" if reused else "computed",
                    "teacher_positions": int(targets.ids.shape[0]), "val_rows": len(val_set) if val_set else 0})
    return mode, figures, targets, rendered


def run(recipe: Recipe) -> Path:
    """Distil the teacher into the recipe's model; returns the run directory.

        seektune train examples/customer-service/distill.yaml
    """
    main_process = sft.ensure_prepared(recipe)
    mode, figures, targets, rendered = prepare_teacher(recipe, report_rejects=main_process)
    if mode == "sequence":
        if figures["empty_answers"]:
            print(f"seektune: {figures['empty_answers']} empty teacher answers left out "
                  f"(listed in {recipe.run_dir / 'distill' / 'empty_answers.jsonl'})")
        built = sft.build_trainer(recipe, main_process)
        return sft.train_and_save(recipe, built, main_process, extra={"distill": figures})

    spec = recipe.distill
    built = sft.build_trainer(recipe, main_process, rendered=rendered, trainer_class=DistillTrainer,
                              teacher_targets=targets,
                              temperature=spec.temperature, alpha=spec.alpha)
    figures["val_kl_before"] = kl_to_teacher(built.trainer, built.trainer.eval_dataset)
    built.trainer.add_callback(KLAfterTraining(built.trainer, figures))
    run_dir = sft.train_and_save(recipe, built, main_process, extra={"distill": figures})
    if main_process and figures.get("val_kl_after") is not None:
        print(f"seektune: KL to the teacher on val (T={spec.temperature:g}): "
              f"{figures['val_kl_before']:.4f} before, {figures['val_kl_after']:.4f} after")
    return run_dir
