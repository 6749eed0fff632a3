"""Preference rows (trl, LLaMA-Factory, kto, seektune's record form) -> one record form, and through prepare.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_preference_formats.py
"""

from __future__ import annotations

import json

import pytest

from seektune.data import prepare
from seektune.data.clean import make_cleaner
from seektune.data.formats import FormatError, detect_format, rejected_message, to_record
from seektune.data.io import read_jsonl
from seektune.recipe import load_recipe

Q = "How long do I have to return something?"
GOOD = "Returns are accepted within 45 days of delivery."
BAD = "Within a week."


def test_trl_string_pair():
    record = to_record({"prompt": Q, "chosen": GOOD, "rejected": BAD, "category": "returns"}, "p.jsonl:1")
    assert record == {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": GOOD}],
                      "rejected": BAD, "meta": {"origin": "p.jsonl:1", "category": "returns"}}


def test_trl_conversational_pair_as_feedback_export_writes_it():
    prompt = [{"role": "system", "content": "You are Lark's support assistant."},
              {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": Q}]
    row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": GOOD}],
           "rejected": [{"role": "assistant", "content": BAD}], "meta": {"origin": "feedback:c1"}}
    record = to_record(row, "dpo.jsonl:3")
    assert record["messages"] == [*prompt, {"role": "assistant", "content": GOOD}]
    assert record["rejected"] == BAD and record["meta"] == {"origin": "dpo.jsonl:3"}


def test_trl_implicit_prompt_and_rejected_reasoning_round_trip():
    user = {"role": "user", "content": Q}
    row = {"chosen": [user, {"role": "assistant", "content": GOOD}],
           "rejected": [user, {"role": "assistant", "content": BAD, "reasoning_content": "I guessed."}]}
    record = to_record(row, "u.jsonl:1")
    assert record["messages"] == [user, {"role": "assistant", "content": GOOD}]
    assert record["rejected"] == f"<think>\nI guessed.\n</think>\n\n{BAD}"
    assert rejected_message(record) == {"role": "assistant", "content": BAD, "reasoning": "I guessed."}


def test_prompt_string_with_chosen_repeating_it():  # HuggingFaceH4/ultrafeedback_binarized's layout
    user = {"role": "user", "content": Q}
    row = {"prompt": Q, "chosen": [user, {"role": "assistant", "content": GOOD}],
           "rejected": [user, {"role": "assistant", "content": BAD}]}
    assert to_record(row, "h4:1")["messages"] == [user, {"role": "assistant", "content": GOOD}]


def test_llama_factory_pair():
    row = {"conversations": [{"from": "human", "value": Q}], "system": "Be brief.",
           "chosen": {"from": "gpt", "value": GOOD}, "rejected": {"from": "gpt", "value": BAD}}
    assert detect_format(row) == "preference"
    record = to_record(row, "lf.json:#0")
    assert [(m["role"], m["content"]) for m in record["messages"]] == [
        ("system", "Be brief."), ("user", Q), ("assistant", GOOD)]
    assert record["rejected"] == BAD


def test_kto_rows():
    good = to_record({"prompt": Q, "completion": GOOD, "label": True}, "k.jsonl:1")
    bad = to_record({"prompt": [{"role": "user", "content": Q}], "completion": BAD, "label": False}, "k.jsonl:2")
    assert good["messages"][-1] == {"role": "assistant", "content": GOOD} and good["label"] is True
    assert bad["messages"][-1] == {"role": "assistant", "content": BAD} and bad["label"] is False
    assert "rejected" not in good


@pytest.mark.parametrize("row", [
    {"prompt": Q, "chosen": GOOD, "rejected": BAD},
    {"prompt": Q, "completion": GOOD, "label": False},
])
def test_record_form_reads_back_unchanged(row):
    record = to_record(row, "x.jsonl:1")
    written = json.loads(json.dumps(record))  # a split line, as prepare writes it
    assert to_record(written, "train.jsonl:1") == {**record, "meta": {"origin": "train.jsonl:1"}}


def test_classification_and_sft_rows_are_not_preference_rows():
    assert detect_format({"text": "my parcel never came", "label": "shipping"}) == "text"
    assert detect_format({"messages": [{"role": "user", "content": "q"}]}) == "messages"


@pytest.mark.parametrize(("row", "reason", "words"), [
    ({"prompt": Q, "chosen": GOOD}, "missing_field", "'rejected'"),
    ({"prompt": Q, "rejected": BAD}, "missing_field", "'chosen'"),
    ({"prompt": Q, "chosen": GOOD, "rejected": GOOD}, "same_answers", "same answer"),
    ({"prompt": Q, "chosen": GOOD, "rejected": "  "}, "empty_rejected", "empty rejected"),
    ({"prompt": Q, "chosen": "", "rejected": BAD}, "empty_answer", "empty assistant"),
    ({"prompt": Q, "completion": GOOD, "label": "yes"}, "wrong_type", "true (desirable) or false"),
    ({"prompt": Q, "completion": GOOD, "label": 1}, "wrong_type", "got 1"),
    ({"prompt": Q, "completion": GOOD}, "missing_field", "'label'"),
    ({"chosen": GOOD, "rejected": BAD}, "missing_field", "'prompt'"),
    ({"prompt": 5, "chosen": GOOD, "rejected": BAD}, "wrong_type", "'prompt' must be"),
    ({"prompt": Q, "chosen": [{"role": "user", "content": "hi"}], "rejected": BAD}, "not_an_answer", "'chosen'"),
    ({"prompt": Q, "chosen": {"from": "gpt"}, "rejected": BAD}, "missing_field", "needs 'role'"),
    ({"chosen": [{"role": "user", "content": Q}, {"role": "assistant", "content": GOOD}],
      "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": BAD}]},
     "prompt_mismatch", "differ"),
    ({"question": Q, "answer": GOOD}, "missing_field", "chosen' and 'rejected'"),  # format: preference forced
])
def test_bad_preference_rows_say_why(row, reason, words):
    with pytest.raises(FormatError) as caught:
        to_record(row, "bad.jsonl:1", fmt="preference")
    assert caught.value.reason == reason and words in caught.value.detail


def test_cleaning_reaches_the_rejected_answer():
    cleaner = make_cleaner(["strip_html", "whitespace"])
    record = to_record({"prompt": Q, "chosen": GOOD, "rejected": "<b>Within</b>   a week."}, "p:1")
    assert cleaner(record)["rejected"] == "Within a week."
    assert cleaner.changed == {"strip_html": 1, "whitespace": 1}


def _prepare(tmp_path, rows_or_lines, **data):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in rows_or_lines),
                    encoding="utf-8")
    recipe = load_recipe(None, [f"data.paths=[{path}]", f"output_dir={tmp_path / 'run'}", "model=nonexistent-model",
                                "data.split.train=1", "data.split.val=0", "data.split.test=0",
                                *[f"data.{k}={v}" for k, v in data.items()]])
    run_dir = prepare.run(recipe)
    return read_jsonl(run_dir / "data" / "train.jsonl"), prepare.rejects_of(run_dir)


def test_prepare_keeps_pairs_rejects_bad_rows_with_their_line_and_dedups_on_the_rejected_too(tmp_path):
    lines = [
        {"prompt": Q, "chosen": GOOD, "rejected": BAD},
        {"prompt": Q, "chosen": GOOD, "rejected": "Never, sorry."},  # same prompt and chosen: still a new pair
        {"prompt": Q, "chosen": GOOD},  # line 3: no rejected answer
        {"prompt": Q, "chosen": GOOD, "rejected": BAD},  # line 4: an exact duplicate of line 1
        {"prompt": "What does shipping cost?", "completion": "Standard shipping costs $4.95.", "label": "true"},
        {"prompt": "What does shipping cost?", "chosen": "It costs $4.95.", "rejected": "It costs <i>$4.95.</i>"},
        '{"prompt": "broken',
    ]
    kept, rejects = _prepare(tmp_path, lines, clean="[strip_html]", **{"dedup.near": "false"})
    assert sorted(r["rejected"] for r in kept) == sorted([BAD, "Never, sorry."])
    assert all(r["messages"][-1]["content"] == GOOD for r in kept)
    assert [(r["origin"], r["step"], r["reason"]) for r in rejects] == [
        ("prefs.jsonl:3", "format", "missing_field"),
        ("prefs.jsonl:5", "format", "wrong_type"),
        ("prefs.jsonl:7", "read", "invalid_json"),
        ("prefs.jsonl:6", "filter", "same_answers"),  # equal once cleaning removed the markup
        ("prefs.jsonl:4", "dedup", "exact_duplicate"),
    ]


def test_prepare_keeps_kto_labels(tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer number {i}.", "label": i % 2 == 0} for i in range(4)]
    kept, rejects = _prepare(tmp_path, rows)
    assert not rejects
    assert sorted((r["messages"][-1]["content"], r["label"]) for r in kept) == [
        ("Answer number 0.", True), ("Answer number 1.", False),
        ("Answer number 2.", True), ("Answer number 3.", False)]


def test_a_category_label_on_a_conversation_stays_sft():
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": "billing"}
    assert detect_format(row) == "messages"
    assert detect_format({**row, "label": True}) == "preference"
