"""Train -> eval on tiny models through the stage functions and the CLI."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from seektune.cli import app
from seektune.data.io import read_jsonl
from seektune.evaluate import stage as eval_stage
from seektune.recipe import load_recipe
from seektune.train import sft
from tests.conftest import write_recipe


def _loss_on(model, tokenizer, records):
    from seektune.data.render import render

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for record in records:
            r = render(tokenizer, record["messages"])
            out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
            n = sum(1 for l in r["labels"][1:] if l != -100)
            total += out.loss.item() * n
            count += n
    return total / count


def test_lora_run_changes_adapter_and_lowers_loss_on_memorised_batch(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__max_steps=3, train__lr=2e-2)
    run_dir = sft.run(load_recipe(recipe_file))
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero; training moved it
    assert (run_dir / "adapter" / "tokenizer.json").is_file()
    assert list((run_dir / "logs").glob("events.out.tfevents.*")), "TensorBoard logs are written to <run>/logs"
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["steps"] == 3 and summary["trainable_parameters"] < summary["total_parameters"]

    recipe, loaded, model = eval_stage.load_tuned(run_dir)
    train_rows = read_jsonl(run_dir / "data" / "train.jsonl")
    tuned_loss = _loss_on(model, loaded.tokenizer, train_rows)
    with model.disable_adapter():
        base_loss = _loss_on(model, loaded.tokenizer, train_rows)
    assert tuned_loss < base_loss - 0.05


def test_eval_writes_metrics_and_samples(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    run_dir = sft.run(load_recipe(recipe_file))
    metrics = eval_stage.run(run_dir)
    on_disk = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert on_disk["base"].keys() == on_disk["tuned"].keys() - {"win_rate"}
    for system in ("base", "tuned"):
        assert {"n", "rougeL", "bleu", "fact_accuracy", "by_language"} <= on_disk[system].keys()
        assert 0 <= on_disk[system]["rougeL"] <= 1 and 0 <= on_disk[system]["fact_accuracy"] <= 1
    samples = read_jsonl(run_dir / "eval" / "samples.jsonl")
    test_rows = read_jsonl(run_dir / "data" / "test.jsonl")
    assert len(samples) == len(test_rows) == metrics["base"]["n"]
    assert {"question", "reference", "base", "tuned", "facts", "origin"} <= samples[0].keys()


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_deepseek_v3"])
def test_other_architectures_train(tmp_path, faq_file, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    recipe_file = write_recipe(tmp_path / "r.yaml", model_dir, faq_file, tmp_path / "run", train__max_steps=2)
    run_dir = sft.run(load_recipe(recipe_file))
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_cli_run_prints_base_vs_tuned_and_reports_rejects(tmp_path, tiny_llama, faq_file):
    with faq_file.open("a", encoding="utf-8") as handle:
        handle.write('{"question": "broken\n')
        handle.write(json.dumps({"question": "no answer here"}) + "\n")
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    result = CliRunner().invoke(app, ["run", str(recipe_file), "eval.max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    assert "faq.jsonl:17: invalid_json" in result.output
    assert "faq.jsonl:18: missing_field" in result.output
    assert "base vs tuned" in result.output and "fact_accuracy" in result.output
    rejects = read_jsonl(tmp_path / "run" / "data" / "rejects.jsonl")
    assert [(r["origin"], r["reason"]) for r in rejects] == [("faq.jsonl:17", "invalid_json"), ("faq.jsonl:18", "missing_field")]


def test_cli_recipe_typo_exits_non_zero_naming_the_key(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run")
    result = CliRunner().invoke(app, ["train", str(recipe_file), "train.bach_size=2"])
    assert result.exit_code == 2
    assert "train.bach_size: unknown key" in result.output and "train.batch_size" in result.output


def test_cli_help_explains_every_command():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("prepare", "train", "eval", "run", "chat"):
        assert command in top.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_eval_reports_win_rate_and_fail_under_gates(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run", train__max_steps=1)
    run_dir = sft.run(load_recipe(recipe_file))
    runner = CliRunner()
    passing = runner.invoke(app, ["eval", str(run_dir), "--fail-under", "rougeL=0"])
    assert passing.exit_code == 0, passing.output
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    ab = metrics["ab"]
    assert ab["wins"] + ab["ties"] + ab["losses"] == metrics["tuned"]["n"]
    assert 0 <= ab["ci_low"] <= ab["win_rate"] <= ab["ci_high"] <= 1 and "win rate" in passing.output
    planted = runner.invoke(app, ["eval", str(run_dir), "--fail-under", "rougeL=1.01,win_rate=0"])
    assert planted.exit_code == 1 and "rougeL" in planted.output and "< 1.01" in planted.output
    typo = runner.invoke(app, ["eval", str(run_dir), "--fail-under", "rougeL"])
    assert typo.exit_code == 2 and "--fail-under" in typo.output
