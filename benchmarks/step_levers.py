"""Two levers on `make demo`'s training step, each against the same step without it: shared-prefix batches
and torch.compile.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_levers.py              # ~8 minutes on 2 cores
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_levers.py --steps 20   # a quicker look

Three runs of the demo's recipe (examples/customer-service/recipe.yaml: SmolLM2-135M, LoRA r=32 on every
linear layer, 8 rows per step, padding-free batches, label-only head), each in its own process, one
after the other, for the same steps on the same rows in the same order:

* ``seektune``: ``seektune train``'s defaults (``train.shared_prefix: true``);
* ``no_shared_prefix``: ``train.shared_prefix=false`` (every row computes the system prompt itself);
* ``compiled``: the defaults with ``torch_compile=True`` in the Trainer's arguments (inductor, CPU).

Each prints its wall time, its first step (compilation happens there) and its steady seconds per step
(steps 11..N). The losses must agree: neither lever changes the computation. The last line is a JSON
object whose ``ratio`` is ``no_shared_prefix``'s steady s/step over ``seektune``'s (higher is better);
``compile_ratio`` is the same for torch.compile against ``seektune``, counting its compile time as well
over a demo-length run (264 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "customer-service" / "recipe.yaml"
SIDES = ("seektune", "no_shared_prefix", "compiled")
DEMO_STEPS = 264


def worker(side: str, data: Path, out: Path, steps: int) -> dict:
    import shutil

    from transformers import TrainerCallback

    from seektune.recipe import load_recipe
    from seektune.train import pipeline

    shutil.copytree(data, out / "data", dirs_exist_ok=True)
    overrides = [f"train.max_steps={steps}", "train.report_to=[]", "train.estimate=false", "train.val_loss=false",
                 "train.logging_steps=10", f"output_dir={out}"]
    if side == "no_shared_prefix":
        overrides.append("train.shared_prefix=false")
    recipe = load_recipe(RECIPE, overrides)
    if side == "compiled":
        plain_args = pipeline.training_args

        def compiled_args(*args, **kwargs):
            arguments = plain_args(*args, **kwargs)
            arguments.torch_compile, arguments.torch_compile_backend = True, "inductor"
            return arguments

        pipeline.training_args = compiled_args  # before the Trainer (and its accelerator) exist
    built = pipeline.build_trainer(recipe)
    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    built.trainer.add_callback(StepEnds())
    started = time.perf_counter()
    built.trainer.train()
    steady = ends[10:]
    return {"side": side, "shared_prefix": built.shared_prefix, "total_s": time.perf_counter() - started,
            "first_step_s": ends[0] - started, "s_per_step": (steady[-1] - steady[0]) / (len(steady) - 1),
            "losses": [h["loss"] for h in built.trainer.state.log_history if "loss" in h]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run (at least 13)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.steps < 13:
        parser.error("--steps must be at least 13 (steps 11..N are the steady ones)")
    if args.worker:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(worker(args.worker, args.data, args.out, args.steps)))
        return

    import torch

    from seektune.models.hardware import cpu_info

    workdir = Path(tempfile.mkdtemp(prefix="seektune-levers-"))
    cpu = cpu_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cpu: {cpu['model']} "
          f"({', '.join(cpu['instruction_sets'])}); runs in {workdir}", flush=True)
    subprocess.run([sys.executable, "-m", "seektune", "prepare", str(RECIPE), f"output_dir={workdir / 'prepared'}"],
                   check=True, capture_output=True)
    runs = {}
    for side in SIDES:
        command = [sys.executable, __file__, "--worker", side, "--data", str(workdir / "prepared" / "data"),
                   "--out", str(workdir / side), "--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
        runs[side] = json.loads(done.stdout.strip().splitlines()[-1])
        r = runs[side]
        print(f"  {side:17} {r['s_per_step']:.2f} s/step steady, first step {r['first_step_s']:.1f} s, "
              f"total {r['total_s']:.0f} s; losses {', '.join(f'{x:.4f}' for x in r['losses'])}", flush=True)
    base, plain, compiled = runs["seektune"], runs["no_shared_prefix"], runs["compiled"]
    gap = max(abs(a - b) for side in SIDES for a, b in zip(runs[side]["losses"], base["losses"]))
    demo = {side: runs[side]["first_step_s"] + (DEMO_STEPS - 1) * runs[side]["s_per_step"] for side in SIDES}
    print(f"shared prefix: {plain['s_per_step'] / base['s_per_step']:.2f}x faster per step; torch.compile: "
          f"{base['s_per_step'] / compiled['s_per_step']:.2f}x per step, {compiled['first_step_s']:.0f} s to compile; "
          f"a {DEMO_STEPS}-step demo: {demo['seektune'] / 60:.1f} min, {demo['no_shared_prefix'] / 60:.1f} min "
          f"without the shared prefix, {demo['compiled'] / 60:.1f} min compiled; largest loss gap {gap:.1e}")
    print(json.dumps({"ratio": round(plain["s_per_step"] / base["s_per_step"], 3),
                      "compile_ratio": round(demo["seektune"] / demo["compiled"], 3),
                      "s_per_step": {side: round(runs[side]["s_per_step"], 3) for side in SIDES},
                      "first_step_s": {side: round(runs[side]["first_step_s"], 1) for side in SIDES},
                      "demo_minutes": {side: round(demo[side] / 60, 2) for side in SIDES},
                      "loss_gap": gap, "steps": args.steps, "cpu": cpu}))


if __name__ == "__main__":
    main()
