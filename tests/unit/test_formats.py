import pytest

from seektune.data.formats import FormatError, detect_format, to_record


def roles(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_alpaca_joins_instruction_and_input():
    row = {"instruction": "Translate", "input": "hello", "output": "bonjour", "system": "Be brief."}
    record = to_record(row, "a.jsonl:1")
    assert roles(record) == [("system", "Be brief."), ("user", "Translate\n\nhello"), ("assistant", "bonjour")]
    assert record["meta"] == {"origin": "a.jsonl:1"}


def test_sharegpt_maps_speakers():
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                             {"from": "human", "value": "bye"}, {"from": "gpt", "value": "ciao"}]}
    assert roles(to_record(row, "s.json:#0")) == [("user", "hi"), ("assistant", "hello"), ("user", "bye"),
                                                   ("assistant", "ciao")]


def test_openai_messages_keep_meta_fields():
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
           "category": "returns", "facts": ["45 days"], "ignored": 1}
    record = to_record(row, "m.jsonl:3")
    assert roles(record) == [("user", "q"), ("assistant", "a")]
    assert record["meta"] == {"origin": "m.jsonl:3", "category": "returns", "facts": ["45 days"]}


def test_columns_mapping_for_other_field_names():
    row = {"query": "q", "response": "a", "sys": "s"}
    record = to_record(row, "c.csv:2", columns={"user": "query", "assistant": "response", "system": "sys"})
    assert roles(record) == [("system", "s"), ("user", "q"), ("assistant", "a")]


def test_r1_think_block_becomes_reasoning():
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nIt is 4."}]}
    answer = to_record(row, "r.jsonl:1")["messages"][-1]
    assert answer == {"role": "assistant", "content": "It is 4.", "reasoning": "2 plus 2 is 4."}


def test_r1_reasoning_field_in_alpaca_and_messages():
    alpaca = to_record({"instruction": "q", "output": "a", "reasoning": "because"}, "x:1")
    assert alpaca["messages"][-1]["reasoning"] == "because"
    msgs = to_record({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a", "reasoning_content": "r"}]}, "x:2")
    assert msgs["messages"][-1]["reasoning"] == "r"


def test_system_prompt_added_only_when_missing():
    record = to_record({"instruction": "q", "output": "a"}, "x:1", system_prompt="S")
    assert record["messages"][0] == {"role": "system", "content": "S"}
    record = to_record({"instruction": "q", "output": "a", "system": "own"}, "x:1", system_prompt="S")
    assert record["messages"][0]["content"] == "own"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"instruction": "q"}, "missing_field"),
        ({"instruction": "q", "output": 3}, "wrong_type"),
        ({"instruction": "q", "output": "   "}, "empty_answer"),
        ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}, "bad_role_order"),
        ({"messages": [{"role": "user", "content": "q"}]}, "odd_turn_count"),
        ({"messages": [{"role": "robot", "content": "q"}]}, "unknown_role"),
        ({"body": "just text"}, "unknown_format"),
        ({"text": "  "}, "empty_text"),
        ({"instruction": "q", "output": "a", "facts": 5}, "wrong_type"),
    ],
)
def test_bad_rows_raise_with_reason(row, reason):
    with pytest.raises(FormatError) as info:
        to_record(row, "bad.jsonl:9")
    assert info.value.reason == reason


def test_detect_format():
    assert detect_format({"messages": []}) == "messages"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"instruction": "", "output": ""}) == "alpaca"
    assert detect_format({"q": 1}, {"user": "q", "assistant": "a"}) == "columns"


def test_text_rows_stay_text_for_continued_pretraining():
    record = to_record({"text": "Larkspur ships from Dubuque.", "category": "docs"}, "notes.jsonl:1")
    assert record == {"text": "Larkspur ships from Dubuque.", "meta": {"origin": "notes.jsonl:1", "category": "docs"}}
