"""Route Larkspur Goods support tickets to 5 queues with the FineTuner API, end to end.

    .venv/bin/python examples/ticket-routing/train.py                 # ~45 s on an idle 2-core CPU
    .venv/bin/python examples/ticket-routing/train.py --epochs 2 --out runs/quick

Fine-tunes the embedded MiniLM-L6 encoder (no network needed) on data/train.jsonl,
logs val loss and macro-F1 each epoch, then scores data/test.jsonl (tickets about
problems never seen in training) and saves the classifier to ``--out``.
Settings: MiniLM is pretrained for sentence similarity, so a few epochs at 1e-4 move
it to this task without forgetting what it knows about words like "refund" or "login".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seektune.train.classify import FineTuner

QUEUES = ["billing", "shipping", "returns", "technical", "product"]
DATA = Path(__file__).resolve().parent / "data"


def read_split(name: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def print_report(metrics: dict, seconds: float) -> None:
    names = metrics["label_names"]
    print(f"\ntest tickets: {metrics['n']}   wall time: {seconds:.0f} s")
    print(f"accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   "
          f"AUC (one-vs-rest) {metrics['auc_roc']:.3f}")
    width = max(len(n) for n in names) + 2
    print("\nconfusion matrix (rows: true queue, columns: predicted)")
    print(" " * width + "".join(f"{n[:9]:>10}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"]):
        print(f"{name:<{width}}" + "".join(f"{v:>10}" for v in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6-v2", help="alias, local HF directory or Hub id")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="runs/ticket-routing", help="where the trained classifier is saved")
    args = parser.parse_args()

    start = time.perf_counter()
    train_texts, train_labels = read_split("train")
    val_texts, val_labels = read_split("val")
    test_texts, test_labels = read_split("test")
    tuner = FineTuner(args.model, label_names=QUEUES).set_params(
        learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=128, seed=args.seed,
        weight_decay=0.01, warmup_ratio=0.1,
    )
    tuner.fit(train_texts, train_labels, val_texts, val_labels)
    metrics = tuner.evaluate(test_texts, test_labels)
    seconds = time.perf_counter() - start
    tuner.save(args.out)
    print_report(metrics, seconds)
    example = "hi, delivery was quick but one leg of the bistro table wobbles and the bolt wont tighten"
    print(f"\n{example!r} -> {tuner.predict([example])[0]}")
    Path(args.out, "test_metrics.json").write_text(json.dumps({**metrics, "wall_time_s": round(seconds, 1)}, indent=2),
                                                    encoding="utf-8")
    print(f"saved to {args.out}/ (FineTuner.load({args.out!r}) predicts again)")


if __name__ == "__main__":
    main()
