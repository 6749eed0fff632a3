"""Feedback through a real server on the tiny Llama -> `seektune feedback export`: raw completions and
answers cut off at max_tokens stay out of training rows unless asked, and every choice of an n=3
request is stored and paired.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/e2e/test_feedback_export.py
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from seektune.cli import app as cli
from seektune.serve.app import ServeSettings, create_app
from seektune.serve.feedback import FeedbackStore

QUESTION = [{"role": "user", "content": "How long do I have to return something?"}]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(db, to: str, out, *flags: str) -> str:
    """`seektune feedback export`; its output on one line."""
    result = CliRunner().invoke(cli, ["feedback", "export", "--db", str(db), "--to", to, "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_served_feedback_exports_only_complete_chat_answers_and_pairs_every_choice(tmp_path, tiny_llama):
    db = tmp_path / "feedback.sqlite"
    served = create_app(ServeSettings(target=str(tiny_llama), feedback_db=db))
    model = served.state.serve.catalog.default
    with TestClient(served) as client:
        def rate(completion_id: str, rating: str, **extra) -> None:
            response = client.post("/v1/feedback", json={"id": completion_id, "rating": rating, **extra})
            assert response.status_code == 200, response.text

        raw = client.post("/v1/completions", json={"model": model, "prompt": "The quick brown fox",
                                                   "max_tokens": 4, "temperature": 0}).json()
        rate(raw["id"], "up")
        cut = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION, "max_tokens": 4,
                                                        "temperature": 0}).json()
        assert cut["choices"][0]["message"]["content"].strip(), cut  # an empty answer is never a training row
        rate(cut["id"], "up")
        # the same greedy answer again, now ended by a stop string inside it: finish_reason stop
        stop = cut["choices"][0]["message"]["content"].strip()[-1]
        complete = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION, "max_tokens": 4,
                                                             "temperature": 0, "stop": [stop]}).json()
        assert complete["choices"][0]["finish_reason"] == "stop", (cut, complete)
        assert complete["choices"][0]["message"]["content"].strip(), complete
        rate(complete["id"], "up")
        corrected = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION, "max_tokens": 1,
                                                              "temperature": 0}).json()
        rate(corrected["id"], "down", correction="Returns are accepted within 45 days of delivery.")
        three = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION, "n": 3,
                                                          "max_tokens": 6, "temperature": 1.0, "seed": 7}).json()
        rate(three["id"], "up")  # choice 0; POST /v1/feedback has no field naming another choice yet

    store = FeedbackStore(db)
    stored = {c["id"]: c for c in store.completions()}
    assert stored[raw["id"]]["route"] == "completion" and stored[cut["id"]]["route"] == "chat"
    assert stored[raw["id"]]["finish_reason"] == raw["choices"][0]["finish_reason"]
    assert stored[cut["id"]]["finish_reason"] == cut["choices"][0]["finish_reason"]
    assert [(c["response"], c["finish_reason"]) for c in stored[three["id"]]["choices"]] == [
        (c["message"]["content"], c["finish_reason"]) for c in three["choices"]]
    store.add_feedback(three["id"], "down", choice=1)
    store.add_feedback(three["id"], "down", correction="Within 45 days.", choice=2)

    # what the answers were decides what is exported: only chat answers that finished with stop, and corrections
    finish = {(c["id"], i): ch["finish_reason"] for c in (cut, three) for i, ch in enumerate(c["choices"])}
    truncated = [key for key in ((cut["id"], 0), (three["id"], 0)) if finish[key] != "stop"]
    out = export(db, "sft", tmp_path / "sft.jsonl")
    rows = read_jsonl(tmp_path / "sft.jsonl")
    origins = {row["meta"]["origin"] for row in rows}
    assert f"feedback:{raw['id']}" not in origins  # never a raw continuation as a chat turn
    assert f"feedback:{complete['id']}" in origins  # a chat answer that finished with stop
    assert {f"feedback:{corrected['id']}", f"feedback:{three['id']}#2"} <= origins  # complete by definition
    for key in ((cut["id"], 0), (three["id"], 0)):
        assert (f"feedback:{key[0]}" in origins) == (finish[key] == "stop")
    assert len(rows) == 3 + 2 - len(truncated)
    expected = "left out: 1 raw completion"
    if truncated:
        noun = "truncated answer" if len(truncated) == 1 else "truncated answers"
        expected += f", {len(truncated)} {noun} (finish_reason length)"
    assert expected in out and "--include-completions" in out

    export(db, "sft", tmp_path / "all.jsonl", "--include-completions", "--include-truncated")
    kept = read_jsonl(tmp_path / "all.jsonl")
    assert len(kept) == 6
    [fox] = [row for row in kept if row["meta"]["origin"] == f"feedback:{raw['id']}"]
    assert fox["messages"] == [{"role": "user", "content": "The quick brown fox"},
                               {"role": "assistant", "content": raw["choices"][0]["text"]}]

    export(db, "dpo", tmp_path / "dpo.jsonl", "--include-truncated")
    pairs = {(r["meta"]["chosen_origin"], r["meta"]["origin"]) for r in read_jsonl(tmp_path / "dpo.jsonl")}
    request = f"feedback:{three['id']}"
    if three["choices"][0]["message"]["content"] != three["choices"][1]["message"]["content"]:
        assert (request, f"{request}#1") in pairs  # an up-rated choice against a down-rated one of the request
    assert (f"{request}#2", f"{request}#2") in pairs  # a correction against the answer it corrects
