"""Decoding with a glossary's forbidden variants made impossible (seektune.glossary.ForbiddenVariants).

A property test over prompts: the constrained model never emits a variant, and where the unconstrained
greedy answer never held one, the constrained answer is the same tokens. The variant is chosen as the
string the tiny model emits most often, so the constraint has work to do.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seektune.data.render import prompt_ids
from seektune.glossary import ForbiddenVariants
from seektune.models.load import load_model

WORDS = ["return", "shipping", "days", "warranty", "退货", "多久", "cost", "45", "LarkCare", "what", "is", "the"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama):
    loaded = load_model(str(tiny_llama))
    return loaded.model.eval(), loaded.tokenizer


def _generate(model, tokenizer, question, constraint=None):
    ids = torch.tensor([prompt_ids(tokenizer, [{"role": "user", "content": question}])])
    extra = {"logits_processor": [constraint.logits_processor(ids.shape[1])]} if constraint else {}
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, **extra)
    new = out[0, ids.shape[1]:].tolist()
    return new, tokenizer.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def variant(model_and_tokenizer):
    """The two-character string most common in the model's own answers to a few questions."""
    model, tokenizer = model_and_tokenizer
    counts = Counter()
    for question in ["What is the return window?", "退货期限是多久？", "shipping cost", "warranty"]:
        text = _generate(model, tokenizer, question)[1]
        pairs = (text[i:i + 2] for i in range(len(text) - 1))  # real text: no broken bytes, controls or spaces
        counts.update(p for p in pairs if all(c.isprintable() and not c.isspace() and c != "\ufffd" for c in p))
    return counts.most_common(1)[0][0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
def test_a_forbidden_variant_is_never_emitted_and_other_answers_are_unchanged(model_and_tokenizer, variant, words):
    model, tokenizer = model_and_tokenizer
    question = " ".join(words)
    constraint = ForbiddenVariants(tokenizer, [variant])
    free_ids, free_text = _generate(model, tokenizer, question)
    kept_ids, kept_text = _generate(model, tokenizer, question, constraint)
    assert variant not in kept_text
    if variant not in free_text:
        assert kept_ids == free_ids


def test_answers_that_held_the_variant_lose_it(model_and_tokenizer, variant):
    model, tokenizer = model_and_tokenizer
    constraint = ForbiddenVariants(tokenizer, [variant])
    held = [q for q in ["What is the return window?", "退货期限是多久？", "shipping cost", "warranty"]
            if variant in _generate(model, tokenizer, q)[1]]
    assert held  # the constraint had something to remove
    for question in held:
        assert variant not in _generate(model, tokenizer, question, constraint)[1]


def test_eval_and_chat_enforce_a_glossary_file_and_count_term_errors(tmp_path, tiny_llama):
    import json

    from tests.conftest import FAQ_ROWS, cli

    faq_file = tmp_path / "faq.jsonl"
    faq_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["question"]},
                                                         {"role": "assistant", "content": r["answer"]}]},
                                           ensure_ascii=False) + "\n" for r in FAQ_ROWS), encoding="utf-8")

    cli("eval", tiny_llama, "--data", faq_file, "--out", tmp_path / "free")
    answers = [json.loads(line)["tuned"] for line in (tmp_path / "free" / "eval" / "samples.jsonl").open()]
    pairs = Counter(a[i:i + 2] for a in answers for i in range(len(a) - 1))
    variant = next(p for p, _ in pairs.most_common() if all(c.isprintable() and not c.isspace()
                                                                and c != "\ufffd" for c in p) and p not in "定金")
    (tmp_path / "g.csv").write_text(f"term,forbidden\n定金,{variant}\n", encoding="utf-8")
    cli("eval", tiny_llama, "--data", faq_file, "--out", tmp_path / "kept", "--glossary", tmp_path / "g.csv")
    metrics = json.loads((tmp_path / "kept" / "eval" / "metrics.json").read_text())
    assert metrics["glossary_enforced"] and metrics["tuned"]["term_errors"] == 0.0
    kept = [json.loads(line)["tuned"] for line in (tmp_path / "kept" / "eval" / "samples.jsonl").open()]
    assert sum(variant in a for a in answers) > 0 and not any(variant in a for a in kept)
    question = FAQ_ROWS[0]["question"]
    result = cli("chat", tiny_llama, "-m", question, "--glossary", tmp_path / "g.csv", "--max-new-tokens", "16")
    assert variant not in result.output
    (tmp_path / "terms.txt").write_text("定金\n", encoding="utf-8")
    result = cli("eval", tiny_llama, "--data", faq_file, "--out", tmp_path / "x", "--glossary", tmp_path / "terms.txt",
                 exit_code=2)
    assert "lists no forbidden variants" in result.output


def test_a_served_model_never_sends_a_forbidden_variant(tmp_path, tiny_llama):
    from fastapi.testclient import TestClient

    from seektune.serve.app import ServeSettings, create_app

    body = {"max_tokens": 24, "temperature": 0, "messages": [{"role": "user", "content": "What is the return window?"}]}

    def ask(app, client):
        reply = client.post("/v1/chat/completions", json={**body, "model": app.state.serve.catalog.default})
        assert reply.status_code == 200
        text = reply.json()["choices"][0]["message"]["content"]
        return text.replace("<think>", "").replace("</think>", "")  # the tiny model emits tags at random

    app = create_app(ServeSettings(target=str(tiny_llama), feedback_db=tmp_path / "a.sqlite"))
    with TestClient(app) as client:
        free = ask(app, client)
    pairs = Counter(free[i:i + 2] for i in range(len(free) - 1))
    variant = next(p for p, _ in pairs.most_common() if p.isalnum())
    (tmp_path / "g.yaml").write_text(f"- {{term: 定金, forbidden: [{json.dumps(variant)}]}}\n", encoding="utf-8")
    app = create_app(ServeSettings(target=str(tiny_llama), feedback_db=tmp_path / "b.sqlite",
                                   glossary=tmp_path / "g.yaml"))
    with TestClient(app) as client:
        kept = ask(app, client)
    assert variant in free and variant not in kept
