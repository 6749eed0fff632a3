"""Training you can trust: sealed checkpoints, exact resume, and a guard against non-finite losses.

Once the Trainer has written ``checkpoints/checkpoint-N``, a callback (``on_save``) seals it
with a ``COMPLETE`` marker holding the sha256 of every file. A run killed mid-save leaves a
folder without a marker, which is never resumed from and is removed by the next save's
retention. ``resume: auto`` takes the newest checkpoint whose marker and hashes check out;
the Trainer then restores model, optimiser, scheduler, RNG state and data position, so the
resumed run ends bit-identical to an uninterrupted one on a CPU.

A loss or gradient that is not finite stops training before the optimiser step, so the
weights on disk (``<run>/last-good``) are those of the last good step, and the command
exits non-zero naming the step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from seektune.train.callbacks import LoggedMetrics
from seektune.train.packing import LabelOnlyHead
from seektune.train.private import EpochSeededSampling

MARKER = "COMPLETE"


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, what: str, saved: Path | None = None):
        message = f"non-finite {what} at step {step}; training stopped before that step's update"
        if saved is not None:
            message += f"; the weights after step {step - 1} are in {saved}"
        super().__init__(message)
        self.step = step
        self.what = what


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def is_complete(folder: Path, verify: bool = True) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or (verify and _sha256(path) != digest):
            return False
    return True


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and is_complete(p, verify=False)]
    return sorted(found, key=_step_of)


def newest_complete(checkpoints: Path) -> Path | None:
    """The newest checkpoint whose marker and file hashes check out."""
    for folder in reversed(complete_checkpoints(checkpoints)):
        if is_complete(folder, verify=True):
            return folder
    return None


def apply_retention(checkpoints: Path, keep: int | None, best: Path | None) -> None:
    """Keep the newest ``keep`` complete checkpoints (and the best one); never the newest complete one."""
    complete = complete_checkpoints(checkpoints)
    if keep is None or len(complete) <= keep:
        return
    protected = set(complete[-keep:]) | ({best} if best else set())
    for folder in complete:
        if folder not in protected:
            shutil.rmtree(folder, ignore_errors=True)
    for folder in checkpoints.glob("checkpoint-*"):  # leftovers of an interrupted save with no marker
        if folder.is_dir() and not (folder / MARKER).is_file() and _step_of(folder) < _step_of(complete[-1]):
            shutil.rmtree(folder, ignore_errors=True)


def _fault(kind: str) -> int | None:
    """Fault injection for tests: SEEKTUNE_FAULT=nan@3 | kill@5 | kill-in-save@4 (1-based optimiser steps)."""
    spec = os.environ.get("SEEKTUNE_FAULT", "")
    name, _, step = spec.partition("@")
    return int(step) if name == kind and step.isdigit() else None


class GuardedMixin:
    """Sealed checkpoints, our retention policy and a non-finite loss guard, for any transformers Trainer
    (SFTTrainer here; trl's DPO / KTO / ORPO trainers in ``seektune.train.preference``)."""

    def __init__(self, *args, keep_checkpoints: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(SealCheckpoints(keep_checkpoints))  # first: a checkpoint is sealed before anything else
        self.add_callback(_FiniteGradients())
        self.add_callback(_KillAtStep())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        step = self.state.global_step + 1
        if model.training and _fault("nan") == step:
            loss = loss * float("nan")
            result = (loss, result[1]) if return_outputs else loss
        if model.training and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(step, "loss")
        return result


class GuardedTrainer(GuardedMixin, EpochSeededSampling, LabelOnlyHead, LoggedMetrics, SFTTrainer):
    """trl's SFTTrainer with the guards of :class:`GuardedMixin`, a data order that survives resuming
    and, on a CPU, the label-only LM head."""


class SealCheckpoints(TrainerCallback):
    """After the Trainer saved a checkpoint: seal it (sha256 marker), then apply retention."""

    def __init__(self, keep: int | None):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        root = Path(args.output_dir)
        step = state.global_step
        written = root / f"checkpoint-{step}"
        if not written.is_dir():
            return
        if _fault("kill-in-save") == step:
            os.kill(os.getpid(), signal.SIGKILL)
        write_marker(written, step)
        best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
        apply_retention(root, self.keep, best)


class _FiniteGradients(TrainerCallback):
    """Checks every gradient after clipping and before the optimiser step."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        for name, parameter in model.named_parameters():
            if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
                raise NonFiniteLoss(state.global_step + 1, f"gradient ({name})")


class _KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if _fault("kill") == state.global_step and not control.should_save:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kwargs):
        if _fault("kill") == state.global_step:
            os.kill(os.getpid(), signal.SIGKILL)
