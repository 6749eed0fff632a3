"""Training rows with retrieved context (data.rag, seektune/rag/context.py)."""

import re
from collections import Counter

import pytest

from seektune.rag import Index
from seektune.rag.context import add_retrieved_context
from seektune.recipe.data import RagContextSpec
from seektune.recipe.synth import REFUSAL_EN
from tests.unit.test_rag_index import HashEmbedder, _docs


def _row(question, answer, facts, origin="faq.jsonl:1", id_=None):
    return {"messages": [{"role": "system", "content": "You are the store's assistant."},
                         {"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "meta": {"origin": origin, "facts": facts, "id": id_ or question}}


@pytest.fixture
def index(tmp_path):
    folder = _docs(tmp_path)
    (folder / "more.md").write_text("# Gift cards\n\nGift cards never expire and carry no fees.\n\n"
                                    "# Hours\n\nSupport is open 7am to 9pm Central.\n", encoding="utf-8")
    with Index.create(tmp_path / "idx", embedder=HashEmbedder(), chunk_tokens=40, overlap=0) as built:
        built.add([folder])
        yield built


def _numbers(content):
    return re.findall(r"^\[(\d+)\] (\S+)", content, re.M)


def test_oracle_passage_among_distractors_and_the_answer_cites_its_number(index):
    spec = RagContextSpec(index="unused", k=3, distractors=2, oracle_p=1.0)
    rows = [_row("How much is express shipping?", "It costs $14.50 per order.", ["$14.50"])]
    out, counts = add_retrieved_context(rows, spec, index)
    user, answer = out[0]["messages"][1]["content"], out[0]["messages"][2]["content"]
    passages = dict(_numbers(user))
    assert len(passages) == 3 and counts == Counter(oracle=1)
    number = re.search(r"\[(\d+)\]$", answer).group(1)
    assert passages[number] == "shipping.md#c1" == out[0]["meta"]["rag"]["oracle"]
    assert sum("$14.50" in index.chunk(cid).text for cid in passages.values()) == 1  # distractors do not hold it
    assert user.endswith("Question: How much is express shipping?")
    assert rows[0]["messages"][1]["content"] == "How much is express shipping?"  # the input is not modified


def test_without_the_oracle_the_answer_becomes_the_refusal(index):
    spec = RagContextSpec(index="unused", k=3, distractors=2, oracle_p=0.0)
    out, counts = add_retrieved_context([_row("When do points expire?", "After 15 months.", ["15 months"])], spec,
                                        index)
    user, answer = out[0]["messages"][1]["content"], out[0]["messages"][2]["content"]
    assert answer == REFUSAL_EN and counts == Counter(without_answer=1)
    assert all("15 months" not in index.chunk(cid).text for _, cid in _numbers(user))
    kept, _ = add_retrieved_context([_row("When do points expire?", "After 15 months.", ["15 months"])],
                                    spec.model_copy(update={"without_answer": "answer"}), index)
    assert kept[0]["messages"][2]["content"] == "After 15 months."


def test_oracle_share_follows_oracle_p_and_is_the_same_on_a_rerun(index):
    spec = RagContextSpec(index="unused", k=2, distractors=1, oracle_p=0.7, seed=3)
    rows = [_row(f"Express shipping price, question {i}?", "$14.50 per order.", ["$14.50"]) for i in range(200)]
    out, counts = add_retrieved_context(rows, spec, index)
    assert 120 <= counts["oracle"] <= 160 and counts["oracle"] + counts["without_answer"] == 200
    again, _ = add_retrieved_context(rows, spec, index)
    assert again == out


def test_rows_whose_answer_no_chunk_holds_stay_plain_and_refusals_get_distractors(index):
    spec = RagContextSpec(index="unused", k=2, distractors=1, oracle_p=1.0)
    rows = [_row("Do you sell boats?", "Yes, the Larkspur canoe costs $900.", ["$900"]),
            _row("Who won the match?", REFUSAL_EN, []),
            {"messages": [{"role": "user", "content": "orphan"}], "meta": {}}]
    out, counts = add_retrieved_context(rows, spec, index)
    assert out[0] == rows[0] and counts["no_source"] == 1 and counts["no_question"] == 1
    assert _numbers(out[1]["messages"][1]["content"]) and out[1]["messages"][2]["content"] == REFUSAL_EN


def test_origin_chunk_is_the_oracle_when_the_index_holds_it(index):
    spec = RagContextSpec(index="unused", k=2, distractors=1, oracle_p=1.0, cite=False)
    row = _row("What do returns get?", "An authorisation number starting with RTN.", [], origin="shipping.md#c2")
    out, counts = add_retrieved_context([row], spec, index)
    assert out[0]["meta"]["rag"]["oracle"] == "shipping.md#c2" and counts["oracle"] == 1
    assert out[0]["messages"][2]["content"] == row["messages"][2]["content"]  # cite: false
