"""Write pairs_en.jsonl: preference pairs for the DPO stage of examples/customer-service/stages.yaml.

    python examples/customer-service/data/make_pairs.py

Each English FAQ row becomes one pair: the chosen answer is the row's own (correct) answer;
the rejected answer is the canonical answer of another fact in the same category: fluent,
on topic, and wrong for this question, the mistake a half-trained store assistant makes.
Deterministic: the same files give the same pairs.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = [json.loads(line) for line in (HERE / "faq_en.jsonl").read_text(encoding="utf-8").splitlines() if line]
    answers: dict[str, dict[str, str]] = defaultdict(dict)  # category -> fact_id -> canonical answer
    for row in rows:
        answers[row["category"]].setdefault(row["fact_id"], row["answer"])
    rng = random.Random(7)
    pairs = []
    for row in rows:
        others = sorted(a for fact, a in answers[row["category"]].items() if fact != row["fact_id"])
        pairs.append({"id": row["id"], "fact_id": row["fact_id"], "category": row["category"],
                      "facts": row["facts"], "prompt": row["question"], "chosen": row["answer"],
                      "rejected": rng.choice(others)})
    out = HERE / "pairs_en.jsonl"
    out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    print(f"wrote {len(pairs)} pairs to {out}")


if __name__ == "__main__":
    main()
