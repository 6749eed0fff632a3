"""Train -> eval on tiny models through the command line, as a user runs them."""

import json
import re

import pytest
from safetensors.torch import load_file

from seektune.cli import app
from seektune.data.io import read_jsonl
from tests.conftest import cli, mean_loss_on, write_recipe


def test_lora_run_changes_adapter_and_lowers_loss_on_memorised_batch(tmp_path, tiny_llama, faq_file):
    import torch

    from seektune.runs import load_tuned

    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=3, train__lr=2e-2)
    cli("train", recipe_file)
    run_dir = tmp_path / "run"
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero; training moved it
    assert (run_dir / "adapter" / "tokenizer.json").is_file()
    assert list((run_dir / "logs").glob("events.out.tfevents.*")), "TensorBoard logs are written to <run>/logs"
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["steps"] == 3 and summary["trainable_parameters"] < summary["total_parameters"]

    recipe, loaded, model = load_tuned(run_dir)
    train_rows = read_jsonl(run_dir / "data" / "train.jsonl")
    tuned_loss = mean_loss_on(model, loaded.tokenizer, train_rows)
    with model.disable_adapter():
        base_loss = mean_loss_on(model, loaded.tokenizer, train_rows)
    assert tuned_loss < base_loss - 0.05


def test_eval_writes_metrics_and_samples(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    cli("train", recipe_file)
    run_dir = tmp_path / "run"
    cli("eval", run_dir)
    on_disk = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert on_disk["base"].keys() == on_disk["tuned"].keys() - {"win_rate"}
    for system in ("base", "tuned"):
        assert {"n", "rougeL", "bleu", "fact_accuracy", "by_language"} <= on_disk[system].keys()
        assert 0 <= on_disk[system]["rougeL"] <= 1 and 0 <= on_disk[system]["fact_accuracy"] <= 1
    samples = read_jsonl(run_dir / "eval" / "samples.jsonl")
    test_rows = read_jsonl(run_dir / "data" / "test.jsonl")
    assert len(samples) == len(test_rows) == on_disk["base"]["n"] == on_disk["tuned"]["n"]
    assert {"question", "reference", "base", "tuned", "facts", "origin"} <= samples[0].keys()


def qwen2_attention(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of Qwen2's attention projections (grouped-query), from the config alone."""
    hidden, head_dim = config.hidden_size, config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    return {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden)}


def mla_projections(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of DeepseekV3's Multi-head Latent Attention projections, from the config alone:
    queries and keys/values pass through low-rank latents (q_lora_rank, kv_lora_rank), the keys' rotary part
    comes straight from kv_a_proj_with_mqa."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    nope, rope, value = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    return {"q_a_proj": (hidden, config.q_lora_rank), "q_b_proj": (config.q_lora_rank, heads * (nope + rope)),
            "kv_a_proj_with_mqa": (hidden, config.kv_lora_rank + rope),
            "kv_b_proj": (config.kv_lora_rank, heads * (nope + value)), "o_proj": (heads * value, hidden)}


@pytest.mark.parametrize(("fixture", "projections"), [("tiny_qwen2", qwen2_attention),
                                                      ("tiny_deepseek_v3", mla_projections)])
def test_other_architectures_adapt_their_attention_projections_and_lower_the_loss(
        tmp_path, faq_file, fixture, projections, request):
    from transformers import AutoConfig

    model_dir = request.getfixturevalue(fixture)
    config = AutoConfig.from_pretrained(model_dir)
    expected = projections(config)
    # batch 8 is the whole train split: every step sees the same rows, so the first and last losses compare
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, faq_file, tmp_path / "run",
                               train__max_steps=12, train__lr=3e-2, train__batch_size=8)
    cli("train", recipe_file)
    run_dir = tmp_path / "run"
    assert len(read_jsonl(run_dir / "data" / "train.jsonl")) == 8

    adapter_config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    r = adapter_config["r"]
    assert r == 4 and set(expected) <= set(adapter_config["target_modules"])
    found = {}
    for key, tensor in load_file(run_dir / "adapter" / "adapter_model.safetensors").items():
        match = re.fullmatch(r"base_model\.model\.model\.layers\.(\d+)\.self_attn\.(\w+)\.lora_([AB])\.weight", key)
        assert match, f"{key}: only attention projections carry an adapter (no MLP, no expert)"
        found[int(match[1]), match[2], match[3]] = tuple(tensor.shape)
    assert found == {
        (layer, name, part): (r, features_in) if part == "A" else (features_out, r)
        for layer in range(config.num_hidden_layers)
        for name, (features_in, features_out) in expected.items()
        for part in "AB"
    }

    summary = json.loads((run_dir / "train.json").read_text())
    adapted = config.num_hidden_layers * sum(r * (i + o) for i, o in expected.values())
    assert summary["trainable_parameters"] == adapted
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert len(losses) == summary["steps"] == 12
    assert (summary["first_loss"], summary["last_loss"]) == (losses[0], losses[-1])
    # LoRA on the attention alone moves a random model slowly: about 0.2 in 12 steps here
    assert losses[-1] < losses[0] - 0.1, losses


def test_cli_run_prints_base_vs_tuned_and_reports_rejects(tmp_path, tiny_llama, faq_file):
    with faq_file.open("a", encoding="utf-8") as handle:
        handle.write('{"question": "broken\n')
        handle.write(json.dumps({"question": "no answer here"}) + "\n")
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    result = cli("run", recipe_file, "eval.max_new_tokens=4")
    assert "faq.jsonl:17: invalid_json" in result.output
    assert "faq.jsonl:18: missing_field" in result.output
    assert "base vs tuned" in result.output and "fact_accuracy" in result.output
    rejects = read_jsonl(tmp_path / "run" / "data" / "rejects.jsonl")
    assert [(r["origin"], r["reason"]) for r in rejects] == [("faq.jsonl:17", "invalid_json"),
                                                              ("faq.jsonl:18", "missing_field")]


def test_cli_recipe_typo_exits_non_zero_naming_the_key(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run")
    result = cli("train", recipe_file, "train.bach_size=2", exit_code=2)
    assert "train.bach_size: unknown key" in result.output and "train.batch_size" in result.output


# what each command's --help must explain: words of its description and its key arguments / options
HELP = {
    "prepare": ("split the recipe's data into <output_dir>/data/", ["recipe", "overrides"]),
    "train": ("Fine-tune the recipe's model", ["recipe", "overrides", "--nproc"]),
    "eval": ("Answer the test split with the tuned model and a baseline", ["target", "--against", "--fail-under",
                                                                          "--data"]),
    "run": ("prepare -> train -> eval", ["recipe", "overrides"]),
    "chat": ("Chat with a tuned run (or any model)", ["target", "--message", "--max-new-tokens"]),
    "export": ("Export a run for other runtimes", ["run", "--to", "--quant"]),
    "serve": ("Serve an OpenAI-compatible API", ["target", "--adapter", "--host", "--port", "--api-key"]),
}


def _plain(text: str) -> str:
    """Help output without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def test_cli_help_explains_every_command():
    import typer

    commands = typer.main.get_command(app).commands
    top = cli("--help")
    overview = _plain(top.output)
    assert "Fine-tune a chat model into a domain assistant" in overview
    for command, (description, options) in HELP.items():
        summary = _plain(commands[command].help.split("\n\n")[0])
        assert description in summary, (command, summary)
        assert f"{command} {summary}" in overview, command  # each command is listed with its one-line summary
        shown = _plain(cli(command, "--help").output)
        assert re.search(rf"Usage: \S+ {command} \[OPTIONS\]", shown) and summary in shown, shown
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", shown), (command, option, shown)


def test_eval_reports_win_rate_and_fail_under_gates(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    cli("train", recipe_file)
    run_dir = tmp_path / "run"
    passing = cli("eval", run_dir, "--fail-under", "rougeL=0")
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    ab = metrics["ab"]
    assert ab["wins"] + ab["ties"] + ab["losses"] == metrics["tuned"]["n"]
    assert 0 <= ab["ci_low"] <= ab["win_rate"] <= ab["ci_high"] <= 1 and "win rate" in passing.output
    planted = cli("eval", run_dir, "--fail-under", "rougeL=1.01,win_rate=0", exit_code=1)
    assert "rougeL" in planted.output and "< 1.01" in planted.output
    typo = cli("eval", run_dir, "--fail-under", "rougeL", exit_code=2)
    assert "--fail-under" in typo.output
