"""The scores of `seektune eval --rag` (evaluate/metrics.py, evaluate/retrieval.py): citations, faithfulness,
refusals, retrieval recall, and the example out-of-scope questions."""

import json
from pathlib import Path

import pytest

from seektune.evaluate.metrics import answer_claims, citation_correct, cited_passages, faithfulness, is_refusal
from seektune.evaluate.retrieval import recall_rows, source_chunks
from seektune.rag.prompt import grounded as with_retrieval
from seektune.rag.index import HashingEmbedder, Hit, Index
from seektune.rag.prompt import INSTRUCTIONS
from seektune.recipe.synth import REFUSAL_EN, REFUSAL_ZH

EXAMPLE = Path(__file__).parents[2] / "examples" / "customer-service"


@pytest.mark.parametrize("answer, cited", [
    ("Returns take 45 days [1].", [1]),
    ("See [2,3] and [2, 3].", [2, 3]),
    ("见【1】和［4］。", [1, 4]),
    ("Both [1][2] say so; also [1-3].", [1, 2, 3]),
    ("退货期限是45天【1，2】、[3、1]", [1, 2, 3]),
    ("No citation here, only a list [a] and a year 2024.", []),
])
def test_citations_are_read_in_every_spelling(answer, cited):
    assert cited_passages(answer) == cited


def test_claims_are_facts_then_numbers_outside_them_and_citations_are_not_claims():
    claims = answer_claims("Standard shipping costs $4.95 [1] and arrives in 4 to 7 business days [2]. "
                           "Call 1-800-555-0143.")
    assert claims == ["$4.95", "7 business days", "1-800-555-0143", "4"]
    assert answer_claims("Please contact support [1].") == []


def test_faithfulness_is_the_share_of_claims_found_in_the_passages():
    passages = ["Standard shipping costs $4.95 per order, free over $65.", "Express shipping costs $14.50."]
    # claims: $4.95 (found), $65 (found), 3 days (not in any passage) -> 2 / 3
    assert faithfulness("Standard shipping is $4.95 [1], free over $65, and takes 3 days.", passages) == \
        pytest.approx(2 / 3)
    assert faithfulness("Express is $14.50.", passages) == 1.0
    assert faithfulness("It costs 4.50.", passages) == 0.0  # a bare number must be one of theirs, not inside 14.50
    assert faithfulness("Please ask our team.", passages) is None  # nothing to check
    assert faithfulness("退货期限是45天。", ["退货期限是45天，签收后计算。"]) == 1.0


def test_citation_accuracy_asks_whether_the_cited_passages_hold_the_reference_facts():
    passages = ["Returns are accepted within 45 days.", "Standard shipping costs $4.95."]
    assert citation_correct("You have 45 days [1].", passages, ["45 days"]) is True
    assert citation_correct("You have 45 days [2].", passages, ["45 days"]) is False  # cites the wrong passage
    assert citation_correct("45 days and $4.95 [1, 2].", passages, ["45 days", "$4.95"]) is True  # together
    assert citation_correct("45 days and $4.95 [1].", passages, ["45 days", "$4.95"]) is False
    assert citation_correct("You have 45 days.", passages, ["45 days"]) is None  # cites nothing
    assert citation_correct("You have 45 days [7].", passages, ["45 days"]) is None  # no such passage
    assert citation_correct("You have 45 days [1].", passages, []) is None  # nothing to check against


@pytest.mark.parametrize("answer", [
    REFUSAL_EN, REFUSAL_ZH,
    "I cannot find that in the passages.", "Sorry, I don\u2019t know.", "I couldn't find any information on that.",
    "The passages do not mention a student discount.", "That is not covered in our policies.",
    "I have no information about that.", "抱歉，资料中没有提到这一点。", "我不知道。", "找不到相关信息。",
    "对不起，我无法回答这个问题。", "没有关于学生折扣的信息。",
])
def test_refusals_are_detected_in_english_and_chinese(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize("answer", [
    "Returns are accepted within 45 days of delivery [1].", "Standard shipping costs $4.95.",
    "There is no restocking fee on small items.", "You can't return Last Light items: they are final sale.",
    "退货期限是45天。", "不满120美元的订单不能使用 Sprig Pay。",
])
def test_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


def test_the_prompt_asks_for_what_the_detector_reads():
    # the retrieval prompt tells a model to "say that you cannot find it" / 找不到: saying just that is a refusal
    assert is_refusal("I cannot find it.") and "cannot find" in INSTRUCTIONS["en"]
    assert is_refusal("找不到。") and "找不到" in INSTRUCTIONS["zh"]


def _hit(chunk_id: str, text: str = "") -> Hit:
    return Hit(chunk_id, chunk_id.split("#")[0], 0, None, None, text, 0.0)


def test_recall_counts_rows_by_their_source_chunk_else_by_a_chunk_holding_their_facts(tmp_path):
    with Index.create(tmp_path / "idx", embedder=HashingEmbedder(64)) as index:
        index.add_chunks("policy.md", ["Returns are accepted within 45 days.", "Standard shipping costs $4.95.",
                                       "LarkCare adds 3 years."])
        c1, c2, c3 = index.chunk_ids()
        rows = [
            {"meta": {"origin": c2}},                                   # names its chunk; it was not retrieved
            {"meta": {"origin": c2}},                                   # and here it was
            {"meta": {"origin": "faq.jsonl:3", "facts": ["$4.95"]}},    # no chunk named: the chunk with its facts
            {"meta": {"facts": ["45天"]}},                              # facts in no chunk: not counted
            {"meta": {"origin": "faq.jsonl:4"}},                        # neither: not counted
            {"meta": {"group": f"{c1}+{c3}"}},                          # synthesised rows name chunks in group
        ]
        hits = [[_hit(c1)], [_hit(c1), _hit(c2)], [_hit(c2)], [_hit(c1), _hit(c2), _hit(c3)], [_hit(c1)], [_hit(c3)]]
        assert recall_rows(rows, hits, index) == [0.0, 1.0, 1.0, None, None, 1.0]
        assert source_chunks({"meta": {"origin": "faq.jsonl:3", "group": "returns"}}, set(index.chunk_ids())) == set()


def test_only_the_question_turn_gets_the_passages():
    messages = [{"role": "system", "content": "You are support."}, {"role": "user", "content": "Earlier?"},
                {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "Shipping cost?"},
                {"role": "assistant", "content": "$4.95"}]
    out = with_retrieval(messages, [_hit("policy.md#c2", "Standard shipping costs $4.95.")])
    assert out[:3] == messages[:3] and out[4] == messages[4]
    assert out[3]["content"].startswith(INSTRUCTIONS["en"]) and out[3]["content"].endswith("Question: Shipping cost?")
    assert "[1] policy.md#c2\nStandard shipping costs $4.95." in out[3]["content"]
    assert messages[3]["content"] == "Shipping cost?"  # the row itself is left alone


def test_the_example_out_of_scope_questions_are_questions_the_handbook_does_not_answer():
    rows = [json.loads(line) for line in (EXAMPLE / "data" / "out_of_scope.jsonl").read_text("utf-8").splitlines()]
    languages = [row["id"].split("-")[1] for row in rows]
    assert languages.count("en") >= 20 and languages.count("zh") >= 8
    assert len({row["question"] for row in rows}) == len(rows)
    assert all(row["answer"] == (REFUSAL_ZH if lang == "zh" else REFUSAL_EN) for row, lang in zip(rows, languages))
    assert all(not row["facts"] and row["question"].rstrip().endswith(("?", "？")) for row in rows)
