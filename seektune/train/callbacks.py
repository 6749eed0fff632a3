"""Trainer callbacks: a generation metric on the val split for early stopping and best-model selection,
a line announcing each val-loss pass, and the progress file a watcher (``seektune studio``) reads."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from seektune.evaluate.generate import generate_answers
from seektune.evaluate.metrics import score
from seektune.text import language_of


class DropReferenceAdapter(TrainerCallback):
    """Training on from ``model.adapter``, trl's DPO / KTO / GRPO trainers keep the starting adapter as a frozen
    "ref" adapter; it is not part of the result, so it goes before the adapter is saved."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")


class GenerationMetric(TrainerCallback):
    """At each evaluation, answer the first ``rows`` val questions greedily and add
    ``eval_<metric>`` (rougeL, bleu or fact_accuracy) to the metrics, so early stopping and
    the best checkpoint can follow what users care about rather than val loss alone."""

    def __init__(self, tokenizer, records: list[dict[str, Any]], metric: str, rows: int, max_new_tokens: int):
        self.tokenizer = tokenizer
        self.records = records[:rows]
        self.metric = metric
        self.max_new_tokens = max_new_tokens

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None or metrics is None or not self.records:
            return
        was_training = model.training
        answers = generate_answers(model, self.tokenizer, [r["messages"] for r in self.records],
                                   batch_size=args.per_device_eval_batch_size, max_new_tokens=self.max_new_tokens,
                                   desc=f"val {self.metric}")
        if was_training:
            model.train()
        references = [r["messages"][-1]["content"] for r in self.records]
        facts = [r["meta"].get("facts") or [] for r in self.records]
        lang = "zh" if all(language_of(ref) == "zh" for ref in references) else "en"
        value = score([a["answer"] for a in answers], references, facts, lang)[self.metric]
        metrics[f"eval_{self.metric}"] = 0.0 if value is None else value
        # the Trainer logged this evaluation before calling us: add the metric to that entry too
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1][f"eval_{self.metric}"] = metrics[f"eval_{self.metric}"]


class AnnounceValPass(TrainerCallback):
    """Print a line before each val-loss pass: on long rows it can take minutes, and without the
    line it looks as if training hung after its last step."""

    def __init__(self, rows: int, tokens: int):
        self.rows = rows
        self.tokens = tokens

    def _announce(self, args, state, control) -> None:
        if control.should_evaluate and state.is_world_process_zero:
            print(f"\nseektune: val loss at step {state.global_step}: {self.rows} rows, {self.tokens:,} tokens, "
                  f"batch {args.per_device_eval_batch_size} (train.val_loss=false skips these passes)", flush=True)

    # the Trainer's flow callback sets should_evaluate in these hooks, before ours run
    def on_step_end(self, args, state, control, **kwargs):
        self._announce(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._announce(args, state, control)


class ProgressFile(TrainerCallback):
    """Append training's progress to ``<run>/progress.jsonl`` as it happens, one JSON object per line:
    ``{"event": "begin", "max_steps"}``, ``{"event": "step", "step", "max_steps"}`` (at most one every
    ``every_s`` seconds, and the last step), ``{"event": "log", "step", "epoch", "loss", ...}`` (each entry
    the Trainer logs) and ``{"event": "end", "step"}``. Another process can follow the file while training
    runs: the loss curve without parsing the terminal's progress bar."""

    def __init__(self, path: Path, every_s: float = 1.0):
        self.path, self.every_s = Path(path), every_s
        self.last_written = 0.0

    def _write(self, state, entry: dict[str, Any]) -> None:
        if state.is_world_process_zero:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, allow_nan=False, default=str) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")  # a new training (or a resumed one) starts a new file
        self._write(state, {"event": "begin", "step": state.global_step, "max_steps": state.max_steps,
                            "time": time.time()})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if now - self.last_written >= self.every_s or state.global_step >= state.max_steps:
            self.last_written = now
            self._write(state, {"event": "step", "step": state.global_step, "max_steps": state.max_steps,
                                "time": time.time()})

    def on_log(self, args, state, control, logs=None, **kwargs):
        finite = {k: v for k, v in (logs or {}).items() if not isinstance(v, float) or math.isfinite(v)}
        self._write(state, {"event": "log", "step": state.global_step, **finite})

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state, {"event": "end", "step": state.global_step, "max_steps": state.max_steps,
                            "time": time.time()})


class JobEstimate(TrainerCallback):
    """After a few timed steps, say how long the job will take on this machine: the rest of training from the
    steps' pace, and the evaluation from one timed generation batch of the eval split (as many rows and new
    tokens as the eval stage uses), times its batches and models. The progress bar's ETA settles only after
    minutes and knows nothing of the evaluation; this line comes within the first few steps.

    The timed batch costs one eval batch of generation (about 1% of the demo); it runs with the RNG state
    saved and restored, so training goes on exactly as it would have."""

    def __init__(self, tokenizer, conversations: list[list[dict[str, Any]]], batch_size: int, max_new_tokens: int,
                 systems: int, after_steps: int = 3):
        self.tokenizer, self.batch_size, self.max_new_tokens = tokenizer, batch_size, max_new_tokens
        self.conversations, self.systems, self.after_steps = conversations, systems, after_steps
        self.times: list[float] = []

    def _eval_seconds(self, model) -> float | None:
        import random

        import torch

        if not self.conversations or model is None:
            return None
        sample = random.Random(0).sample(self.conversations, min(self.batch_size, len(self.conversations)))
        was_training = model.training
        with torch.random.fork_rng(devices=[]):
            started = time.perf_counter()
            generate_answers(model, self.tokenizer, sample, batch_size=self.batch_size,
                             max_new_tokens=self.max_new_tokens, progress=False)
            elapsed = time.perf_counter() - started
        if was_training:
            model.train()
        return elapsed * math.ceil(len(self.conversations) / self.batch_size) * self.systems

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or args.world_size > 1 or len(self.times) > self.after_steps:
            return
        self.times.append(time.perf_counter())  # from the end of step 1: the first step warms up
        if len(self.times) <= self.after_steps or state.max_steps - state.global_step < self.after_steps:
            return
        from seektune.models.hardware import machine_summary

        per_step = (self.times[-1] - self.times[0]) / self.after_steps
        train_s = per_step * (state.max_steps - state.global_step)
        eval_s = self._eval_seconds(model)
        total = train_s + (eval_s or 0.0)
        ends = time.strftime("%H:%M", time.localtime(time.time() + total))
        parts = [f"{per_step:.1f} s/step, so training takes about {train_s / 60:.1f} min more "
                 f"({state.max_steps - state.global_step} steps)"]
        if eval_s is not None:
            parts.append(f"evaluating {len(self.conversations)} rows with {self.systems} model"
                         f"{'s' if self.systems > 1 else ''} about {eval_s / 60:.1f} min")
        print(f"\nseektune: estimate on this machine ({machine_summary()}): {'; '.join(parts)}; "
              f"done about {ends}", flush=True)


class LoggedMetrics:
    """Trainer mixin: figures a loss computes (KL, token accuracy...) averaged into each log entry.

    The Trainer's public ``log`` receives every entry before it is written; the figures
    recorded since the last entry are averaged into it (``eval_`` prefixed during evaluation),
    as trl does for its own metrics, without touching trl's private metric store.
    """

    def __init__(self, *args, **kwargs):
        self.recorded: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        self.tokens_seen = 0  # a loss that counts tokens itself (packing.LabelOnlyHead) keeps the total here
        super().__init__(*args, **kwargs)

    def record(self, name: str, value: float) -> None:
        self.recorded["train" if self.model.training else "eval"].setdefault(name, []).append(float(value))

    def record_total(self, name: str, value: float) -> None:
        """A running figure (e.g. tokens seen so far): the entry shows the latest value."""
        self.recorded["train" if self.model.training else "eval"][name] = [float(value)]

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        mode = "train" if self.model.training else "eval"
        store = self.recorded[mode]
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{name}": sum(values) / len(values) for name, values in store.items() if values})
        store.clear()
        super().log(logs, *args, **kwargs)
