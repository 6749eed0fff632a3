"""The GPU benchmark runs end to end on the CPU before any GPU time is spent on it.

    .venv/bin/python -m pytest -q tests/e2e/test_gpu_benchmark_dry_run.py

``benchmarks/gpu.py --dry-run`` runs the same code as on the lent H200 (seektune's training path and plain
trl on the four model shapes, each shape in its own process) with tiny versions of the shapes, fp32, for
3 steps: about a minute on one core. Timings are not checked (they belong to the benchmark); what is checked
is that every case either ran with sane figures or says why it was skipped, and that seektune and trl,
given the same rows, order and random weights, report the same losses.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"r1-distill-qwen-7b", "r1-distill-qwen-1.5b", "deepseek-v2-lite", "llama-3-8b"}
SIDES = ("seektune", "trl", "trl_padding_free")


@pytest.mark.slow
def test_gpu_benchmark_dry_run(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--workdir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = (tmp_path / "gpu.log").read_text(encoding="utf-8") if (tmp_path / "gpu.log").is_file() else ""
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n--- worker log ---\n{log[-6000:]}"
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    summary, cases = lines[-1], lines[:-1]

    assert summary["dry_run"] is True
    assert summary["ratio"] > 0 and math.isfinite(summary["ratio"])
    assert summary["ratio_shape"] == "r1-distill-qwen-7b"
    assert summary["cases"]["errors"] == 0
    # same rendered rows, same order, same random weights and LoRA init, fp32: the same computation
    assert summary["loss_agreement"] < 1e-3

    assert {line["shape"] for line in cases} == SHAPES
    by_name = {line["case"]: line for line in cases}
    for shape in SHAPES:
        for side in SIDES:
            line = by_name[f"{shape}/{side}/lora"]
            assert line.get("skipped") or line["tokens_per_s"] > 0, line
    for line in cases:
        assert "error" not in line, line
        if "skipped" in line:
            assert isinstance(line["skipped"], str) and line["skipped"], line
            continue
        for key in ("tokens_per_s", "mfu", "peak_mem_gib", "loss_first", "loss_last"):
            assert math.isfinite(line[key]) and line[key] > 0, (key, line)
        assert line["steps"] == 3
        if line["side"] == "trl":  # rows' tokens / computed: trl pads; seektune neither pads nor, with a
            assert line["padding_efficiency"] < 1.0  # shared prefix, computes every row's prefix (above 1)
        else:
            assert line["padding_efficiency"] >= 1.0
    # on a CPU the GPU-only cases say so rather than pretend
    for name in ("r1-distill-qwen-7b/seektune/qlora", "r1-distill-qwen-7b/trl_padding_free/lora/liger"):
        assert "CPU" in by_name[name]["skipped"]
    assert by_name["r1-distill-qwen-1.5b/seektune/full"]["tokens_per_s"] > 0
