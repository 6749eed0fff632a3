"""`seektune export` end to end on a tiny trained run: each target, its export.json, and --force."""

import json

import pytest
import torch
from typer.testing import CliRunner

from seektune.cli import app
from seektune.export import quantize
from seektune.recipe import load_recipe
from seektune.runs import RunDir
from seektune.train import sft
from tests.conftest import write_recipe


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("exportrun")
    from tests.conftest import FAQ_ROWS

    data = root / "faq.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    recipe = write_recipe(root / "r.yaml", tiny_llama, data, root / "run", train__max_steps=20, train__lr=3e-2)
    return sft.run(load_recipe(recipe))


def export_record(run_dir, kind: str) -> dict:
    return json.loads((RunDir(run_dir).export(kind) / "export.json").read_text())


def test_int8_linear_matches_float_within_quantisation_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(5, 7, 64)
    q = quantize.Int8Linear.from_linear(linear)
    # weights are rounded to 1/254 of each row's largest magnitude: the error is bounded by that
    bound = linear.weight.abs().amax(1) / 254 * 64 * x.abs().max()  # per output: 64 inputs, each off by <= that
    assert ((q(x) - linear(x)).abs() <= bound + 1e-5).all()
    assert q.qweight.dtype == torch.int8


def test_export_merged_int8_and_gguf_record_parity(run_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run_dir), "--to", "merged"])
    assert result.exit_code == 0, result.output
    merged = export_record(run_dir, "merged")
    assert merged["parity"]["max_abs_logit_diff"] < 1e-4 and merged["merged_tensors"] > 0

    again = runner.invoke(app, ["export", str(run_dir), "--to", "merged"])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, ["export", str(run_dir), "--to", "merged", "--force"]).exit_code == 0

    result = runner.invoke(app, ["export", str(run_dir), "--to", "int8"])
    assert result.exit_code == 0, result.output
    int8 = export_record(run_dir, "int8")
    assert int8["bytes"] < int8["merged_bytes"]
    assert abs(int8["parity"]["perplexity_change"]) < 0.05
    chat = runner.invoke(app, ["chat", str(run_dir), "--backend", "int8", "-m", "What is the return window?",
                               "--max-new-tokens", "4"])
    assert chat.exit_code == 0, chat.output
    chat = runner.invoke(app, ["chat", str(run_dir), "-m", "What is the return window?", "--max-new-tokens", "4"])
    assert chat.exit_code == 0, chat.output  # the run itself: base + adapter through RunDir.load_tuned

    result = runner.invoke(app, ["export", str(run_dir), "--to", "gguf", "--quant", "f16"])
    assert result.exit_code == 0, result.output
    gguf = export_record(run_dir, "gguf")
    assert gguf["parity"]["max_abs_logit_diff"] < 1e-2
    assert gguf["parity"]["greedy_identical"] == gguf["parity"]["prompts"]
    assert gguf["parity"]["tokenizer_identical"] == gguf["parity"]["prompts"]
    llama_cpp = gguf["parity"]["llama_cpp"]  # the same file run by llama.cpp itself
    assert llama_cpp["prompts"] == gguf["parity"]["prompts"]
    for key in ("tokenizer_identical", "greedy_identical", "greedy_identical_vs_f16_rounded",
                "modelfile_template_identical"):
        assert llama_cpp[key] == llama_cpp["prompts"], key
    assert llama_cpp["eog_includes_eos"] and llama_cpp["stops_at_end_of_turn"] == llama_cpp["answers_ended_early"]
    assert "FROM ./run-f16.gguf" in (RunDir(run_dir).export("gguf") / "Modelfile").read_text()


def test_export_refuses_bad_requests(run_dir, tmp_path):
    runner = CliRunner()
    bad_target = runner.invoke(app, ["export", str(run_dir), "--to", "tflite"])
    assert bad_target.exit_code == 2 and "merged, int8, onnx, gguf" in bad_target.output
    quant_elsewhere = runner.invoke(app, ["export", str(run_dir), "--to", "int8", "--quant", "q8_0"])
    assert quant_elsewhere.exit_code == 2 and "--quant applies to --to gguf" in quant_elsewhere.output
    not_a_run = runner.invoke(app, ["export", str(tmp_path), "--to", "merged"])
    assert not_a_run.exit_code == 2 and "not a seektune run directory" in not_a_run.output
    no_export = runner.invoke(app, ["chat", str(tmp_path), "--backend", "onnx", "-m", "hi"])
    assert no_export.exit_code == 2 and "seektune export" in no_export.output


def test_export_onnx_matches_pytorch_and_chats(run_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run_dir), "--to", "onnx"])
    assert result.exit_code == 0, result.output
    record = export_record(run_dir, "onnx")
    assert record["parity"]["max_abs_logit_diff"] < 1e-3
    assert record["parity"]["greedy_identical"] == record["parity"]["prompts"]
    chat = runner.invoke(app, ["chat", str(run_dir), "--backend", "onnx", "-m", "What is the return window?",
                               "--max-new-tokens", "4"])
    assert chat.exit_code == 0, chat.output
