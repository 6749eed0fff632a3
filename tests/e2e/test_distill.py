"""objective: distill end to end on tiny models: logits (KL to a teacher, its cache) and sequence
(a run, a model or an endpoint answers the training prompts)."""

import json
import random
from http.server import BaseHTTPRequestHandler

import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from seektune.cli import app
from seektune.data.io import read_jsonl
from seektune.data.render import render
from seektune.evaluate import stage as eval_stage
from seektune.models.load import load_model
from seektune.recipe import load_recipe
from seektune.runs import load_tuned
from seektune.train import distill, pipeline
from seektune.train.run import run as train
from tests.conftest import FAQ_ROWS, _tokenizer_into, _write_model, build_tokenizer, serve_http, write_recipe

ANSWERS = {row["question"]: row["answer"] for row in FAQ_ROWS}


def distill_recipe(path, model_dir, data_file, output_dir, distill_spec, **extra):
    write_recipe(path, model_dir, data_file, output_dir, **extra)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["objective"], raw["distill"] = "distill", distill_spec
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def summary(run_dir):
    return json.loads((run_dir / "train.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("distill-data") / "faq.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_llama, data_file):
    """tiny_llama fully fine-tuned for a few steps: its distributions differ clearly from the base's."""
    root = tmp_path_factory.mktemp("teacher-full")
    recipe = write_recipe(root / "r.yaml", tiny_llama, data_file, root / "run", method__name="full",
                          train__max_steps=10, train__lr=1e-2)
    return train(load_recipe(recipe))


@pytest.fixture(scope="module")
def lora_teacher_run(tmp_path_factory, tiny_llama, data_file):
    root = tmp_path_factory.mktemp("teacher-lora")
    recipe = write_recipe(root / "r.yaml", tiny_llama, data_file, root / "run", train__max_steps=4, train__lr=5e-2)
    return train(load_recipe(recipe))


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny Llama whose tokenizer is not the fixtures' (another vocabulary)."""
    from transformers import LlamaConfig

    root = tmp_path_factory.mktemp("other-tokenizer")
    tokenizer = build_tokenizer(root / "tok")
    tokenizer.add_tokens(["LarkCare", "warranty"])
    tokenizer.save_pretrained(root / "tok")
    model_dir = root / "model"
    _write_model(model_dir, LlamaConfig(vocab_size=402, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    _tokenizer_into(model_dir, root / "tok")
    return model_dir


def full_kl_on(rows, teacher, student, tokenizer, temperature):
    """Mean KL(teacher_T || student_T) per answer token over the whole vocabulary, from plain logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            rendered = render(tokenizer, row["messages"], 128)
            ids = torch.tensor([rendered["input_ids"]])
            answer = torch.tensor(rendered["labels"][1:]) != -100
            t = teacher(input_ids=ids).logits[0, :-1][answer] / temperature
            s = student(input_ids=ids).logits[0, :-1][answer] / temperature
            total += F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="sum").item()
            count += int(answer.sum())
    return total / count


# ---------------------------------------------------------------- logits mode


def test_logits_distillation_brings_the_student_close_to_the_teacher_on_val_rows(tmp_path, tiny_llama, teacher_run,
                                                                                   data_file):
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, data_file, tmp_path / "run",
                                 {"teacher": str(teacher_run), "temperature": 1.0, "alpha": 1.0, "top_k": 32},
                                 method__name="full", train__max_steps=12, train__lr=5e-3)
    run_dir = train(load_recipe(recipe_file))
    figures = summary(run_dir)["distill"]
    assert figures["mode"] == "logits" and figures["teacher"] == f"run {teacher_run}"
    assert figures["teacher_cache"] == "computed" and figures["val_rows"] == 4
    # measured: 0.115 -> 0.0125 (top-32 + rest); the full-vocabulary KL below: 0.131 -> 0.025
    assert figures["val_kl_after"] < 0.3 * figures["val_kl_before"]
    history = summary(run_dir)["log_history"]
    assert all({"kl", "ce"} <= h.keys() for h in history if "loss" in h)
    assert any("eval_kl" in h for h in history)

    # the same, measured independently over the whole vocabulary with the saved models
    _, _, teacher = load_tuned(teacher_run)
    _, base, student = load_tuned(run_dir)
    val = read_jsonl(run_dir / "data" / "val.jsonl")
    before = full_kl_on(val, teacher, base.model, base.tokenizer, 1.0)
    after = full_kl_on(val, teacher, student, base.tokenizer, 1.0)
    assert after < 0.3 * before
    assert figures["val_kl_before"] <= before + 1e-6  # top-k + rest never exceeds the full KL


def test_the_loss_is_the_full_kl_and_ce_in_padded_and_padding_free_batches(tmp_path, tiny_llama, tiny_qwen2, faq_file):
    """With top_k = V - 1 the stored targets are exact, so the loss must equal a reference computed
    from the two models' full logits, row by row; rows come in a shuffled order."""
    temperature, alpha = 2.0, 0.3
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, faq_file, tmp_path / "run",
                                 {"teacher": str(tiny_qwen2), "temperature": temperature, "alpha": alpha,
                                  "top_k": 1000})
    recipe = load_recipe(recipe_file)
    pipeline.ensure_prepared(recipe)
    mode, figures, targets, _ = distill.prepare_teacher(recipe)
    assert mode == "logits" and figures["top_k"] == 399
    teacher = load_model(str(tiny_qwen2)).model
    grads = {}
    for batching in ("padded", "padding_free"):
        recipe.train.batching = batching
        built = pipeline.build_trainer(recipe, trainer_class=distill.DistillTrainer, teacher_targets=targets,
                                  temperature=temperature, alpha=alpha)
        trainer, model = built.trainer, built.trainer.model
        rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in built.train_set]
        random.Random(0).shuffle(rows)
        batch = trainer._prepare_inputs(trainer.data_collator(rows[:3]))
        assert ("position_ids" in batch) == (batching == "padding_free")
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        grads[batching] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        kl = ce = count = 0
        with torch.no_grad():
            for row in rows[:3]:
                ids = torch.tensor([row["input_ids"]])
                answer = torch.tensor(row["labels"][1:]) != -100
                s = model(input_ids=ids).logits[0, :-1][answer]
                t = teacher(input_ids=ids).logits[0, :-1][answer]
                kl += F.kl_div((s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1),
                               log_target=True, reduction="sum")
                ce += F.cross_entropy(s, torch.tensor(row["labels"][1:])[answer], reduction="sum")
                count += int(answer.sum())
        expected = (alpha * temperature**2 * kl + (1 - alpha) * ce) / count
        torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert grads["padded"].keys() == grads["padding_free"].keys() and grads["padded"]
    for name, grad in grads["padded"].items():
        torch.testing.assert_close(grads["padding_free"][name], grad, rtol=1e-4, atol=1e-6)


def test_the_teacher_cache_is_reused_and_a_new_temperature_computes_it_again(tmp_path, tiny_llama, lora_teacher_run,
                                                                             data_file, monkeypatch):
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, data_file, tmp_path / "run",
                                 {"teacher": str(lora_teacher_run), "top_k": 16}, train__max_steps=1)
    run_dir = train(load_recipe(recipe_file))
    cache = run_dir / "distill" / "teacher_topk.safetensors"
    meta = json.loads((run_dir / "distill" / "teacher_topk.json").read_text())
    assert meta["temperature"] == 2.0 and meta["top_k"] == 16 and meta["teacher"].startswith("run:")
    assert summary(run_dir)["distill"]["teacher_cache"] == "computed"
    written = cache.stat().st_mtime_ns

    loads = []
    real_load = distill.Teacher.load
    monkeypatch.setattr(distill.Teacher, "load", lambda self, recipe: loads.append(1) or real_load(self, recipe))
    train(load_recipe(recipe_file))
    assert loads == [] and cache.stat().st_mtime_ns == written
    assert summary(run_dir)["distill"]["teacher_cache"] == "reused"

    train(load_recipe(recipe_file, ["distill.temperature=1.5"]))
    assert loads == [1] and cache.stat().st_mtime_ns != written
    assert summary(run_dir)["distill"]["teacher_cache"] == "computed"
    assert json.loads((run_dir / "distill" / "teacher_topk.json").read_text())["temperature"] == 1.5


# ---------------------------------------------------------------- sequence mode


def test_sequence_mode_trains_on_a_runs_answers_in_a_derived_split(tmp_path, tiny_llama, lora_teacher_run,
                                                                     data_file):
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, data_file, tmp_path / "run",
                                 {"teacher": str(lora_teacher_run), "mode": "sequence", "max_new_tokens": 8},
                                 train__max_steps=1)
    recipe = load_recipe(recipe_file)
    pipeline.ensure_prepared(recipe)
    source = read_jsonl(recipe.run_dir / "data" / "train.jsonl")
    run_dir = train(recipe)

    _, teacher, _ = eval_stage.run_systems(lora_teacher_run, want_base=False)
    expected = teacher.answer([r["messages"] for r in source], eval_stage.GenOptions(max_new_tokens=8), "check")
    rows = read_jsonl(run_dir / "data" / "train.distilled.jsonl")
    assert read_jsonl(run_dir / "data" / "train.jsonl") == source  # the prepared split is never rewritten
    kept = [(s, a["answer"]) for s, a in zip(source, expected) if a["answer"].strip()]
    assert [r["messages"][-1]["content"] for r in rows] == [answer for _, answer in kept]
    assert [r["messages"][:-1] for r in rows] == [s["messages"][:-1] for s, _ in kept]
    assert all(r["meta"]["distilled"] is True for r in rows)
    figures = summary(run_dir)["distill"]
    assert figures["mode"] == "sequence" and figures["teacher_answers"] == len(kept) > 0
    assert figures["train_rows"] == len(kept) == summary(run_dir)["train_rows"]
    assert figures["empty_answers"] == len(source) - len(kept) == len(read_jsonl(run_dir / "distill" /
                                                                                 "empty_answers.jsonl"))

    # a rerun starts from the prepared split again (not from the distilled rows) and reuses the answers
    train(load_recipe(recipe_file, ["distill.keep_references=true"]))
    assert read_jsonl(run_dir / "data" / "train.jsonl") == source
    rows = read_jsonl(run_dir / "data" / "train.distilled.jsonl")
    references = [r for r in rows if r["meta"]["distilled"] is False]
    assert [r["messages"] for r in references] == [s["messages"] for s in source]
    assert len(rows) == len(source) + len(kept)
    figures = summary(run_dir)["distill"]
    assert figures["answers_reused"] == len(source) and figures["answers_generated"] == 0

    # logits mode in the same directory trains on the prepared rows again
    train(load_recipe(recipe_file, ["distill.mode=logits"]))
    assert read_jsonl(run_dir / "data" / "train.jsonl") == source
    assert summary(run_dir)["train_rows"] == len(source)


class StubTeacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that prefixes the reference answer, and says nothing about warranties."""

    prompts: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        StubTeacher.prompts.append(question)
        content = "" if "warranty" in question else f"Teacher: {ANSWERS[question]}"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def endpoint():
    yield from serve_http(StubTeacher)


def test_an_endpoint_teacher_writes_the_rows_and_empty_answers_are_counted(tmp_path, tiny_llama, data_file, endpoint):
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, data_file, tmp_path / "run",
                                 {"teacher": endpoint, "teacher_model": "big-teacher"}, train__max_steps=1)
    run_dir = train(load_recipe(recipe_file))
    source = read_jsonl(run_dir / "data" / "train.jsonl")
    questions = [s["messages"][-2]["content"] for s in source]
    assert sorted(StubTeacher.prompts) == sorted(questions)
    rows = read_jsonl(run_dir / "data" / "train.distilled.jsonl")
    answered = [q for q in questions if "warranty" not in q]
    assert [r["messages"][-1]["content"] for r in rows] == [f"Teacher: {ANSWERS[q]}" for q in answered]
    figures = summary(run_dir)["distill"]
    assert figures["mode"] == "sequence" and "endpoint" in figures["fallback_reason"]
    assert figures["teacher"] == f"big-teacher at {endpoint}"
    skipped = read_jsonl(run_dir / "distill" / "empty_answers.jsonl")
    assert figures["empty_answers"] == len(skipped) == len(questions) - len(answered) > 0
    assert {s["reason"] for s in skipped} == {"empty_teacher_answer"}
    assert [s["origin"] for s in skipped] == [s["meta"]["origin"] for s in source if "warranty" in
                                              s["messages"][-2]["content"]]


def test_another_tokenizer_falls_back_to_sequence_in_auto_and_stops_logits_mode(tmp_path, tiny_llama,
                                                                                 other_tokenizer_model, data_file):
    recipe_file = distill_recipe(tmp_path / "d.yaml", tiny_llama, data_file, tmp_path / "run",
                                 {"teacher": str(other_tokenizer_model), "mode": "logits"}, train__max_steps=1)
    result = CliRunner().invoke(app, ["train", str(recipe_file)])
    assert result.exit_code == 2  # a user error: one line, no traceback
    assert "distill.mode logits needs the student's tokenizer" in result.output and "402 vs 400 tokens" in result.output
    assert not (tmp_path / "run" / "train.json").exists()

    run_dir = train(load_recipe(recipe_file, ["distill.mode=auto", "distill.keep_references=true",
                                                "distill.max_new_tokens=4"]))
    figures = summary(run_dir)["distill"]
    assert figures["mode"] == "sequence" and figures["requested_mode"] == "auto"
    assert "tokenizer" in figures["fallback_reason"]
    rows = read_jsonl(run_dir / "data" / "train.distilled.jsonl")
    assert len([r for r in rows if r["meta"]["distilled"]]) == figures["teacher_answers"]
