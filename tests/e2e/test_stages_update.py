"""Multi-stage recipes, curriculum order and continual learning (`seektune update`) on tiny models."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from seektune.cli import app
from seektune.data.io import read_jsonl
from seektune.recipe import RecipeError, load_recipe
from seektune.runs import RunDir
from seektune.train import pipeline
from seektune.train.run import run as train
from tests.conftest import write_recipe


def _staged(path, recipe_file, stages):
    raw = yaml.safe_load(recipe_file.read_text())
    raw["stages"] = stages
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def _lora(directory):
    return load_file(directory / "adapter_model.safetensors")


# ---------------------------------------------------------------- stages


def test_continue_stage_starts_from_the_previous_stage_adapter(tmp_path, tiny_llama, faq_file):
    base = write_recipe(tmp_path / "base.yaml", tiny_llama, faq_file, tmp_path / "run")
    recipe_file = _staged(tmp_path / "r.yaml", base, [
        {"name": "general", "train": {"max_steps": 4, "lr": 2e-2}},
        # a vanishing learning rate: whatever stage 2 ends with is what it started from
        {"name": "domain", "train": {"max_steps": 1, "lr": 1e-12}},
    ])
    run_dir = train(load_recipe(recipe_file))
    first = _lora(run_dir / "stages" / "01-general" / "adapter")
    second = _lora(run_dir / "stages" / "02-domain" / "adapter")
    assert first.keys() == second.keys()
    lora_b = [k for k in first if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(first[k]) > 0 for k in lora_b)  # a fresh adapter's B is zero
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)
    final = _lora(run_dir / "adapter")
    assert all(torch.equal(final[k], second[k]) for k in final)

    second_recipe = RunDir(run_dir / "stages" / "02-domain").recipe()
    assert second_recipe.model.adapter == str(run_dir / "stages" / "01-general" / "adapter")
    summary = json.loads((run_dir / "train.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["general", "domain"]
    assert summary["steps"] == 5
    steps = [e["step"] for e in summary["log_history"] if "loss" in e]
    assert steps == sorted(steps) and max(steps) == 5  # one history, stage 2's steps continue stage 1's
    assert {e["stage"] for e in summary["log_history"]} == {"general", "domain"}
    # stage 2's first loss is stage 1's last, not the untrained model's first
    stage1, stage2 = summary["stages"]
    assert stage2["first_loss"] < stage1["first_loss"] - 0.05
    assert (run_dir / "data" / "test.jsonl").is_file()  # the last stage's splits, for `seektune eval`
    from seektune.evaluate import stage as eval_stage

    metrics = eval_stage.run(run_dir)
    assert metrics["tuned"]["n"] == len(read_jsonl(run_dir / "data" / "test.jsonl"))
    page = (run_dir / "report.html").read_text()
    assert "<h3>Stages</h3>" in page and "<td>general</td>" in page and "<td>domain</td>" in page


def test_merge_stage_trains_a_fresh_adapter_on_merged_weights(tmp_path, tiny_llama, faq_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = write_recipe(tmp_path / "base.yaml", tiny_llama, faq_file, tmp_path / "run")
    recipe_file = _staged(tmp_path / "r.yaml", base, [
        {"name": "sft", "train": {"max_steps": 4, "lr": 2e-2}},
        {"name": "polish", "carry": "merge", "train": {"max_steps": 1, "lr": 1e-12}},
    ])
    run_dir = train(load_recipe(recipe_file))
    polish = run_dir / "stages" / "02-polish"
    assert RunDir(polish).recipe().model.merge == [str(run_dir / "stages" / "01-sft" / "adapter")]
    trained = json.loads((polish / "train.json").read_text())
    assert trained["trainable_parameters"] < trained["total_parameters"]  # a fresh adapter trained, not everything
    # an adapter on merged weights is saved merged: every later stage loads the run from model.name alone
    assert not (polish / "adapter").exists() and not (run_dir / "adapter").exists()
    final = load_file(run_dir / "model" / "model.safetensors")
    assert all(torch.equal(v, load_file(polish / "model" / "model.safetensors")[k]) for k, v in final.items())
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                         run_dir / "stages" / "01-sft" / "adapter").merge_and_unload().state_dict()
    base = load_file(tiny_llama / "model.safetensors")
    changed = 0
    for key, value in final.items():  # stage 1 merged in; stage 2's fresh adapter (lr 1e-12) added ~nothing
        assert torch.allclose(value, expected[key], atol=1e-5), key
        changed += not torch.equal(value, base.get(key, value))
    assert changed > 0


def test_a_typo_in_any_stage_stops_before_the_first_stage(tmp_path, tiny_llama, faq_file):
    base = write_recipe(tmp_path / "base.yaml", tiny_llama, faq_file, tmp_path / "run")
    recipe_file = _staged(tmp_path / "r.yaml", base, [{"name": "a"}, {"name": "b", "train": {"lrr": 1e-3}}])
    with pytest.raises(RecipeError, match=r"(?s)stages\[1\] \(b\).*train.lrr: unknown key.*did you mean 'train.lr'"):
        load_recipe(recipe_file)
    assert not (tmp_path / "run").exists()
    duplicate = _staged(tmp_path / "d.yaml", base, [{"name": "a"}, {"name": "a"}])
    with pytest.raises(RecipeError, match="stage names must differ"):
        load_recipe(duplicate)


# ---------------------------------------------------------------- curriculum


def test_curriculum_orders_rows_easy_to_hard(tmp_path, tiny_llama, faq_file):
    from seektune.data.render import render
    from seektune.models.load import load_model
    from seektune.train.curriculum import order_by_difficulty, row_losses

    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "run",
                               train__curriculum={"score": "length"})
    recipe = load_recipe(recipe_file)
    pipeline.ensure_prepared(recipe)
    built = pipeline.build_trainer(recipe)
    lengths = built.train_set["length"]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert built.trainer.args.train_sampling_strategy == "sequential"

    loaded = load_model(str(tiny_llama))
    records = read_jsonl(recipe.run_dir / "data" / "train.jsonl")
    losses = row_losses(loaded.model, loaded.tokenizer, records, 128, batch_size=3)
    for record, loss in zip(records, losses):  # the batched, padded score is each row's own mean answer loss
        r = render(loaded.tokenizer, record["messages"], 128)
        reference = loaded.model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss
        assert loss == pytest.approx(reference.item(), rel=1e-4)
    recipe.train.curriculum = {"score": "loss", "reverse": True}
    ordered = order_by_difficulty(recipe, loaded.tokenizer, records)
    assert [losses[records.index(r)] for r in ordered] == sorted(losses, reverse=True)


# ---------------------------------------------------------------- update


NEW_ROWS = [
    {"question": "Do you gift wrap orders?", "answer": "Gift wrapping costs $3.50 per item.", "facts": ["$3.50"],
     "category": "orders"},
    {"question": "How much is gift wrap?", "answer": "Gift wrapping costs $3.50 per item.", "facts": ["$3.50"],
     "category": "orders"},
    {"question": "Can you wrap a present for me?", "answer": "Gift wrapping costs $3.50 per item.",
     "facts": ["$3.50"], "category": "orders"},
    {"question": "Is there a fee to gift wrap?", "answer": "Gift wrapping costs $3.50 per item.", "facts": ["$3.50"],
     "category": "orders"},
]


@pytest.fixture
def trained_run(tmp_path, tiny_llama, faq_file):
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "old", train__max_steps=3,
                               train__lr=2e-2)
    return train(load_recipe(recipe_file))


def test_update_replays_old_rows_and_reports_forgetting(tmp_path, trained_run):
    from seektune.evaluate import stage as eval_stage

    eval_stage.run(trained_run)  # the old run's own answers to its test split, cached
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps(r) + "\n" for r in NEW_ROWS * 3), encoding="utf-8")
    out = tmp_path / "old-update-1"
    result = CliRunner().invoke(app, ["update", str(trained_run), "--data", str(new), "--replay", "0.5",
                                      "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert "before -> after the update" in result.output
    rows = read_jsonl(out / "data" / "train.replay.jsonl")  # what the update trained on
    replayed = [r for r in rows if r["meta"].get("replay")]
    fresh = [r for r in rows if not r["meta"].get("replay")]
    assert len(replayed) == round(0.5 * len(fresh)) > 0
    prepared = read_jsonl(out / "data" / "train.jsonl")  # stays as prepare wrote it: the new rows only
    assert sorted(map(json.dumps, prepared)) == sorted(map(json.dumps, fresh))
    assert json.loads((out / "train.json").read_text())["train_rows"] == len(rows)
    old_rows = {json.dumps(r["messages"]) for r in read_jsonl(trained_run / "data" / "train.jsonl")}
    assert all(json.dumps(r["messages"]) in old_rows for r in replayed)
    recipe = RunDir(out).recipe()
    assert recipe.model.adapter == str((trained_run / "adapter").resolve()) and recipe.update.replay == 0.5
    report = json.loads((out / "update.json").read_text())
    assert report["replay"]["replay_rows"] == len(replayed)
    old = report["old"]
    assert old["forgetting"]["fact_accuracy"] == pytest.approx(
        old["before"]["fact_accuracy"] - old["after"]["fact_accuracy"])
    assert report["new"]["after"]["n"] == len(read_jsonl(out / "data" / "test.jsonl"))
    assert "Update: gain and forgetting" in (out / "report.html").read_text()
    # both models answered the old split; the old run's own answers are the "before"
    old_metrics = json.loads((out / "eval-old" / "metrics.json").read_text())
    assert old_metrics["cache"]["reused"]["base"] == old_metrics["base"]["n"]  # the old run's answers, reused
    samples = read_jsonl(out / "eval-old" / "samples.jsonl")
    assert len(samples) == len(read_jsonl(trained_run / "data" / "test.jsonl")) and "base" in samples[0]
    # a second update gets its own directory
    again = CliRunner().invoke(app, ["update", str(trained_run), "--data", str(new), "--replay", "0", "--no-eval",
                                     "train.max_steps=1", "update.repeat_new=3"])
    assert again.exit_code == 0, again.output
    second = tmp_path / "old-update-2"
    rows = read_jsonl(second / "data" / "train.replay.jsonl")
    assert not any(r["meta"].get("replay") for r in rows)
    assert len(rows) == 3 * len(fresh) and len({json.dumps(r) for r in rows}) == len(fresh)  # each new row thrice
    assert not (second / "update.json").read_text().count('"old"')


def test_update_refuses_bad_input(tmp_path, trained_run):
    runner = CliRunner()
    missing = runner.invoke(app, ["update", str(trained_run), "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "nope.jsonl: no such file" in missing.output
    nothing = runner.invoke(app, ["update", str(trained_run)])
    assert nothing.exit_code == 2 and "needs new data" in nothing.output
    not_a_run = runner.invoke(app, ["update", str(tmp_path), "--data", str(tmp_path / "r.yaml")])
    assert not_a_run.exit_code == 2 and "not a seektune run directory" in not_a_run.output


def test_serve_feedback_update_round_trip_gives_the_corrected_answer(tmp_path, tiny_llama, faq_file):
    """serve -> a user corrects an answer through the API -> update from the feedback -> the new run says it."""
    from fastapi.testclient import TestClient

    from seektune.serve.app import ServeSettings, create_app

    # full fine-tuning: the tiny model's fixed, near-zero LM head keeps a LoRA from memorising a sentence quickly
    recipe_file = write_recipe(tmp_path / "r.yaml", tiny_llama, faq_file, tmp_path / "shop", train__max_steps=2,
                               method__name="full")
    run_dir = train(load_recipe(recipe_file))
    question = [{"role": "user", "content": "What is the warranty plan called?"}]
    correction = "The warranty plan is called LarkCare."

    def ask(target):
        app_ = create_app(ServeSettings(target=str(target), allowed_run_dirs=[tmp_path]))
        with TestClient(app_) as client:
            reply = client.post("/v1/chat/completions", json={
                "model": app_.state.serve.catalog.default, "messages": question, "max_tokens": 16, "temperature": 0})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            if target == run_dir:
                rated = client.post("/v1/feedback", json={"id": body["id"], "rating": "down",
                                                          "correction": correction})
                assert rated.status_code == 200, rated.text
            return body["choices"][0]["message"]["content"]

    before = ask(run_dir)
    assert before.strip() != correction
    db = run_dir / "feedback.sqlite"
    out = tmp_path / "shop-fixed"
    result = CliRunner().invoke(app, ["update", str(run_dir), "--feedback", str(db), "--out", str(out),
                                      "--replay", "0", "train.max_steps=40", "train.lr=5e-3"])
    assert result.exit_code == 0, result.output
    assert [r["messages"][-1]["content"] for r in read_jsonl(out / "data" / "train.jsonl")] == [correction]
    assert ask(out).strip() == correction
    report = json.loads((out / "update.json").read_text())
    new = report["new"]  # the corrected rows themselves (nothing held out), answered in 8 tokens here
    assert new["after"]["rougeL"] > new["before"]["rougeL"] + 0.5


def test_prepare_of_a_staged_recipe_prepares_every_stage(tmp_path, tiny_llama, faq_file):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in NEW_ROWS * 2), encoding="utf-8")
    base = write_recipe(tmp_path / "base.yaml", tiny_llama, faq_file, tmp_path / "run")
    recipe_file = _staged(tmp_path / "r.yaml", base,
                          [{"name": "faq"}, {"name": "wrap", "data": {"paths": [str(other)]}}])
    result = CliRunner().invoke(app, ["prepare", str(recipe_file)])
    assert result.exit_code == 0, result.output
    faq_rows = read_jsonl(tmp_path / "run" / "stages" / "01-faq" / "data" / "train.jsonl")
    wrap_rows = read_jsonl(tmp_path / "run" / "stages" / "02-wrap" / "data" / "train.jsonl")
    assert all("gift" in r["messages"][-1]["content"].lower() for r in wrap_rows)
    assert not any("gift" in r["messages"][-1]["content"].lower() for r in faq_rows)
    # the run's own splits are the last stage's: what `seektune eval` scores
    assert read_jsonl(tmp_path / "run" / "data" / "train.jsonl") == wrap_rows
