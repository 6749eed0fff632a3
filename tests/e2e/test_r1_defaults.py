"""R1 usage defaults end to end, on a tiny Qwen2 whose tokenizer carries the DeepSeek-R1 template: eval and serve
sample at temperature 0.6 / top-p 0.95 unless asked otherwise; greedy when asked, with a warning."""

from __future__ import annotations

import json
import shutil

import pytest

from seektune.models.templates import DEEPSEEK_R1
from tests.conftest import FAQ_ROWS, _tokenizer_into, cli


@pytest.fixture(scope="module")
def r1_qwen2(tiny_qwen2, tiny_tokenizer_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("r1-qwen2") / "model"
    shutil.copytree(tiny_qwen2, path)
    _tokenizer_into(path, tiny_tokenizer_dir, chat_template=DEEPSEEK_R1)
    return path


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["question"]},
                                                     {"role": "assistant", "content": r["answer"]}]},
                                       ensure_ascii=False) + "\n" for r in FAQ_ROWS[:4]), encoding="utf-8")
    return path


def test_eval_samples_a_reasoning_model_as_deepseek_recommends(r1_qwen2, rows, tmp_path, caplog):
    cli("eval", r1_qwen2, "--data", rows, "--out", tmp_path / "a", "max_new_tokens=4")
    decoding = json.loads((tmp_path / "a" / "eval" / "metrics.json").read_text())["decoding"]
    assert decoding == {"temperature": 0.6, "top_p": 0.95, "reasoning_model": True}
    with caplog.at_level("WARNING"):
        cli("eval", r1_qwen2, "--data", rows, "--out", tmp_path / "b", "max_new_tokens=4", "temperature=0")
    assert json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["decoding"]["temperature"] == 0.0
    assert "greedy decoding of a reasoning" in caplog.text


def test_a_served_reasoning_model_samples_unless_the_request_says(r1_qwen2, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from seektune.serve.app import ServeSettings, create_app

    app = create_app(ServeSettings(target=str(r1_qwen2), feedback_db=tmp_path / "f.sqlite"))
    engine, seen = app.state.serve.engine, []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda adapter, ids, params: (seen.append(params), submit(adapter, ids,
                                                                                                   params))[1])
    body = {"model": app.state.serve.catalog.default, "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.post("/v1/chat/completions", json={**body, "temperature": 0}).status_code == 200
    assert (seen[0].temperature, seen[0].top_p) == (0.6, 0.95)
    assert seen[1].temperature == 0
