import pytest

from seektune.models.registry import find_family
from seektune.recipe import MethodSpec


@pytest.mark.parametrize(("model_id", "model_type", "family", "template", "eos"), [
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen2", "deepseek-r1-distill", "deepseek-r1", "<｜end▁of▁sentence｜>"),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama", "deepseek-r1-distill", "deepseek-r1", "<｜end▁of▁sentence｜>"),
    ("deepseek-ai/deepseek-llm-7b-chat", "llama", "deepseek-llm", "deepseek-llm", "<｜end▁of▁sentence｜>"),
    ("deepseek-ai/deepseek-coder-6.7b-instruct", "llama", "deepseek-coder", "deepseek-coder", "<|EOT|>"),
    ("deepseek-ai/DeepSeek-V2-Lite-Chat", "deepseek_v2", "deepseek-v3", "deepseek-v3", "<｜end▁of▁sentence｜>"),
    ("/models/my-local-moe", "deepseek_v3", "deepseek-v3", "deepseek-v3", "<｜end▁of▁sentence｜>"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "llama", "smollm2", "chatml", "<|im_end|>"),
])
def test_families(model_id, model_type, family, template, eos):
    found = find_family(model_id, model_type)
    assert (found.name, found.template, found.eos_token) == (family, template, eos)


def test_r1_family_reasons():
    assert find_family("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").reasoning


def test_tokenizer_without_template_gets_the_registry_one(tiny_llama):
    from seektune.models.load import load_model

    loaded = load_model(str(tiny_llama))
    assert loaded.tokenizer.chat_template and "<|im_start|>" in loaded.tokenizer.chat_template
    assert loaded.model.generation_config.eos_token_id == loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_explicit_recipe_template_wins(tiny_llama):
    from seektune.models.load import load_model

    loaded = load_model(str(tiny_llama), chat_template="deepseek-llm")
    assert "Assistant:" in loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    with pytest.raises(ValueError, match="unknown chat template"):
        load_model(str(tiny_llama), chat_template="no-such-template")


def test_deepseek_v3_default_targets_hit_mla_modules(tiny_deepseek_v3):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from seektune.models.load import family_of
    from seektune.train.methods import peft_config

    family = family_of("my-moe", str(tiny_deepseek_v3))
    assert family.name == "deepseek-v3"
    model = AutoModelForCausalLM.from_pretrained(tiny_deepseek_v3)
    peft_model = get_peft_model(model, peft_config(MethodSpec(r=4, alpha=8), family))
    adapted = {name.split(".")[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    # every MLA projection (q_proj exists only without q-LoRA, as on V2-Lite), and no MLP or expert
    assert adapted == {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}


def test_bad_model_paths_are_named(tmp_path):
    from seektune.models.load import ModelNotFound, resolve_model_path

    with pytest.raises(ModelNotFound, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelNotFound, match="model path not found"):
        resolve_model_path("./nowhere/model")
