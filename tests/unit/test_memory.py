"""The pre-flight memory plan: what fits is chosen in order, rows per step never change, nothing-fits is one line.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_memory.py

A real (tiny) Llama gives the parameters; the decoder's shape in the estimate is that of
SmolLM2-135M, so the figures are the ones a user of the embedded model sees.
"""

from __future__ import annotations

import pytest
import torch

from seektune.recipe import TrainSpec
from seektune.train import memory
from seektune.train.memory import GB, MemoryTooSmall, activation_bytes_per_token, plan_for


class Model(torch.nn.Module):
    """Parameters of a 10M model (1M trainable), the config of SmolLM2-135M."""

    def __init__(self):
        from transformers import LlamaConfig

        super().__init__()
        self.config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                  num_attention_heads=9, num_key_value_heads=3, vocab_size=49152)
        self.frozen = torch.nn.Parameter(torch.zeros(9_000_000), requires_grad=False)
        self.adapter = torch.nn.Parameter(torch.zeros(1_000_000))


LENGTHS = [1024] * 16 + [300] * 16  # the longest batch of 8: 8 x 1,024 tokens


def _budget_for(plan_bytes: float) -> int:
    """The available memory under which ``plan_bytes`` is just within the planning budget."""
    return int((plan_bytes + memory.MIN_BUDGET) / memory.HEADROOM) + 1


def test_a_batch_that_fits_is_left_as_the_recipe_says():
    plan = plan_for(Model(), LENGTHS, TrainSpec(batch_size=8), padding_free=True, available=64 * GB)
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing, plan.changed) == (8, 1, False, False)
    assert plan.step_tokens == 8 * 1024


def test_checkpointing_comes_first_then_micro_batches_with_the_same_rows_per_step():
    model, spec = Model(), TrainSpec(batch_size=8)
    fixed = memory.fixed_bytes(model)
    plain = fixed + 8 * 1024 * activation_bytes_per_token(model.config, False)
    checkpointed = fixed + 8 * 1024 * activation_bytes_per_token(model.config, True)
    quarter = fixed + 2 * 1024 * activation_bytes_per_token(model.config, True)
    assert quarter < checkpointed < plain

    plan = plan_for(model, LENGTHS, spec, True, available=_budget_for(checkpointed))
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing, plan.changed) == (8, 1, True, True)
    plan = plan_for(model, LENGTHS, spec, True, available=_budget_for(quarter))
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing) == (2, 4, True)
    assert plan.micro_batch * plan.grad_accum == plan.rows_per_step == 8
    assert "4 passes of 2 rows per step" in plan.describe()


def test_checkpointing_forced_off_still_splits_the_batch():
    model = Model()
    half = memory.fixed_bytes(model) + 4 * 1024 * activation_bytes_per_token(model.config, False)
    plan = plan_for(model, LENGTHS, TrainSpec(batch_size=8, gradient_checkpointing=False), True,
                    available=_budget_for(half))
    assert (plan.micro_batch, plan.grad_accum, plan.checkpointing) == (4, 2, False)


def test_padded_batches_pay_the_longest_row_for_every_row():
    lengths = [1024] + [100] * 7
    assert plan_for(Model(), lengths, TrainSpec(batch_size=8), False, available=64 * GB).step_tokens == 8 * 1024
    assert plan_for(Model(), lengths, TrainSpec(batch_size=8), True, available=64 * GB).step_tokens == 1024 + 700


def test_the_estimate_grows_linearly_with_the_tokens_of_a_step():
    model = Model()
    steps = [plan_for(model, [n] * 8, TrainSpec(batch_size=8, gradient_checkpointing=True), True,
                      available=1024 * GB) for n in (256, 512, 1024, 2048)]
    activations = [plan.activation_bytes for plan in steps]
    assert activations[1] == 2 * activations[0] and activations[3] == 8 * activations[0]


def test_nothing_fits_is_one_line_with_the_figures_and_what_to_change():
    with pytest.raises(MemoryTooSmall) as raised:
        plan_for(Model(), LENGTHS, TrainSpec(batch_size=8), True, available=GB)
    message = str(raised.value)
    assert "one training row of 1,024 tokens needs" in message and "1.0 GB available" in message
    assert "data.max_length" in message and "\n" not in message


def test_the_memory_override_and_a_bad_one(monkeypatch):
    monkeypatch.setenv("SEEKTUNE_MEMORY_GB", "3.5")
    assert memory.available_bytes() == int(3.5 * GB)
    monkeypatch.setenv("SEEKTUNE_MEMORY_GB", "lots")
    with pytest.raises(ValueError, match="SEEKTUNE_MEMORY_GB must be a number"):
        memory.available_bytes()


def test_recipe_takes_auto_true_or_false_and_nothing_else():
    assert TrainSpec().gradient_checkpointing == "auto"
    assert TrainSpec(gradient_checkpointing=True).gradient_checkpointing is True
    with pytest.raises(ValueError):
        TrainSpec(gradient_checkpointing="sometimes")
