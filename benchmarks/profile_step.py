"""Where a training step's time goes: seektune's training path on the demo's settings, split into data
collation, matmuls, attention, the optimizer, and the rest (element-wise ops, autograd, Python).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_step.py              # ~3 minutes on 2 cores
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_step.py --steps 6    # a quicker look

The model, data and settings are `make demo`'s (examples/customer-service/recipe.yaml: SmolLM2-135M,
LoRA r=32 on every linear layer, 8 rows per step, padding-free batches, the label-only LM head), built
with ``seektune.train.pipeline.build_trainer``. Two passes of the same steps:

1. plain (no profiler): the wall time of each step, the time inside the data collator and between the
   Trainer's ``on_pre_optimizer_step`` and ``on_optimizer_step`` (the optimizer), measured with
   ``time.perf_counter``; the first step is left out (warm-up);
2. under ``torch.profiler`` (CPU): the self time of the matmul kernels (``aten::mm``, ``addmm``, ``bmm``
   ...) and of the attention ops (scaled-dot-product attention, softmax), as shares of the profiled
   forward + backward, applied to the plain pass's forward + backward time (the profiler's own overhead
   inflates small ops, so only its shares are used).

The LM head's part of the matmul time is its share of the step's matmul FLOPs (``useful_flops`` of
train_throughput.py, label-only head). The machine line names the CPU and its vector instruction sets:
the same step is about twice as slow on an AVX2-only CPU as on one with AVX-512.

The last line is a JSON object; its ``ratio`` is the step's useful FLOP/s over the fp32 ``torch.mm``
peak measured in the same run (the fraction of what this CPU's matmul units can do; higher is better).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import EXAMPLE, matmul_peak_gflops, useful_flops

from seektune.models.hardware import cpu_info, machine_summary

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"}
ATTENTION_WORDS = ("scaled_dot_product", "attention", "softmax")


class Phases:
    """A collator wrapper and a callback: per step, the collation time, the optimizer time and the step's end."""

    def __init__(self, collator):
        self.collator, self.collate_s, self.batches = collator, [], []
        self.optimizer_s, self.step_ends, self.started = [], [], None

    def __call__(self, examples):
        started = time.perf_counter()
        batch = self.collator(examples)
        self.collate_s.append(time.perf_counter() - started)
        lengths = [len(example["input_ids"]) for example in examples]  # the rows' tokens, a shared prefix too
        self.batches.append({"real": int(sum(lengths)), "lengths": lengths,
                             "labelled": int((batch["labels"][:, 1:] != -100).sum())})
        return batch


def callback(phases: Phases, profiler=None):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            phases.step_ends.append(time.perf_counter())

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            phases.started = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            phases.optimizer_s.append(time.perf_counter() - phases.started)

        def on_step_end(self, args, state, control, **kwargs):
            phases.step_ends.append(time.perf_counter())
            if profiler is not None:
                profiler.step()

    return Timer()


def build(workdir: Path, steps: int):
    from seektune.data import prepare
    from seektune.recipe import load_recipe
    from seektune.train import pipeline

    overrides = [f"output_dir={workdir}", f"train.max_steps={steps}", "train.eval_steps=1000000",
                 "train.val_loss=false", "train.report_to=[]", "train.logging_steps=1000000", "train.estimate=false",
                 "train.sampling=random"]
    recipe = load_recipe(EXAMPLE / "recipe.yaml", overrides)
    if not (workdir / "data" / "train.jsonl").is_file():
        prepare.run(recipe)
    torch.manual_seed(0)
    built = pipeline.build_trainer(recipe)
    return built.trainer


def plain_pass(workdir: Path, steps: int) -> dict:
    trainer = build(workdir, steps)
    phases = Phases(trainer.data_collator)
    trainer.data_collator = phases
    trainer.add_callback(callback(phases))
    trainer.train()
    step_s = [b - a for a, b in zip(phases.step_ends, phases.step_ends[1:])][1:]  # step 1 warms up
    config = trainer.model.get_base_model().config
    batches = phases.batches[1:steps]
    flops = sum(useful_flops(config, b) for b in batches)
    head = sum(2 * 2 * config.hidden_size * config.vocab_size * b["labelled"] for b in batches)
    return {"step_s": sum(step_s) / len(step_s), "collate_s": sum(phases.collate_s[1:steps]) / len(step_s),
            "optimizer_s": sum(phases.optimizer_s[1:]) / len(step_s), "useful_flops_per_step": flops / len(step_s),
            "lm_head_flop_share": head / flops, "tokens_per_step": sum(b["real"] for b in batches) / len(step_s)}


def profiled_shares(workdir: Path, steps: int) -> dict:
    """Shares of the forward + backward's self CPU time: matmul kernels, attention ops, the rest."""
    from torch.profiler import ProfilerActivity, profile, schedule

    trainer = build(workdir, steps)
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=steps - 2)) as prof:
        trainer.add_callback(callback(Phases(trainer.data_collator), prof))
        trainer.train()
    totals = {"matmul": 0.0, "attention": 0.0, "optimizer": 0.0, "all": 0.0}
    for event in prof.key_averages():
        name, self_us = event.key, event.self_cpu_time_total
        if name.startswith("Optimizer.") or name.startswith("enumerate(DataLoader)") or name.startswith("ProfilerStep"):
            if name.startswith("Optimizer.step"):
                totals["optimizer"] += event.cpu_time_total
            continue
        totals["all"] += self_us
        if name in MATMUL_OPS:
            totals["matmul"] += self_us
        elif any(word in name.lower() for word in ATTENTION_WORDS):
            totals["attention"] += self_us
    compute = totals["all"] - totals["optimizer"]  # the optimizer's ops are timed by the plain pass
    return {"matmul": totals["matmul"] / compute, "attention": totals["attention"] / compute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="Steps per pass (the first is left out).")
    args = parser.parse_args()
    print(f"machine: {machine_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_peak_gflops()
    workdir = Path(tempfile.mkdtemp(prefix="seektune-profile-"))
    try:
        plain = plain_pass(workdir / "plain", args.steps)
        shutil.copytree(workdir / "plain" / "data", workdir / "profiled" / "data")
        shares = profiled_shares(workdir / "profiled", args.steps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    step = plain["step_s"]
    compute = step - plain["collate_s"] - plain["optimizer_s"]  # forward + backward (and Trainer bookkeeping)
    rows = {
        "data collation": plain["collate_s"],
        "matmuls (linear layers)": compute * shares["matmul"] * (1 - plain["lm_head_flop_share"]),
        "matmuls (LM head, by FLOPs)": compute * shares["matmul"] * plain["lm_head_flop_share"],
        "attention": compute * shares["attention"],
        "optimizer step": plain["optimizer_s"],
        "element-wise ops, autograd, Python": compute * (1 - shares["matmul"] - shares["attention"]),
    }
    print(f"one step of make demo's training: {step:.2f} s, {plain['tokens_per_step']:.0f} tokens "
          f"(mean of steps 2..{args.steps})")
    for name, seconds in rows.items():
        print(f"  {name:38} {seconds:6.3f} s  {100 * seconds / step:5.1f}%")
    fraction = plain["useful_flops_per_step"] / step / (peak * 1e9)
    print(f"useful FLOP/s {plain['useful_flops_per_step'] / step / 1e9:.1f} G = {fraction:.3f} of the fp32 matmul "
          f"peak ({peak:.1f} GFLOP/s)")
    print(json.dumps({"ratio": round(fraction, 3), "step_s": round(step, 3),
                      "breakdown_s": {k: round(v, 3) for k, v in rows.items()},
                      "fp32_peak_gflops": round(peak, 1), "steps": args.steps, "cpu": cpu_info(),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
