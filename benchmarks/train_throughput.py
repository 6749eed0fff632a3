"""Training throughput: seektune's training path against plain trl.SFTTrainer, same model, data and steps.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_throughput.py              # ~9 minutes on 2 cores
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_throughput.py --steps 10   # a quick look

Both sides fine-tune the embedded SmolLM2-135M-Instruct with LoRA r=16 (alpha 32) on the
attention projections, fp32 on the CPU, for the same number of optimiser steps at the same
global batch (8 rows), learning rate, schedule and seed, on the same rows:

* the customer-service set (examples/customer-service, prepared by ``seektune prepare``),
* a synthetic long-tailed set: customer-service questions whose answers chain 1 to 12
  store answers (most rows short, a few long), prepared the same way.

(a) ``trl.SFTTrainer`` with its batching defaults: rows padded to the batch's longest, no
packing, random order, its fused LM head. trl cannot mask assistant turns for this chat
template (``assistant_only_loss`` needs ``{% generation %}`` markers), so it gets the rows
in its prompt-completion form, whose default loss is on the completion only; that also
trains the newline after ``<|im_end|>``, one token per row more than seektune. trl's own
non-batching defaults that would make the two runs different computations are aligned
with seektune's: fp32 rather than bf16 autocast, no gradient checkpointing.
(b) ``seektune.train.pipeline.build_trainer`` — what ``seektune train`` runs — with its defaults
(padding-free batches, per-row attention, shared-prefix batches, the label-only LM head) except the row order:
``train.sampling=random`` with the same seed draws trl's order, so both sides see the same
rows in the same steps and their eval losses can be compared. seektune's default
length-grouped order is run too (``seektune_grouped``): same speed, another order.
Then each lever of (b) is switched off on its own, for fewer steps, to measure it.

Each run is a fresh process (for its peak RSS). Tokens/s counts the rows' tokens over
steps 2..N (step 1 warms up): padding is not counted, and a system prompt that a shared-prefix
batch computes once still counts once per row (the work the plain computation does; "real /
computed tokens" is then above 1). "Useful FLOPs" per step are the forward pass plus the
input-gradient backward pass (the frozen base needs no weight gradients; LoRA's own FLOPs
are left out): 2 x [2 x layer weights x tokens + 2 x layers x sum(L^2) x heads x head_dim
(causal attention, per row) + 2 x hidden x vocab x labelled tokens]; the fraction of peak
divides that rate by a big fp32 ``torch.mm`` measured in the same run. The last line is a
JSON object whose ``ratio`` is seektune's non-padding tokens/s over trl's on the
customer-service data (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from seektune.models.hardware import cpu_info

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "customer-service"
MODEL = "smollm2-135m-instruct"
LEVERS = {  # run name: the one thing switched off in seektune's path
    "no_label_only_head": "the label-only LM head (trl's fused head scores every position)",
    "no_padding_free": "padding-free batches (rows padded to the batch's longest)",
    "no_per_row_attention": "per-row attention (transformers' block-diagonal sdpa mask over the whole batch)",
    "no_shared_prefix": "shared-prefix batches (every row computes the system prompt itself)",
}
SIDES = ["trl", "seektune", "seektune_grouped", *LEVERS]
EVALUATED = ("trl", "seektune", "seektune_grouped")  # the lever runs only time their steps


# ---------------------------------------------------------------- data


def _recipe_overrides(steps: int, batch_size: int) -> list[str]:
    return [f"train.max_steps={steps}", f"train.batch_size={batch_size}", "train.grad_accum=1",
            "train.logging_steps=1", "train.eval_steps=1000000",  # evaluation happens after, untimed
            "train.report_to=[]", "method.name=lora", "method.r=16", "method.alpha=32", "method.dropout=0.0",
            "method.target_modules=null"]  # the family's default: SmolLM2's attention projections


def long_tail_rows(n: int = 400, seed: int = 0) -> list[dict]:
    """Customer-service questions whose answers chain k store answers, k long-tailed (1 to 12, median 1)."""
    rows = [json.loads(line) for line in (EXAMPLE / "data" / "faq_en.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = sorted({r["answer"] for r in rows})
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = min(12, int(rng.paretovariate(1.3)))
        out.append({"id": f"tail-{i}", "question": rng.choice(rows)["question"],
                    "answer": " ".join(rng.sample(answers, k))})
    return out


def prepare_data(workdir: Path) -> dict[str, Path]:
    """Prepared splits for each data set, in <workdir>/<name>/data (seektune prepare)."""
    import yaml

    from seektune.data import prepare
    from seektune.recipe import load_recipe

    tail_dir = workdir / "long-tail-source"
    tail_dir.mkdir(parents=True, exist_ok=True)
    (tail_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_tail_rows()), encoding="utf-8")
    (tail_dir / "recipe.yaml").write_text(yaml.safe_dump({
        "model": MODEL,
        "data": {"paths": ["rows.jsonl"], "format": "columns", "columns": {"user": "question", "assistant": "answer"},
                 "system_prompt": "You are the customer support assistant of Larkspur Goods.", "max_length": 640,
                 "dedup": {"exact": False, "near": False}, "leakage": {"check": False},
                 "filters": {"max_repetition": None}, "split": {"train": 0.9, "val": 0.1, "test": 0.0, "seed": 7}},
        "train": {"lr": 1.0e-3, "seed": 7},
    }), encoding="utf-8")
    recipes = {"customer_service": EXAMPLE / "recipe.yaml", "long_tail": tail_dir / "recipe.yaml"}
    for name, path in recipes.items():
        recipe = load_recipe(path, [f"output_dir={workdir / name}"])
        if not (recipe.run_dir / "data" / "train.jsonl").is_file():
            prepare.run(recipe)
    return recipes


# ---------------------------------------------------------------- one run (a fresh process)


class BatchLog:
    """Wraps a collator and records each training batch: the rows' tokens, the tokens computed, row lengths,
    labels. A shared-prefix batch computes fewer tokens than its rows hold; the rows' count is the real one."""

    def __init__(self, collator):
        self.collator = collator
        self.batches: list[dict] = []
        self.on = True

    def __call__(self, examples):
        batch = self.collator(examples)
        if self.on:
            ids = batch["input_ids"]
            lengths = [len(example["input_ids"]) for example in examples]
            self.batches.append({"real": int(sum(lengths)), "computed": ids.numel(), "lengths": lengths,
                                 "labelled": int((batch["labels"][:, 1:] != -100).sum())})
        return batch


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepTimer()


def useful_flops(config, batch: dict) -> float:
    """Forward + input-gradient backward FLOPs for one batch, counting real tokens only (see the module doc)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    layer_weights = layers * (hidden * (config.num_attention_heads * head_dim) * 2 + hidden * kv * 2
                              + 3 * hidden * config.intermediate_size)
    forward = (2 * layer_weights * batch["real"]
               + 2 * layers * sum(n * n for n in batch["lengths"]) * config.num_attention_heads * head_dim
               + 2 * hidden * config.vocab_size * batch["labelled"])
    return 2.0 * forward


def _common_eval_loss(model, rows) -> float:
    """Per-token NLL of the answer tokens of the val rows as seektune renders them, the same code for both sides."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in rows:
            labels = torch.tensor([row["labels"]])
            out = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels, use_cache=False)
            n = int((labels[:, 1:] != -100).sum())
            total += out.loss.item() * n
            count += n
    return total / count


def _trl_trainer(recipe, loaded, records):
    from trl import SFTConfig, SFTTrainer

    from seektune.train.methods import peft_config

    def prompt_completion(rows):
        from datasets import Dataset

        return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])

    train = recipe.train
    args = SFTConfig(
        output_dir=str(recipe.run_dir / "checkpoints"), max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size, per_device_eval_batch_size=train.batch_size,
        learning_rate=train.lr, lr_scheduler_type=train.schedule, warmup_steps=train.warmup_ratio,
        seed=train.seed, data_seed=train.seed, logging_steps=train.logging_steps,
        eval_strategy="no", save_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
        bf16=False, gradient_checkpointing=False,  # trl's defaults differ here; aligned with seektune on a CPU
        disable_tqdm=True,
    )
    return SFTTrainer(model=loaded.model, args=args, train_dataset=prompt_completion(records["train"]),
                      eval_dataset=prompt_completion(records["val"]), processing_class=loaded.tokenizer,
                      peft_config=peft_config(recipe.method, loaded.family, loaded.model))


def worker(side: str, recipe_path: Path, data_dir: Path, out_dir: Path, steps: int, batch_size: int) -> dict:
    from seektune.data.io import read_jsonl
    from seektune.models.load import load_model
    from seektune.recipe import load_recipe
    from seektune.train import packing, pipeline

    torch.manual_seed(0)
    overrides = _recipe_overrides(steps, batch_size) + [f"output_dir={out_dir}"]
    if side != "seektune_grouped":
        overrides.append("train.sampling=random")  # with the same seed: trl's order
    if side == "no_padding_free":
        overrides.append("train.batching=padded")
    if side == "no_shared_prefix":
        overrides.append("train.shared_prefix=false")
    recipe = load_recipe(recipe_path, overrides)
    shutil.copytree(data_dir / "data", out_dir / "data", dirs_exist_ok=True)
    records = {split: read_jsonl(out_dir / "data" / f"{split}.jsonl") for split in ("train", "val")}
    if side == "trl":
        loaded = load_model(MODEL)
        trainer = _trl_trainer(recipe, loaded, records)
        batching = "padded (trl default)"
    else:
        if side == "no_label_only_head":
            packing.LabelOnlyHead.label_only = lambda self, model, inputs: False  # trl's fused head decides
        if side == "no_per_row_attention":
            packing.use_packed_attention = lambda model: model.config._attn_implementation
        built = pipeline.build_trainer(recipe)
        trainer, batching = built.trainer, built.batching
    log = BatchLog(trainer.data_collator)
    trainer.data_collator = log
    timer = step_timer()
    trainer.add_callback(timer)
    result = trainer.train()
    log.on = False
    batches = log.batches[:steps]  # the dataloader may have fetched one batch ahead
    steady = batches[1:]
    seconds = timer.ends[-1] - timer.ends[0]
    config = trainer.model.get_base_model().config
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    own_eval = common_eval = None
    if side in EVALUATED:
        own_eval = trainer.evaluate()["eval_loss"]
        val_rows, _ = pipeline.render_split(trainer.processing_class, records["val"], recipe.data.max_length, "val")
        common_eval = _common_eval_loss(trainer.model, val_rows)
    return {
        "side": side,
        "batching": batching,
        "attention": config._attn_implementation,
        "steps": trainer.state.global_step,
        "real_tokens": sum(b["real"] for b in batches),
        "computed_tokens": sum(b["computed"] for b in batches),
        "padding_efficiency": sum(b["real"] for b in batches) / sum(b["computed"] for b in batches),
        "tokens_per_s": sum(b["real"] for b in steady) / seconds,
        "s_per_step": seconds / len(steady),
        "useful_gflops_per_s": sum(useful_flops(config, b) for b in steady) / seconds / 1e9,
        "train_runtime_s": result.metrics["train_runtime"],
        "train_loss": sum(losses[-5:]) / len(losses[-5:]),  # the mean of the last five steps
        "eval_loss_own": own_eval,
        "eval_loss": common_eval,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------- the comparison


def matmul_peak_gflops(n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def spawn(side: str, name: str, recipe: Path, workdir: Path, steps: int, batch_size: int) -> dict:
    out_dir = workdir / f"{name}-{side}"
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [sys.executable, __file__, "--worker", side, "--recipe", str(recipe), "--data", str(workdir / name),
               "--out", str(out_dir), "--steps", str(steps), "--batch-size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(f"{name}/{side} failed:\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    evaluated = f"eval loss {figures['eval_loss']:.4f}  " if figures["eval_loss"] is not None else ""
    print(f"  {name:16} {side:22} {figures['s_per_step']:6.2f} s/step  {figures['tokens_per_s']:7.1f} tok/s  "
          f"real/computed {figures['padding_efficiency']:.3f}  {evaluated}RSS {figures['peak_rss_mb']:.0f} MB",
          flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps of the trl / seektune runs")
    parser.add_argument("--lever-steps", type=int, default=10, help="steps of each one-lever-off run")
    parser.add_argument("--tail-steps", type=int, default=10, help="steps on the long-tailed data")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs here (default: a temp dir)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(worker(args.worker, args.recipe, args.data, args.out, args.steps, args.batch_size)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seektune-throughput-"))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores; runs in {workdir}")
    cpu = cpu_info()
    print(f"cpu: {cpu['model']} ({', '.join(cpu['instruction_sets']) or 'no AVX2'})")
    recipes = prepare_data(workdir)
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak (4096^3 torch.mm): {peak:.1f} GFLOP/s")
    runs: dict[str, dict[str, dict]] = {"customer_service": {}, "long_tail": {}}
    plan = [("customer_service", side, args.steps) for side in EVALUATED]
    plan += [("customer_service", lever, args.lever_steps) for lever in LEVERS]
    plan += [("long_tail", "trl", args.tail_steps), ("long_tail", "seektune", args.tail_steps)]
    for name, side, steps in plan:
        runs[name][side] = spawn(side, name, recipes[name], workdir, steps, args.batch_size)
    peak = max(peak, matmul_peak_gflops())  # the better of two readings: the machine may be shared

    print()
    for name, sides in runs.items():
        trl, ours = sides["trl"], sides["seektune"]
        print(f"{name} ({trl['steps']} steps of {args.batch_size} rows):")
        print(f"  {'':28} {'trl defaults':>14} {'seektune':>14}")
        for key, label, fmt in [("padding_efficiency", "real / computed tokens", "{:.3f}"),
                                ("tokens_per_s", "non-padding tokens/s", "{:.1f}"),
                                ("s_per_step", "s/step", "{:.2f}"),
                                ("useful_gflops_per_s", "useful GFLOP/s", "{:.1f}"),
                                ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
                                ("train_loss", "train loss, last 5 steps (own)", "{:.4f}"),
                                ("eval_loss_own", "eval loss (own)", "{:.4f}"),
                                ("eval_loss", "eval loss (same scorer)", "{:.4f}")]:
            print(f"  {label:28} {fmt.format(trl[key]):>14} {fmt.format(ours[key]):>14}")
        print(f"  fraction of fp32 matmul peak   {trl['useful_gflops_per_s'] / peak:>14.3f} "
              f"{ours['useful_gflops_per_s'] / peak:>14.3f}")
        print(f"  ratio (non-padding tokens/s): {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}; "
              f"eval loss gap {100 * (ours['eval_loss'] / trl['eval_loss'] - 1):+.2f}%")
    cs = runs["customer_service"]
    grouped = cs["seektune_grouped"]
    print(f"seektune's default length-grouped order: {grouped['tokens_per_s']:.1f} tok/s "
          f"(ratio {grouped['tokens_per_s'] / cs['trl']['tokens_per_s']:.2f}), eval loss {grouped['eval_loss']:.4f} "
          f"({100 * (grouped['eval_loss'] / cs['trl']['eval_loss'] - 1):+.2f}% against trl: another order of rows)")
    print(f"levers, each switched off alone ({args.lever_steps} steps, customer-service, trl's order):")
    for lever, what in LEVERS.items():
        gain = cs["seektune"]["tokens_per_s"] / cs[lever]["tokens_per_s"]
        print(f"  without {what}: {cs[lever]['tokens_per_s']:.1f} tok/s, real / computed tokens "
              f"{cs[lever]['padding_efficiency']:.3f}; seektune is {gain:.2f}x that")

    tail = runs["long_tail"]
    summary = {
        "ratio": round(cs["seektune"]["tokens_per_s"] / cs["trl"]["tokens_per_s"], 2),
        "long_tail_ratio": round(tail["seektune"]["tokens_per_s"] / tail["trl"]["tokens_per_s"], 2),
        "padding_efficiency": {n: {s: round(r[s]["padding_efficiency"], 3) for s in ("trl", "seektune")}
                               for n, r in runs.items()},
        "tokens_per_s": {n: {s: round(f["tokens_per_s"], 1) for s, f in r.items()} for n, r in runs.items()},
        "eval_loss": {n: {s: round(r[s]["eval_loss"], 4) for s in ("trl", "seektune")} for n, r in runs.items()},
        "eval_loss_gap_pct": round(100 * (cs["seektune"]["eval_loss"] / cs["trl"]["eval_loss"] - 1), 2),
        "grouped_order": {"ratio": round(grouped["tokens_per_s"] / cs["trl"]["tokens_per_s"], 2),
                          "eval_loss": round(grouped["eval_loss"], 4)},
        "train_loss": {n: {s: round(r[s]["train_loss"], 4) for s in ("trl", "seektune")} for n, r in runs.items()},
        "peak_rss_mb": {n: {s: round(r[s]["peak_rss_mb"]) for s in ("trl", "seektune")} for n, r in runs.items()},
        "fraction_of_fp32_peak": {n: {s: round(r[s]["useful_gflops_per_s"] / peak, 3) for s in ("trl", "seektune")}
                                  for n, r in runs.items()},
        "fp32_peak_gflops": round(peak, 1),
        "steps": {"customer_service": args.steps, "levers": args.lever_steps, "long_tail": args.tail_steps},
        "batch_size": args.batch_size,
        "torch_threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "cpu": cpu_info(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
