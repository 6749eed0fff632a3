"""Batched evaluation generation vs answering one question at a time, on the embedded model.

    .venv/bin/python benchmarks/eval_generation.py            # 200 customer-service questions
    .venv/bin/python benchmarks/eval_generation.py --rows 40  # a quick look

Both sides answer the same questions greedily with the same model and max_new_tokens
through seektune.evaluate.generate.generate_answers: (a) batch_size=1, the way a loop
over `model.generate` per question works, and (b) the eval stage's default batch of 16
(prompts sorted by length, left padding). Prints both wall times, rows/s, the share of
identical answers, and as its last line a JSON object whose `ratio` is batched / one-by-one
throughput (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from seektune.evaluate.generate import generate_answers
from seektune.models.load import load_model

DATA = Path(__file__).resolve().parents[1] / "examples" / "customer-service" / "data"
SYSTEM = "You are the customer support assistant of Larkspur Goods."


def questions(rows: int) -> list[list[dict[str, str]]]:
    found = []
    for name in ("faq_en.jsonl", "faq_zh.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            found.append(json.loads(line)["question"])
    # interleave languages so a short run still mixes both
    english, chinese = found[:365], found[365:]
    mixed = [q for pair in zip(english[::2], chinese + english[1::2]) for q in pair] + english
    seen, ordered = set(), []
    for q in mixed:
        if q not in seen:
            seen.add(q)
            ordered.append(q)
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in ordered[:rows]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loaded = load_model("smollm2-135m-instruct")
    conversations = questions(args.rows)
    options = {"max_new_tokens": args.max_new_tokens}

    start = time.perf_counter()
    single = generate_answers(loaded.model, loaded.tokenizer, conversations, batch_size=1, desc="one by one", **options)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate_answers(loaded.model, loaded.tokenizer, conversations, batch_size=args.batch_size,
                               desc=f"batches of {args.batch_size}", **options)
    batched_s = time.perf_counter() - start

    same = sum(a["answer"] == b["answer"] for a, b in zip(single, batched)) / len(conversations)
    figures = {
        "rows": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "one_by_one_s": round(single_s, 1),
        "batched_s": round(batched_s, 1),
        "one_by_one_rows_per_s": round(len(conversations) / single_s, 3),
        "batched_rows_per_s": round(len(conversations) / batched_s, 3),
        "identical_answers": round(same, 3),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "ratio": round(single_s / batched_s, 2),
    }
    print(f"one by one: {single_s:.1f} s ({figures['one_by_one_rows_per_s']} rows/s); "
          f"batched ({args.batch_size}): {batched_s:.1f} s ({figures['batched_rows_per_s']} rows/s); "
          f"identical answers: {same:.1%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
