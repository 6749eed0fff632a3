"""The job's estimate: printed within the first steps, and training goes on exactly as without it.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_job_estimate.py
"""

from __future__ import annotations

import re

from safetensors.torch import load_file

from tests.conftest import cli, write_recipe


def test_the_estimate_is_printed_and_leaves_training_unchanged(tmp_path, tiny_llama, faq_file):
    """With LoRA dropout the RNG matters at every step: the timed generation batch must not move it."""
    adapters = {}
    for estimate in (True, False):
        recipe = write_recipe(tmp_path / f"r-{estimate}.yaml", tiny_llama, faq_file, tmp_path / f"run-{estimate}",
                              train__max_steps=8, train__estimate=estimate,
                              method__dropout=0.3)
        cli("prepare", recipe)
        output = cli("train", recipe).output
        line = re.search(r"seektune: estimate on this machine \((.+?)\): (.+)", output)
        if estimate:
            assert line, output
            assert re.search(r"s/step, so training takes about [\d.]+ min more \(4 steps\); evaluating \d+ rows "
                             r"with 2 models about [\d.]+ min; done about \d\d:\d\d", line.group(2)), line.group(0)
        else:
            assert line is None
        adapters[estimate] = load_file(tmp_path / f"run-{estimate}" / "adapter" / "adapter_model.safetensors")
    assert adapters[True].keys() == adapters[False].keys()
    assert all((adapters[True][k] == adapters[False][k]).all() for k in adapters[True]), "the estimate moved training"
