"""The streaming merge gives the same model as the adapter on top of the base."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from seektune.export.merge import MergeUnsupported, export_merged
from seektune.recipe import load_recipe
from seektune.runs import load_tuned
from seektune.train import sft
from tests.conftest import write_recipe

PROMPTS = ["How long do I have to return something?", "退货期限是多久？", "What does shipping cost?"]


def _train(tmp_path, model_dir, faq_file, **method):
    extra = {f"method__{k}": v for k, v in method.items()}
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, faq_file, tmp_path / "run",
                               train__max_steps=3, train__lr=5e-2, **extra)
    return sft.run(load_recipe(recipe_file))


def _logits(model, tokenizer):
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch).logits
    return out[batch["attention_mask"].bool()]


@pytest.mark.parametrize("method", [
    {"name": "lora", "target_modules": "all-linear"},
    {"name": "lora", "rslora": True, "r": 4, "alpha": 8},
    {"name": "dora"},
])
def test_merged_logits_equal_the_adapter_models(tmp_path, tiny_llama, faq_file, method):
    run_dir = _train(tmp_path, tiny_llama, faq_file, **method)
    _, loaded, peft_model = load_tuned(run_dir)
    expected = _logits(peft_model, loaded.tokenizer)
    with peft_model.disable_adapter():
        base = _logits(peft_model, loaded.tokenizer)
    assert (expected - base).abs().max() > 1e-3  # the adapter really changes the outputs

    out = tmp_path / "merged"
    figures = export_merged(run_dir, out)
    assert figures["merged_tensors"] > 0
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert torch.allclose(_logits(merged, loaded.tokenizer), expected, atol=1e-4)
    assert (out / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_merged_to_bfloat16_and_full_runs(tmp_path, tiny_llama, faq_file):
    run_dir = _train(tmp_path, tiny_llama, faq_file, name="full")
    out = tmp_path / "merged"
    export_merged(run_dir, out, dtype="bfloat16")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    _, loaded, full = load_tuned(run_dir)
    diff = (_logits(merged.float(), loaded.tokenizer) - _logits(full, loaded.tokenizer)).abs().max()
    assert diff < 0.05  # bf16 rounding of the weights only


def test_an_unmergeable_adapter_is_refused(tmp_path, tiny_llama, faq_file):
    run_dir = _train(tmp_path, tiny_llama, faq_file, name="prefix")
    with pytest.raises(MergeUnsupported, match="PREFIX_TUNING adapter has no merged form"):
        export_merged(run_dir, tmp_path / "merged")
