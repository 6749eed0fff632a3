"""Issue #4: each method trains the tiny model, changes exactly the parameters it should, and
trains exactly as many parameters as its settings imply.

The expected trainable counts are computed from the model's config and the method's settings
alone (never from the model the trainer built), then compared with what `seektune train`
printed and what it wrote to train.json.
"""

import json
import re

import pytest

from tests.conftest import cli, mean_loss_on, write_recipe

R = 4  # LoRA / DoRA rank used below
VIRTUAL_TOKENS = 4  # prefix / prompt tuning
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # the registry's default for Llama
IA3_TARGETS = ("k_proj", "v_proj")  # plus down_proj, a feed-forward module: scaled on its input side


def _train(tmp_path, model_dir, faq_file, steps=3, lr=2e-2, exit_code=0, overrides=(), **method):
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, faq_file, tmp_path / "run",
                               train__max_steps=steps, train__lr=lr, **{f"method__{k}": v for k, v in method.items()})
    result = cli("train", recipe_file, *overrides, exit_code=exit_code)
    return tmp_path / "run", result


def llama_linears(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear in one Llama decoder layer, from the config alone."""
    head_dim = config.hidden_size // config.num_attention_heads
    hidden, kv, ffn = config.hidden_size, config.num_key_value_heads * head_dim, config.intermediate_size
    return {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden),
            "gate_proj": (hidden, ffn), "up_proj": (hidden, ffn), "down_proj": (ffn, hidden)}


def llama_counts(config) -> dict[str, int]:
    """Parameter counts of the untied Llama: one decoder layer (Linears + two RMSNorms), lm_head, the whole."""
    assert not config.tie_word_embeddings and not config.attention_bias and not config.mlp_bias
    layer = sum(i * o for i, o in llama_linears(config).values()) + 2 * config.hidden_size
    embedding = config.vocab_size * config.hidden_size
    total = 2 * embedding + config.num_hidden_layers * layer + config.hidden_size  # + the final norm
    return {"layer": layer, "lm_head": embedding, "total": total}


def expected_adapter_parameters(name: str, config) -> int:
    """Trainable parameters of a peft method on the tiny Llama, from the config and the method's settings."""
    shapes, layers = llama_linears(config), config.num_hidden_layers
    head_dim = config.hidden_size // config.num_attention_heads
    lora = layers * sum(R * (shapes[m][0] + shapes[m][1]) for m in LLAMA_LORA_TARGETS)  # A: r x in, B: out x r
    if name == "lora":
        return lora
    if name == "dora":  # plus one magnitude per output feature of each adapted Linear
        return lora + layers * sum(shapes[m][1] for m in LLAMA_LORA_TARGETS)
    if name == "ia3":  # one scale per output feature, per input feature for a feed-forward module
        return layers * (sum(shapes[m][1] for m in IA3_TARGETS) + shapes["down_proj"][0])
    if name == "prefix":  # a key and a value vector per virtual token and layer, in the key/value width (GQA)
        return VIRTUAL_TOKENS * layers * 2 * config.num_key_value_heads * head_dim
    if name == "prompt":  # one input embedding per virtual token
        return VIRTUAL_TOKENS * config.hidden_size
    raise ValueError(name)


def assert_trainable(result, run_dir, trainable: int, total: int) -> None:
    """The count `seektune train` printed and the one in train.json both equal the expected ones."""
    printed = re.search(r"trainable ([\d,]+) / ([\d,]+) parameters", result.output)
    assert printed, result.output
    assert (int(printed[1].replace(",", "")), int(printed[2].replace(",", ""))) == (trainable, total)
    summary = json.loads((run_dir / "train.json").read_text())
    assert (summary["trainable_parameters"], summary["total_parameters"]) == (trainable, total)


def test_expected_counts_match_the_tiny_llama_by_hand(tiny_llama):
    """The formulas above, against the numbers worked out by hand for the fixture (32 wide, 2 layers,
    4 heads / 2 key-value heads of 8, MLP 64, vocabulary 400), so a formula slip cannot hide."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama)
    assert llama_counts(config) == {"layer": 9280, "lm_head": 12800, "total": 44192}
    assert {name: expected_adapter_parameters(name, config) for name in ("lora", "dora", "ia3", "prefix", "prompt")} \
        == {"lora": 1792, "dora": 1984, "ia3": 192, "prefix": 256, "prompt": 128}


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "prefix", "prompt"])
def test_adapter_methods_train_the_expected_parameters_leave_base_untouched_and_learn(
        tmp_path, tiny_llama, faq_file, name):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from seektune.data.io import read_jsonl
    from seektune.runs import load_tuned

    # virtual tokens and IA3 vectors move a random tiny model slowly: give them more steps
    extra = {"num_virtual_tokens": VIRTUAL_TOKENS} if name in ("prefix", "prompt") else {"r": R}
    schedule = {"steps": 3, "lr": 2e-2} if name in ("lora", "dora") else {"steps": 40, "lr": 0.2}
    run_dir, result = _train(tmp_path, tiny_llama, faq_file, name=name, **schedule, **extra)
    config = AutoConfig.from_pretrained(tiny_llama)
    adapter = expected_adapter_parameters(name, config)
    assert_trainable(result, run_dir, adapter, llama_counts(config)["total"] + adapter)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and not (run_dir / "model").exists()

    recipe, loaded, model = load_tuned(run_dir)
    rows = read_jsonl(run_dir / "data" / "train.jsonl")
    tuned = mean_loss_on(model, loaded.tokenizer, rows)
    with model.disable_adapter():
        base = mean_loss_on(model, loaded.tokenizer, rows)
    margin = 0.005 if name == "prompt" else 0.01  # 4 soft-prompt vectors steer a random model only a little
    assert tuned < base - margin, (name, tuned, base)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    base_now = {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items()
                if "lora_" not in k and "ia3_" not in k}
    for key, value in original.items():  # the base weights never move, whatever the adapter
        assert torch.equal(base_now[key], value), key


def _changed(run_dir, model_dir) -> set[str]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    after = load_file(run_dir / "model" / "model.safetensors")
    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    return {k for k in before if not torch.equal(after[k], before[k])}


def test_full_trains_every_parameter_and_changes_every_layer(tmp_path, tiny_llama, faq_file):
    from transformers import AutoConfig

    run_dir, result = _train(tmp_path, tiny_llama, faq_file, name="full")
    total = llama_counts(AutoConfig.from_pretrained(tiny_llama))["total"]
    assert_trainable(result, run_dir, total, total)
    assert not (run_dir / "adapter").exists()
    changed = _changed(run_dir, tiny_llama)
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        assert key in changed, key


def test_freeze_trains_only_the_last_layer(tmp_path, tiny_llama, faq_file):
    from transformers import AutoConfig

    run_dir, result = _train(tmp_path, tiny_llama, faq_file, name="freeze", train_last_layers=1)
    counts = llama_counts(AutoConfig.from_pretrained(tiny_llama))
    assert_trainable(result, run_dir, counts["layer"], counts["total"])
    changed = _changed(run_dir, tiny_llama)
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert any("self_attn" in k for k in changed) and any("mlp" in k for k in changed)


def test_freeze_by_module_pattern(tmp_path, tiny_llama, faq_file):
    from transformers import AutoConfig

    run_dir, result = _train(tmp_path, tiny_llama, faq_file, name="freeze", train_modules=[r"lm_head"])
    counts = llama_counts(AutoConfig.from_pretrained(tiny_llama))
    assert_trainable(result, run_dir, counts["lm_head"], counts["total"])
    assert _changed(run_dir, tiny_llama) == {"lm_head.weight"}


def test_qlora_on_cpu_says_why_and_what_to_use(tmp_path, tiny_llama, faq_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU message")
    _, result = _train(tmp_path, tiny_llama, faq_file, name="qlora", exit_code=2)
    assert re.search(r"CUDA GPU.*method.name=lora", result.output), result.output


def test_early_stopping_stops_and_keeps_the_best(tmp_path, tiny_llama, faq_file):
    # a learning rate this high makes val loss worse after the first evaluations
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=40, train__lr=0.5, train__eval_steps=2,
                               train__early_stopping={"patience": 2})
    cli("train", recipe_file)
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    evals = [h["eval_loss"] for h in summary["log_history"] if "eval_loss" in h]
    assert summary["steps"] < 40, "stopped early"
    best = min(evals)
    assert evals[-1] > best and summary["best_checkpoint"].endswith(f"checkpoint-{2 * (evals.index(best) + 1)}")


def test_missing_tracker_is_named(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run")
    result = cli("train", recipe_file, "train.report_to=[wandb]", exit_code=2)
    assert "wandb, which is not installed" in result.output


def test_early_stopping_on_a_generation_metric(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=12, train__lr=1e-2, train__eval_steps=2,
                               train__early_stopping={"patience": 2, "metric": "rougeL", "generation_rows": 4,
                                                      "max_new_tokens": 6})
    cli("train", recipe_file)
    history = json.loads((tmp_path / "run" / "train.json").read_text())["log_history"]
    scores = [h["eval_rougeL"] for h in history if "eval_rougeL" in h]
    assert scores and all(0 <= s <= 1 for s in scores)
