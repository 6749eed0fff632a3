"""Issue #4: two-process DDP on CPU (gloo) gives the loss curve of one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import write_recipe

pytestmark = pytest.mark.slow


def _losses(run_dir):
    history = json.loads((run_dir / "train.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_two_process_ddp_matches_one_process(tmp_path, tiny_llama, faq_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = dict(train__max_steps=4, train__sampling="sequential", train__logging_steps=1, train__lr=1e-2)
    one = write_recipe(tmp_path / "one.yaml", tiny_llama, faq_file, tmp_path / "one", train__batch_size=4, **common)
    two = write_recipe(tmp_path / "two.yaml", tiny_llama, faq_file, tmp_path / "two", train__batch_size=2, **common)
    for recipe, extra in ((one, []), (two, ["--nproc", "2"])):
        result = subprocess.run([sys.executable, "-m", "seektune", "train", str(recipe), *extra],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    single, ddp = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(single) == len(ddp) == 4
    assert all(abs(a - b) <= 1e-5 for a, b in zip(single, ddp)), (single, ddp)
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()


def test_shipped_accelerate_configs_parse():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    kinds = {}
    for path in folder.glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        kinds[path.stem] = (config["distributed_type"], config.get("deepspeed_config", {}).get("zero_stage"))
    assert kinds == {"fsdp": ("FSDP", None), "deepspeed_zero2": ("DEEPSPEED", 2), "deepspeed_zero3": ("DEEPSPEED", 3)}
