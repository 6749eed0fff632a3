"""The teacher of a distillation: where it comes from, what it is, and its cached targets.

    teacher = Teacher.from_spec(recipe.distill)     # a run directory, a model, or an endpoint
    mode, why = choose_mode(recipe, teacher, tokenizer)
    targets, reused = teacher_targets(recipe, teacher, rendered_rows, pad_id)   # logits mode

For logits distillation the teacher runs once, before the student loads, over the rendered
train and val rows; for each answer token it keeps its ``top_k`` tokens and their
log-probabilities at temperature T in ``<run>/distill/teacher_topk.safetensors`` (described by
``teacher_topk.json``: the teacher's identity, T, top_k and a hash of the rows), so a rerun
reuses them and a changed teacher, temperature, top_k or row set computes them again.

**Finding a row's targets.** Targets are keyed by a hash of the row's ``(input_ids,
labels)``, not by its index: the sampler's shuffling, curriculum order and padded or
padding-free batches cannot mix them up, and a row the teacher never saw is an error, not
a misaligned target. In a batch, the labelled positions of the rows in batch order are
the targets in the same order, whether the rows are padded or concatenated.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seektune.data.render import IGNORE_INDEX
from seektune.recipe import DistillSpec, Recipe
from seektune.runs import RunDir, fingerprint, is_run_dir, run_of
from seektune.train import packing, pipeline

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
        """The teacher the recipe names; a local path that does not exist (a run not trained yet, a typo)
        is one ModelNotFound line naming ``distill.teacher``, never a Hub lookup."""
        teacher = spec.teacher
        if teacher.startswith(("http://", "https://")):
            return cls("endpoint", teacher, spec)
        if is_run_dir(teacher):
            return cls("run", teacher, spec)
        _check_local(teacher)
        return cls("model", teacher, spec)

    @property
    def label(self) -> str:
        if self.kind == "endpoint":
            return f"{self.spec.teacher_model} at {self.source}"
        return f"{self.kind} {self.source}"

    def tokenizer(self):
        """The tokenizer the teacher was trained with (a run's saved one), without loading its weights."""
        from seektune.models.load import family_of, load_tokenizer, resolve_model_path

        if self.kind == "run":
            trained = _trained_dir(RunDir(self.source))
            if (trained / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(trained)
            return student_tokenizer(RunDir(self.source).recipe())  # the run's base tokenizer and template
        path = resolve_model_path(self.source)
        return load_tokenizer(path, family_of(self.source, path))

    def base_path(self) -> str:
        """The directory (or Hub id) of the teacher's base weights."""
        from seektune.models.load import resolve_model_path

        if self.kind == "run":
            run = RunDir(self.source)
            trained = _trained_dir(run)
            return str(trained) if trained == run.model else resolve_model_path(run.recipe().model.name)
        return resolve_model_path(self.source)

    def identity(self, dtype: str) -> str:
        """What decides the teacher's outputs, cheap to compute (file hashes, never a model load)."""
        def weights(path: str) -> str:
            return f"{path}:{fingerprint(Path(path))}" if Path(path).is_dir() else path

        if self.kind == "run":
            trained = _trained_dir(RunDir(self.source))
            return f"run:{Path(self.source).resolve()}:{fingerprint(trained)}:base={weights(self.base_path())}"
        return f"model:{weights(self.base_path())}:dtype={dtype}"

    def load(self, recipe: Recipe):
        """The teacher model, in eval mode; a run's LoRA-style adapter is merged (the copy is thrown away after)."""
        if self.kind == "run":
            _, _, model = RunDir(self.source).load_tuned()
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


def _check_local(name: str) -> None:
    """A name that can only be a local path (``models.load.looks_local``) must exist; a Hub id such as
    ``deepseek-ai/DeepSeek-R1-Distill-Qwen-7B`` passes on to the loader."""
    from seektune.models.load import EMBEDDED_MODELS, ModelNotFound, looks_local

    if name in EMBEDDED_MODELS or Path(name).expanduser().exists() or not looks_local(name):
        return
    parts = Path(name).parts
    hint = " (a run directory holds recipe.resolved.yaml once prepared; train the teacher first)" \
        if len(parts) > 1 and Path(parts[0]).is_dir() else ""
    raise ModelNotFound(f"distill.teacher: {name} does not exist{hint}; give a trained run directory, a local "
                        f"model directory or .gguf file, a Hub id, an OpenAI-compatible URL, or one of: "
                        f"{', '.join(EMBEDDED_MODELS)}")


def _trained_dir(run: RunDir) -> Path:
    weights = run.trained_weights()
    if weights is None:
        raise FileNotFoundError(f"distill.teacher {run} has no trained adapter or model yet; train it first")
    return weights


def release_memory() -> None:
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


# ---------------------------------------------------------------- the teacher's top-k


def teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely tokens of each row of ``logits`` ([N, V]) and their log-probabilities at
    ``temperature`` (over the whole vocabulary). ``k`` is capped at V - 1 so "the rest" always exists."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = log_probs.topk(min(k, logits.shape[-1] - 1), dim=-1)
    return ids.to(torch.int32), values


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
    run = run_of(recipe)
    folder, meta_path, tensor_path = run.distill, run.teacher_topk_meta, run.teacher_topk
    wanted = {"format": CACHE_FORMAT, "teacher": teacher.identity(recipe.model.dtype),
              "temperature": spec.temperature, "top_k": spec.top_k, "rows_sha256": rows_hash(rows)}
    if meta_path.is_file() and tensor_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in wanted} == wanted:
            log.info("teacher targets reused from %s", tensor_path)
            return TeacherTargets.load(tensor_path, meta), True
    if not pipeline.is_main_process():
        raise RuntimeError("distributed workers expect the teacher's targets in <run>/distill/; compute them first "
                           "with one process (seektune.train.distill.prepare_teacher)")
    log.info("scoring %d rows with the teacher (%s) at T=%g, top %d", len(rows), teacher.label, spec.temperature,
             spec.top_k)
    model = teacher.load(recipe)
    targets = score_rows(model, rows, spec.top_k, spec.temperature, spec.batch_size, pad_id)
    del model
    release_memory()
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # the tensors and their description change together
    targets.save(tensor_path)
    targets.meta = {**wanted, "teacher_label": teacher.label, "rows": len(targets.spans),
                    "positions": int(targets.ids.shape[0]), "stored_top_k": int(targets.ids.shape[1])}
    meta_path.write_text(json.dumps(targets.meta, indent=2), encoding="utf-8")
    return targets, False
