"""Issue #4: each method trains the tiny model and changes exactly the parameters it should."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from seektune.data.io import read_jsonl
from seektune.evaluate import stage as eval_stage
from seektune.recipe import load_recipe
from seektune.train import sft
from seektune.train.methods import MethodUnavailable
from tests.conftest import write_recipe
from tests.e2e.test_train_eval import _loss_on


def _train(tmp_path, model_dir, faq_file, steps=3, lr=2e-2, **method):
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, faq_file, tmp_path / "run",
                               train__max_steps=steps, train__lr=lr, **{f"method__{k}": v for k, v in method.items()})
    return sft.run(load_recipe(recipe_file))


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "prefix", "prompt"])
def test_adapter_methods_leave_base_untouched_and_learn(tmp_path, tiny_llama, faq_file, name):
    # virtual tokens and IA3 vectors move a random tiny model slowly: give them more steps
    extra = {"num_virtual_tokens": 4} if name in ("prefix", "prompt") else {}
    schedule = {"steps": 3, "lr": 2e-2} if name in ("lora", "dora") else {"steps": 40, "lr": 0.2}
    run_dir = _train(tmp_path, tiny_llama, faq_file, name=name, **schedule, **extra)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and not (run_dir / "model").exists()
    recipe, loaded, model = eval_stage.load_tuned(run_dir)
    rows = read_jsonl(run_dir / "data" / "train.jsonl")
    tuned = _loss_on(model, loaded.tokenizer, rows)
    with model.disable_adapter():
        base = _loss_on(model, loaded.tokenizer, rows)
    margin = 0.005 if name == "prompt" else 0.01  # 4 soft-prompt vectors steer a random model only a little
    assert tuned < base - margin, (name, tuned, base)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    base_now = {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items()
                if "lora_" not in k and "ia3_" not in k}
    for key, value in original.items():  # the base weights never move, whatever the adapter
        assert torch.equal(base_now[key], value), key


def test_full_changes_every_layer(tmp_path, tiny_llama, faq_file):
    run_dir = _train(tmp_path, tiny_llama, faq_file, name="full")
    assert not (run_dir / "adapter").exists()
    after = load_file(run_dir / "model" / "model.safetensors")
    before = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        assert not torch.equal(after[key], before[key]), key


def test_freeze_trains_only_the_last_layer(tmp_path, tiny_llama, faq_file):
    run_dir = _train(tmp_path, tiny_llama, faq_file, name="freeze", train_last_layers=1)
    after = load_file(run_dir / "model" / "model.safetensors")
    before = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert any("self_attn" in k for k in changed) and any("mlp" in k for k in changed)


def test_freeze_by_module_pattern(tmp_path, tiny_llama, faq_file):
    run_dir = _train(tmp_path, tiny_llama, faq_file, name="freeze", train_modules=[r"lm_head"])
    after = load_file(run_dir / "model" / "model.safetensors")
    before = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    assert {k for k in before if not torch.equal(after[k], before[k])} == {"lm_head.weight"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_qlora_on_cpu_says_why_and_what_to_use(tmp_path, tiny_llama, faq_file):
    with pytest.raises(MethodUnavailable, match="CUDA GPU.*method.name=lora"):
        _train(tmp_path, tiny_llama, faq_file, name="qlora")


def test_trainable_parameters_are_reported(tmp_path, tiny_llama, faq_file, capsys):
    _train(tmp_path, tiny_llama, faq_file, name="freeze", train_last_layers=1)
    assert "trainable" in capsys.readouterr().out


def test_early_stopping_stops_and_keeps_the_best(tmp_path, tiny_llama, faq_file):
    import json

    # a learning rate this high makes val loss worse after the first evaluations
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=40, train__lr=0.5, train__eval_steps=2,
                               train__early_stopping={"patience": 2})
    run_dir = sft.run(load_recipe(recipe_file))
    summary = json.loads((run_dir / "train.json").read_text())
    evals = [h["eval_loss"] for h in summary["log_history"] if "eval_loss" in h]
    assert summary["steps"] < 40, "stopped early"
    best = min(evals)
    assert evals[-1] > best and summary["best_checkpoint"].endswith(f"checkpoint-{2 * (evals.index(best) + 1)}")


def test_missing_tracker_is_named(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run")
    with pytest.raises(ValueError, match="wandb, which is not installed"):
        sft.run(load_recipe(recipe_file, ["train.report_to=[wandb]"]))


def test_early_stopping_on_a_generation_metric(tmp_path, tiny_llama, faq_file):
    import json

    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=12, train__lr=1e-2, train__eval_steps=2,
                               train__early_stopping={"patience": 2, "metric": "rougeL", "generation_rows": 4,
                                                      "max_new_tokens": 6})
    run_dir = sft.run(load_recipe(recipe_file))
    history = json.loads((run_dir / "train.json").read_text())["log_history"]
    scores = [h["eval_rougeL"] for h in history if "eval_rougeL" in h]
    assert scores and all(0 <= s <= 1 for s in scores)

