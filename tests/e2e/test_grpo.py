"""objective: grpo on a tiny model: a reward it can learn rises, and only the adapter moves.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_grpo.py
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seektune.recipe import load_recipe
from seektune.runs import load_tuned
from seektune.train.run import run as train
from tests.conftest import _tokenizer_into, _write_model, write_recipe


@pytest.fixture(scope="module")
def peaked_llama(tmp_path_factory, tiny_tokenizer_dir):
    """tiny_llama with weights 25x larger at initialisation: its answers are not uniform noise (whose entropy no
    adapter on the layers can move, since the LM head maps every hidden state to near-equal logits)."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("peaked-llama")
    _write_model(path, LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=False, initializer_range=0.5))
    _tokenizer_into(path, tiny_tokenizer_dir)
    return path


def low_ids(prompts, completions, completion_ids, **columns):
    """The learnable reward of this test: the share of the answer's tokens from the lower half of the vocabulary
    (about half of a random model's, and any adapter can shift it)."""
    return [sum(token < 200 for token in ids) / max(len(ids), 1) for ids in completion_ids]


def _mean(values):
    return sum(values) / len(values)


def test_grpo_raises_a_learnable_reward_and_trains_only_the_adapter(tmp_path, peaked_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", peaked_llama, faq_file, tmp_path / "run",
                               train__max_steps=60, train__lr=2e-2, train__batch_size=16, train__report_to=[],
                               train__schedule="constant", method__target_modules="all-linear",
                               train__logging_steps=1)
    recipe = load_recipe(recipe_file, [
        "objective=grpo", "grpo.num_generations=8", "grpo.max_completion_length=12", "grpo.temperature=1.0",
        "grpo.beta=0.0", "grpo.rewards=[{name: python, function: 'tests.e2e.test_grpo:low_ids'}, facts]"])
    base = {k: v.clone() for k, v in load_file(peaked_llama / "model.safetensors").items()}
    run_dir = train(recipe)

    history = json.loads((run_dir / "train.json").read_text())
    grpo = history["grpo"]
    assert grpo["training_prompts"] == 8 and grpo["rewards"][0]["name"] == "python"
    logged = [h["rewards/low_ids/mean"] for h in history["log_history"] if "rewards/low_ids/mean" in h]
    assert len(logged) == 60
    assert _mean(logged[-10:]) > _mean(logged[:10]) + 0.2, logged  # measured: 0.54 -> 0.91
    assert any("rewards/facts/mean" in h for h in history["log_history"])  # each reward is logged on its own

    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any(("lora_B" in k) and v.abs().sum() > 0 for k, v in adapter.items())  # the adapter learned
    assert not any(".ref." in k for k in adapter)  # no reference adapter saved with it
    _, _, tuned = load_tuned(run_dir)  # the base weights under the adapter are the starting ones
    weights = {name.replace("base_model.model.", "").replace(".base_layer", ""): value
               for name, value in tuned.named_parameters() if "lora_" not in name}
    assert weights.keys() == base.keys() and all(torch.equal(base[k], weights[k]) for k in base)
