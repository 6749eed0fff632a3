"""`seektune eval` beyond base vs tuned: perplexity, the answer cache, endpoint baselines, the judge,
models as targets, and test data given on the command line."""

import json
import math
import re
from http.server import BaseHTTPRequestHandler

import pytest
import torch
from typer.testing import CliRunner

from seektune.cli import app
from seektune.data.io import read_jsonl
from seektune.data.render import render
from seektune.evaluate import stage
from seektune.recipe import load_recipe
from seektune.runs import load_tuned
from seektune.train.run import run as train
from tests.conftest import FAQ_ROWS, send_json, serve_http, write_faq, write_recipe

ANSWERS = {row["question"]: row["answer"] for row in FAQ_ROWS}


class FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose behaviour is chosen by the model name."""

    calls: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.calls.append(body)
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        model, messages = body["model"], body["messages"]
        user = messages[-1]["content"]
        if model == "oracle":  # answers every known question with the reference, after some thinking
            content, reasoning = ANSWERS.get(user, "I do not know."), "Let me recall the policy."
        elif model == "fair-judge":  # prefers the answer that matches the reference; position-blind
            reference = user.split("Reference answer from the business:\n", 1)[1].split("\n\nQuestion:")[0].strip()
            a = re.search(r"\[Answer A\]\n(.*?)\n\[End of answer A\]", user, re.S).group(1).strip()
            b = re.search(r"\[Answer B\]\n(.*?)\n\[End of answer B\]", user, re.S).group(1).strip()
            verdict = "A" if a == reference and b != reference else "B" if b == reference and a != reference else "tie"
            content, reasoning = f"Compared with the reference.\nVerdict: {verdict}", None
        elif model == "first-judge":  # always picks the first answer: pure position bias
            content, reasoning = "Verdict: A", None
        else:  # a judge that never says what it thinks
            content, reasoning = "Both answers have merit.", None
        message = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        send_json(self, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


@pytest.fixture(scope="module")
def endpoint():
    yield from serve_http(FakeOpenAI)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("evalrun")
    data = write_faq(root / "faq.jsonl")
    recipe_file = write_recipe(root / "r.yaml", tiny_llama, data, root / "run", train__max_steps=2,
                               train__lr=1e-2, eval__max_new_tokens=6)
    return train(load_recipe(recipe_file))


def _copy_run(run_dir, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints", "eval", "report.*"))
    return target


def test_perplexity_is_exp_of_the_token_weighted_answer_loss(trained_run):
    recipe, loaded, model = load_tuned(trained_run)
    rows = read_jsonl(trained_run / "data" / "test.jsonl")
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:  # one row at a time through the model's own loss: no padding involved
            r = render(loaded.tokenizer, row["messages"])
            loss = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss.item()
            n = sum(1 for label in r["labels"][1:] if label != -100)
            nll, tokens = nll + loss * n, tokens + n
    batched = stage.reference_perplexity(model, loaded.tokenizer, rows, batch_size=3)
    assert batched == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    # the LM head scores only labelled positions; a small token budget makes batches of one or two rows
    rendered = [render(loaded.tokenizer, row["messages"]) for row in rows]
    small = stage.answer_nll(model, loaded.tokenizer, rendered, batch_size=3, batch_tokens=100)
    assert sum(t for t, _ in small) / sum(n for _, n in small) == pytest.approx(nll / tokens, rel=1e-5)


def test_eval_reports_perplexity_ci_categories_and_reuses_cached_answers(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    first = stage.run(run_dir)
    categories = {row["meta"]["category"] for row in read_jsonl(run_dir / "data" / "test.jsonl")}
    for system in ("base", "tuned"):
        assert first[system]["perplexity"] > 1
        low, high = first["ci"][system]["rougeL"]
        assert low <= first[system]["rougeL"] <= high
        assert set(first[system]["by_category"]) == categories
    assert first["cache"]["generated"] == {"base": first["base"]["n"], "tuned": first["tuned"]["n"]}
    by_cat = first["ab"]["by_category"]
    assert sum(part["n"] for part in by_cat.values()) == first["ab"]["n"]
    assert (run_dir / "report.html").is_file() and (run_dir / "report.json").is_file()

    samples_before = read_jsonl(run_dir / "eval" / "samples.jsonl")
    second = stage.run(run_dir)
    assert second["cache"]["reused"] == {"base": first["base"]["n"], "tuned": first["tuned"]["n"]}
    assert read_jsonl(run_dir / "eval" / "samples.jsonl") == samples_before
    assert second["tuned"]["rougeL"] == first["tuned"]["rougeL"]

    changed = stage.run(run_dir, overrides=["max_new_tokens=3"])  # another setting: nothing reusable
    assert changed["cache"]["reused"] == {"base": 0, "tuned": 0}
    assert all(len(line) > 0 for line in (run_dir / "eval" / "cache.jsonl").read_text().splitlines())


def test_another_run_on_the_same_base_reuses_the_base_answers(trained_run, tmp_path):
    """The untrained base answers alike in every run on it: a second run's eval takes them from the shared
    cache (and keeps them in its own), generating only its tuned model's answers."""
    one = _copy_run(trained_run, tmp_path / "one")
    first = stage.run(one)
    other = _copy_run(trained_run, tmp_path / "two")
    second = stage.run(other)
    n = first["base"]["n"]
    assert second["cache"]["reused"] == {"base": n, "tuned": 0}  # tuned is never shared: it is each run's own
    assert second["base"]["rougeL"] == first["base"]["rougeL"]
    cached = [(other if i else one) / "eval" / "cache.jsonl" for i in range(2)]
    assert sorted(cached[0].read_text().splitlines()) == sorted(cached[1].read_text().splitlines())


def test_against_an_endpoint_with_a_judge(trained_run, tmp_path, endpoint):
    run_dir = _copy_run(trained_run, tmp_path)
    FakeOpenAI.calls.clear()
    metrics = stage.run(run_dir, against=endpoint, against_model="oracle",
                        judge={"endpoint": endpoint, "model": "fair-judge"})
    n = metrics["tuned"]["n"]
    assert metrics["systems"]["base"] == f"oracle at {endpoint}"
    assert metrics["base"]["rougeL"] == pytest.approx(1.0)  # the oracle gives the references back
    assert metrics["base"]["reasoning"]["rows"] == n  # reasoning_content is reported, not scored
    assert metrics["base"]["perplexity"] is None  # an endpoint gives no likelihoods
    # the tiny tuned model never reproduces a reference, so the fair judge prefers the oracle both times
    assert metrics["judge"]["losses"] == n and metrics["judge"]["win_rate"] == 0.0
    judge_calls = [c for c in FakeOpenAI.calls if c["model"] == "fair-judge"]
    assert len(judge_calls) == 2 * n  # both orders for every row
    samples = read_jsonl(run_dir / "eval" / "samples.jsonl")
    assert all(s["judge"] == "loss" and s["base_reasoning"] for s in samples)

    FakeOpenAI.calls.clear()
    stage.run(run_dir, against=endpoint, against_model="oracle", judge={"endpoint": endpoint, "model": "first-judge"})
    assert not [c for c in FakeOpenAI.calls if c["model"] == "oracle"]  # the oracle's answers came from the cache
    biased = json.loads((run_dir / "eval" / "metrics.json").read_text())["judge"]
    assert biased["ties"] == n and biased["wins"] == biased["losses"] == 0  # position bias cancels to ties


def test_a_judge_without_verdicts_stops_the_eval_with_its_reply(trained_run, tmp_path, endpoint):
    run_dir = _copy_run(trained_run, tmp_path)
    with pytest.raises(ValueError, match="no usable verdict.*Both answers have merit"):
        stage.run(run_dir, against=endpoint, against_model="oracle", judge={"endpoint": endpoint, "model": "vague"})


def test_cli_evaluates_a_model_on_given_data_and_names_bad_rows(tmp_path, tiny_llama):
    good = tmp_path / "test.jsonl"
    good.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS[:3]), encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", str(tiny_llama), "--data", str(good), "--out", str(out),
                                 "max_new_tokens=3", "data.columns.user=question", "data.columns.assistant=answer",
                                 "--against", "none"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["tuned"]["n"] == 3 and "base" not in metrics and metrics["tuned"]["perplexity"] > 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(FAQ_ROWS[0]) + "\n" + json.dumps({"question": "no answer"}) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", str(tiny_llama), "--data", str(bad), "--out", str(out),
                                 "data.columns.user=question", "data.columns.assistant=answer"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output

    result = runner.invoke(app, ["eval", str(tiny_llama)])
    assert result.exit_code == 2 and "--data" in result.output

    result = runner.invoke(app, ["eval", str(tiny_llama), "--data", str(good), "--out", str(out), "max_rowz=2"])
    assert result.exit_code == 2 and "eval.max_rows" in result.output


def test_cli_report_compare_and_human_eval_round_trip(trained_run, tmp_path):
    import csv

    run_a = _copy_run(trained_run, tmp_path)
    stage.run(run_a)
    run_b = tmp_path / "run_b"
    import shutil

    shutil.copytree(run_a, run_b)
    runner = CliRunner()

    result = runner.invoke(app, ["compare", str(run_a), str(run_b), "--out", str(tmp_path / "cmp.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp.html").is_file() and json.loads((tmp_path / "cmp.json").read_text())["runs"]
    missing = runner.invoke(app, ["compare", str(run_a), str(tmp_path)])
    assert missing.exit_code == 2 and "seektune eval" in missing.output

    result = runner.invoke(app, ["human-eval", "export", str(run_a), "--raters", "2"])
    assert result.exit_code == 0, result.output
    key = json.loads((run_a / "human_eval" / "key.json").read_text())
    filled = []
    for sheet in sorted((run_a / "human_eval").glob("sheet-r*.csv")):
        with sheet.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:  # both raters give the tuned answer 4 and the base answer 2 on every criterion
            order = key["raters"][row["rater"]][row["item_id"]]
            for position in ("1", "2"):
                system = order[position]
                for column in [c for c in row if c.startswith(f"answer{position}_")]:
                    row[column] = "4" if system == "tuned" else "2"
        with sheet.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        filled.append(str(sheet))
    result = runner.invoke(app, ["human-eval", "import", str(run_a), *filled])
    assert result.exit_code == 0, result.output
    results = json.loads((run_a / "human_eval" / "results.json").read_text())
    assert results["systems"]["tuned"]["overall"] == 4 and results["systems"]["base"]["overall"] == 2
    assert json.loads((run_a / "report.json").read_text())["human"]["systems"] == results["systems"]

    result = runner.invoke(app, ["report", str(run_a)])
    assert result.exit_code == 0 and "report.html" in result.output
