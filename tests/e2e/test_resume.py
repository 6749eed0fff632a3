"""Issue #4: kill -9 at any step, resume, and end bit-identical; a NaN stops before the bad update."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from seektune.train.checkpoint import MARKER, complete_checkpoints, is_complete, newest_complete
from tests.conftest import write_recipe

pytestmark = pytest.mark.slow
STEPS = 8  # 8 train rows, batch 2: 4 steps an epoch, so this crosses into epoch 2


def _train(recipe, fault=None, *overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("SEEKTUNE_FAULT", None)
    if fault:
        env["SEEKTUNE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "seektune", "train", str(recipe), *overrides],
                          env=env, capture_output=True, text=True, timeout=300)


def _recipe(tmp_path, name, tiny_llama, faq_file):
    return write_recipe(tmp_path / f"{name}.yaml", tiny_llama, faq_file, tmp_path / name,
                        train__max_steps=STEPS, train__batch_size=2, train__save_steps=1, train__lr=1e-2,
                        train__save_total_limit=3)


def _adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama):
    from tests.conftest import FAQ_ROWS
    import json

    tmp = tmp_path_factory.mktemp("reference")
    faq = tmp / "faq.jsonl"
    faq.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    result = _train(_recipe(tmp, "ref", tiny_llama, faq))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "ref", faq


@pytest.mark.parametrize("fault", ["kill@3", "kill@6", "kill-in-save@5"])
def test_kill_and_resume_is_bit_identical(tmp_path, tiny_llama, reference, fault):
    ref_dir, faq = reference
    recipe = _recipe(tmp_path, "run", tiny_llama, faq)
    killed = _train(recipe, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    newest = newest_complete(checkpoints)
    step = int(fault.split("@")[1])
    if fault.startswith("kill-in-save"):
        assert newest.name == f"checkpoint-{step - 1}"  # the half-written checkpoint is never used
        assert not is_complete(checkpoints / f"checkpoint-{step}")  # written, never sealed
    else:
        assert newest.name == f"checkpoint-{step}"
    resumed = _train(recipe, None, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {newest}" in resumed.stdout
    ours, theirs = _adapter(tmp_path / "run"), _adapter(ref_dir)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_retention_keeps_the_newest_complete_checkpoints(reference):
    ref_dir, _ = reference
    kept = complete_checkpoints(ref_dir / "checkpoints")
    assert [p.name for p in kept] == [f"checkpoint-{s}" for s in (STEPS - 2, STEPS - 1, STEPS)]
    assert all(is_complete(p) for p in kept)


def test_a_tampered_checkpoint_is_not_resumed_from(reference, tmp_path):
    import shutil

    ref_dir, _ = reference
    copy = tmp_path / "checkpoints"
    shutil.copytree(ref_dir / "checkpoints", copy)
    newest = complete_checkpoints(copy)[-1]
    with (newest / "adapter_model.safetensors").open("ab") as handle:
        handle.write(b"corrupt")
    assert newest_complete(copy).name == f"checkpoint-{STEPS - 1}"
    (copy / f"checkpoint-{STEPS - 1}" / MARKER).unlink()
    assert newest_complete(copy).name == f"checkpoint-{STEPS - 2}"


def test_nan_at_step_k_stops_with_step_k_minus_1_weights(tmp_path, tiny_llama, reference):
    ref_dir, faq = reference
    recipe = _recipe(tmp_path, "nan", tiny_llama, faq)
    result = _train(recipe, "nan@4")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "non-finite loss at step 4" in result.stderr
    last_good = tmp_path / "nan" / "last-good"
    assert (last_good / "STEP").read_text().strip() == "3"
    ours = load_file(last_good / "adapter_model.safetensors")
    theirs = load_file(ref_dir / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors") \
        if (ref_dir / "checkpoints" / "checkpoint-3").exists() else None
    on_disk = load_file(tmp_path / "nan" / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors")
    for key in ours:
        assert torch.equal(ours[key], on_disk[key]), key
        if theirs is not None:
            assert torch.equal(ours[key], theirs[key])
    assert not (tmp_path / "nan" / "checkpoints" / "checkpoint-4").exists()
