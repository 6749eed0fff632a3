"""Long rows: peak memory and tokens/s of `seektune train` against plain trl `SFTTrainer`, as rows grow.

    .venv/bin/python benchmarks/long_rows.py                       # rows of 256, 512, 1,024, 2,048 tokens
    .venv/bin/python benchmarks/long_rows.py --sizes 256,512       # a quick look

Each point trains 2 optimiser steps of 8 rows of exactly N tokens (generated Chinese legal-style
text, rendered and truncated to N), on the embedded SmolLM2-135M-Instruct with LoRA r 32 on
every linear layer, in its own subprocess, one after the other (never two at once), with
``OMP_NUM_THREADS`` threads (default: the machine's cores):

- seektune: `seektune.train` on a columns recipe (padding-free batches, label-only head, and the
  memory plan of ``train/memory.py`` with ``gradient_checkpointing: auto``);
- trl: ``SFTTrainer`` with the same model, LoRA and tokens (pre-tokenised ``input_ids``), batch 8,
  its defaults otherwise (padded batches, full logits, activation checkpointing on: trl 1.x
  turns it on by default) but fp32: trl's default ``bf16=True`` means bf16 autocast on a CPU,
  which on this machine (no native bf16) did not finish 2 steps of 8 x 256 tokens in 5 minutes.
  It runs under a data-size limit (``--trl-limit-gb``, default 20) so that a run that would
  exhaust the machine stops with MemoryError instead of taking it down; such a point is
  reported as "> limit".

Peak memory is the child's peak resident set (``ru_maxrss``); tokens/s counts every token of
the rows (none is padding here). Prints a table and, as its last line, a JSON object whose
``ratio`` is trl's peak memory ÷ seektune's at 8 x 1,024 tokens (a lower bound when trl hit its
limit), with seektune's peaks per size and whether they grow at most linearly in the tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 8
STEPS = 2
WORDS = ["合同", "当事人", "违约", "赔偿", "法院", "诉讼", "证据", "劳动", "工资", "租赁", "房屋", "押金", "解除",
         "责任", "根据", "规定", "应当", "可以", "承担", "请求", "支付", "期限", "协议", "条款", "民法典", "仲裁"]


def legal_text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    while sum(map(len, out)) < chars:
        out.append("".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + rng.choice("，。；"))
    return "".join(out)


def rows(tokens: int, count: int) -> list[dict[str, str]]:
    """Question/answer rows long enough to be truncated to ``tokens`` (SmolLM2: ~1.6 tokens a character)."""
    rng = random.Random(tokens)
    return [{"question": legal_text(rng, tokens // 6), "answer": legal_text(rng, tokens)} for _ in range(count)]


# ---------------------------------------------------------------- children


def child_seektune(tokens: int, work: Path) -> dict:
    import yaml

    from seektune.recipe import load_recipe
    from seektune.train.run import run

    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(tokens, ROWS * STEPS + 4)),
                    encoding="utf-8")
    recipe = {"model": "smollm2-135m-instruct",
              "data": {"paths": [str(data)], "format": "columns",
                       "columns": {"user": "question", "assistant": "answer"},
                       "max_length": tokens, "filters": {"overlength": "truncate"}, "dedup": {"near": False},
                       "split": {"train": 0.8, "val": 0.0, "test": 0.2, "seed": 1}, "leakage": {"check": False}},
              "method": {"name": "lora", "r": 32, "alpha": 64, "target_modules": "all-linear"},
              "train": {"max_steps": STEPS, "batch_size": ROWS, "lr": 1e-3, "report_to": [], "logging_steps": 1,
                        "sampling": "sequential"},
              "output_dir": str(work / "run")}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    run(load_recipe(work / "recipe.yaml"))
    summary = json.loads((work / "run" / "train.json").read_text())
    step_tokens = [h["num_tokens"] for h in summary["log_history"] if "num_tokens" in h]
    return {"seconds": summary["train_runtime_s"], "tokens": int(step_tokens[-1]) if step_tokens else None}


def child_trl(tokens: int, work: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from seektune.models.load import load_model

    loaded = load_model("smollm2-135m-instruct")
    tokenizer = loaded.tokenizer
    ids = []
    for row in rows(tokens, ROWS * STEPS):
        text = tokenizer.apply_chat_template([{"role": "user", "content": row["question"]},
                                              {"role": "assistant", "content": row["answer"]}], tokenize=False)
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"][:tokens])
    args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=ROWS, max_steps=STEPS,
                     learning_rate=1e-3, report_to=[], logging_steps=1, use_cpu=True, save_strategy="no",
                     max_length=None, dataloader_num_workers=0, bf16=False)  # fp32 as seektune on a CPU
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=Dataset.from_dict({"input_ids": ids}),
                         processing_class=tokenizer,
                         peft_config=LoraConfig(r=32, lora_alpha=64, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    result = trainer.train()
    return {"seconds": result.metrics["train_runtime"], "tokens": sum(map(len, ids))}


def child(system: str, tokens: int, limit_gb: float | None) -> None:
    if limit_gb:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    with tempfile.TemporaryDirectory(prefix=f"long-rows-{system}-") as tmp:
        try:
            result = (child_seektune if system == "seektune" else child_trl)(tokens, Path(tmp))
        except MemoryError:
            result = {"error": f"MemoryError under the {limit_gb:g} GB limit"}
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- parent


def measure(system: str, tokens: int, threads: int, limit_gb: float | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--child", system, "--sizes", str(tokens)]
    if limit_gb:
        command += ["--trl-limit-gb", str(limit_gb)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}",
                "peak_gb": None, "wall_s": time.perf_counter() - started}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = time.perf_counter() - started
    plan = [line for line in done.stdout.splitlines() if line.startswith("seektune: memory:")]
    if plan:
        result["plan"] = plan[-1][len("seektune: "):]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512,1024,2048", help="tokens per row, comma-separated")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--trl-limit-gb", type=float, default=20.0)
    parser.add_argument("--child", choices=["seektune", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, sizes[0], args.trl_limit_gb if args.child == "trl" else None)
        return

    results: dict[int, dict[str, dict]] = {}
    print(f"long rows: {ROWS} rows x N tokens, {STEPS} steps, SmolLM2-135M + LoRA r32, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'tokens/row':>10} | {'seektune peak':>13} {'tok/s':>7} | {'trl peak':>15} {'tok/s':>7} | plan")
    for tokens in sizes:
        ours = measure("seektune", tokens, args.threads, None)
        theirs = measure("trl", tokens, args.threads, args.trl_limit_gb)
        results[tokens] = {"seektune": ours, "trl": theirs}

        def cell(r):
            if r.get("error"):
                return f"> {args.trl_limit_gb:g} GB" if "MemoryError" in r["error"] else "failed", "-"
            return f"{r['peak_gb']:.2f} GB", f"{r['tokens'] / r['seconds']:.0f}" if r.get("seconds") else "-"

        (op, ot), (tp, tt) = cell(ours), cell(theirs)
        print(f"{tokens:>10} | {op:>13} {ot:>7} | {tp:>15} {tt:>7} | {ours.get('plan', ours.get('error', ''))}",
              flush=True)

    peaks = {t: r["seektune"].get("peak_gb") for t, r in results.items()}
    known = sorted((t, p) for t, p in peaks.items() if p)
    # at most linear: each peak is no more than the smallest point's peak scaled by the token ratio
    linear = all(p <= known[0][1] * t / known[0][0] * 1.05 for t, p in known) if known else False
    at_1024 = results.get(1024)
    ratio = None
    if at_1024 and at_1024["seektune"].get("peak_gb"):
        trl_peak = at_1024["trl"].get("peak_gb") if not at_1024["trl"].get("error") else args.trl_limit_gb
        ratio = round(trl_peak / at_1024["seektune"]["peak_gb"], 2)
    print(json.dumps({"ratio": ratio, "ratio_is_lower_bound": bool(at_1024 and at_1024["trl"].get("error")),
                      "seektune_peak_gb": {t: round(p, 2) for t, p in known},
                      "trl_peak_gb": {t: (round(r["trl"]["peak_gb"], 2) if not r["trl"].get("error") else None)
                                      for t, r in results.items()},
                      "seektune_tokens_per_s": {t: round(r["seektune"]["tokens"] / r["seektune"]["seconds"], 1)
                                                for t, r in results.items() if r["seektune"].get("seconds")},
                      "trl_tokens_per_s": {t: round(r["trl"]["tokens"] / r["trl"]["seconds"], 1)
                                           for t, r in results.items() if r["trl"].get("seconds")},
                      "seektune_at_most_linear": linear, "threads": args.threads}))


if __name__ == "__main__":
    main()
