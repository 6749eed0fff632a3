"""The feedback store (real SQLite in tmp_path) and its SFT/DPO exports, against hand-written rows.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_feedback.py
"""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from seektune.data.formats import to_record
from seektune.serve.feedback import MAX_TEXT_CHARS, FeedbackStore, export_feedback

Q1 = [{"role": "user", "content": "How long do I have to return something?"}]
Q2 = [
    {"role": "system", "content": "You are Lark's support assistant."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What does shipping cost?"},
]
BAD_PROMPT = [{"role": "assistant", "content": "no user turn"}]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def store(tmp_path):
    return FeedbackStore(tmp_path / "feedback.sqlite")


@pytest.fixture
def rated_db(store):
    """Six completions covering every case; the expected exports below are written out by hand."""
    store.record_completion("c1", "base", Q1, "Within a week.", None)
    store.add_feedback("c1", "down")
    store.add_feedback("c1", "down", correction="Returns are accepted within 45 days of delivery.", comment="wrong")
    store.record_completion("c2", "base", Q1, "45 days.", "The policy says 45 days.")
    store.add_feedback("c2", "up")
    store.record_completion("c3", "adapter-b", Q1, "Never.", None)
    store.add_feedback("c3", "down")
    store.record_completion("c4", "base", Q2, "It is free.", None)  # nobody rated it
    store.record_completion("c5", "base", Q2, "Standard shipping costs $4.95.", None)
    store.add_feedback("c5", "up")
    store.record_completion("c6", "base", BAD_PROMPT, "??", None)
    store.add_feedback("c6", "up")
    return store.path


def test_round_trip_keeps_every_field_and_every_feedback_row(store):
    store.record_completion("chatcmpl-1", "support", Q2, "Standard shipping costs $4.95.", "Shipping is $4.95.")
    store.add_feedback("chatcmpl-1", "down")
    store.add_feedback("chatcmpl-1", "up", comment="actually fine")
    [completion] = store.completions()
    assert {k: completion[k] for k in ("id", "model", "messages", "response", "reasoning")} == {
        "id": "chatcmpl-1", "model": "support", "messages": Q2,
        "response": "Standard shipping costs $4.95.", "reasoning": "Shipping is $4.95.",
    }
    assert [(f["rating"], f["correction"], f["comment"]) for f in completion["feedback"]] == [
        ("down", None, None), ("up", None, "actually fine")]
    assert completion["created"].endswith("+00:00")
    # the file survives a new store object (the server restarting)
    assert FeedbackStore(store.path).completions() == [completion]
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_unknown_completion_id_is_a_key_error(store):
    with pytest.raises(KeyError, match="nope"):
        store.add_feedback("nope", "up")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rating": "meh"}, "rating must be 'up' or 'down'"),
    ({"rating": "UP"}, "rating must be 'up' or 'down'"),
    ({"rating": "down", "correction": "  "}, "correction is empty"),
    ({"rating": "down", "comment": ""}, "comment is empty"),
    ({"rating": "down", "correction": "x" * (MAX_TEXT_CHARS + 1)}, "at most 20000"),
    ({"rating": "down", "correction": 42}, "must be a string"),
])
def test_bad_feedback_is_a_value_error_and_stores_nothing(store, kwargs, message):
    store.record_completion("c1", "base", Q1, "answer", None)
    with pytest.raises(ValueError, match=message):
        store.add_feedback("c1", **kwargs)
    assert store.completions()[0]["feedback"] == []
    store.add_feedback("c1", "down", correction="x" * MAX_TEXT_CHARS)  # the cap itself is fine


def test_a_completion_id_is_recorded_once(store):
    store.record_completion("c1", "base", Q1, "answer", None)
    with pytest.raises(ValueError, match="already recorded"):
        store.record_completion("c1", "base", Q1, "another", None)


def test_latest_feedback_wins_as_a_whole(store, tmp_path):
    store.record_completion("down-then-up", "base", Q1, "A", None)
    store.add_feedback("down-then-up", "down")
    store.add_feedback("down-then-up", "up")
    store.record_completion("up-then-down", "base", Q1, "B", None)
    store.add_feedback("up-then-down", "up")
    store.add_feedback("up-then-down", "down")
    store.record_completion("corrected-then-down", "base", Q1, "C", None)
    store.add_feedback("corrected-then-down", "down", correction="D")
    store.add_feedback("corrected-then-down", "down")  # the later bare rating replaces the correction
    counts = export_feedback(store.path, "sft", tmp_path / "sft.jsonl")
    assert [row["meta"]["origin"] for row in read_jsonl(tmp_path / "sft.jsonl")] == ["feedback:down-then-up"]
    assert counts["skipped"] == {"down_without_correction": 2}


def test_sft_export_exactly(rated_db, tmp_path):
    out = tmp_path / "next" / "sft.jsonl"
    counts = export_feedback(rated_db, "sft", out)
    assert read_jsonl(out) == [
        {"messages": [*Q1, {"role": "assistant", "content": "Returns are accepted within 45 days of delivery."}],
         "meta": {"origin": "feedback:c1", "model": "base"}},
        {"messages": [*Q1, {"role": "assistant", "content": "45 days.", "reasoning": "The policy says 45 days."}],
         "meta": {"origin": "feedback:c2", "model": "base"}},
        {"messages": [*Q2, {"role": "assistant", "content": "Standard shipping costs $4.95."}],
         "meta": {"origin": "feedback:c5", "model": "base"}},
    ]
    assert counts == {
        "rows": 3, "completions": 6, "used": {"correction": 1, "up_rated": 2},
        "skipped": {"down_without_correction": 1, "no_feedback": 1, "invalid_prompt:bad_role_order": 1},
    }
    assert counts["rows"] + sum(counts["skipped"].values()) == counts["completions"]
    for row in read_jsonl(out):  # what `seektune prepare` will read: accepted, unchanged
        assert to_record(row, "x", fmt="messages")["messages"] == row["messages"]
    assert [p.name for p in out.parent.iterdir()] == ["sft.jsonl"]  # no temporary file left behind


def test_dpo_export_exactly(rated_db, tmp_path):
    out = tmp_path / "dpo.jsonl"
    counts = export_feedback(rated_db, "dpo", out)
    correction = [{"role": "assistant", "content": "Returns are accepted within 45 days of delivery."}]
    up_rated = [{"role": "assistant", "content": "45 days."}]
    first_answer = [{"role": "assistant", "content": "Within a week."}]
    never = [{"role": "assistant", "content": "Never."}]

    def meta(rejected, model, kind, chosen):
        return {"origin": f"feedback:{rejected}", "model": model, "chosen_kind": kind,
                "chosen_origin": f"feedback:{chosen}", "chosen_model": "base"}

    assert read_jsonl(out) == [
        {"prompt": Q1, "chosen": correction, "rejected": first_answer, "meta": meta("c1", "base", "correction", "c1")},
        {"prompt": Q1, "chosen": correction, "rejected": never, "meta": meta("c3", "adapter-b", "correction", "c1")},
        {"prompt": Q1, "chosen": up_rated, "rejected": first_answer, "meta": meta("c1", "base", "up_rated", "c2")},
        {"prompt": Q1, "chosen": up_rated, "rejected": never, "meta": meta("c3", "adapter-b", "up_rated", "c2")},
    ]
    assert counts == {
        "rows": 4, "completions": 6, "used": {"correction": 2, "up_rated": 2},
        # c5 is up-rated but nobody down-rated an answer to its prompt
        "skipped": {"no_feedback": 1, "invalid_prompt:bad_role_order": 1, "unpaired": 1},
    }


def test_dpo_drops_pairs_of_equal_answers_and_repeated_pairs(store, tmp_path):
    store.record_completion("a", "base", Q1, "45 days.", None)
    store.add_feedback("a", "up")
    store.record_completion("b", "base", Q1, "45 days.", None)  # the same text, once liked, once not
    store.add_feedback("b", "down")
    store.record_completion("c", "base", Q1, "45 days.", None)
    store.add_feedback("c", "up")
    counts = export_feedback(store.path, "dpo", tmp_path / "dpo.jsonl")
    assert read_jsonl(tmp_path / "dpo.jsonl") == []
    assert counts["skipped"] == {"unpaired": 3}


def test_openai_content_parts_become_plain_text(store, tmp_path):
    parts = [{"role": "user", "content": [{"type": "text", "text": "How long "},
                                          {"type": "text", "text": "to return?"}]}]
    store.record_completion("c1", "base", parts, "45 days.", None)
    store.add_feedback("c1", "up")
    export_feedback(store.path, "sft", tmp_path / "sft.jsonl")
    [row] = read_jsonl(tmp_path / "sft.jsonl")
    assert row["messages"][0] == {"role": "user", "content": "How long to return?"}


def test_export_errors_are_clear(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_feedback(tmp_path / "missing.sqlite", "sft", tmp_path / "out.jsonl")
    assert not (tmp_path / "missing.sqlite").exists()  # looking did not create it
    with pytest.raises(ValueError, match="unknown export format 'kto'"):
        export_feedback(store.path, "kto", tmp_path / "out.jsonl")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(ValueError, match="not a seektune feedback database"):
        export_feedback(other, "sft", tmp_path / "out.jsonl")
    text = tmp_path / "notes.txt"
    text.write_text("not sqlite at all " * 100)
    with pytest.raises(ValueError, match="cannot read"):
        export_feedback(text, "sft", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_export_replaces_an_earlier_export(rated_db, tmp_path):
    out = tmp_path / "sft.jsonl"
    out.write_text("stale\n")
    export_feedback(rated_db, "sft", out)
    assert len(read_jsonl(out)) == 3


def test_several_threads_record_and_rate_at_once(store, tmp_path):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                cid = f"t{n}-{i}"
                store.record_completion(cid, "base", Q1, f"answer {n}.{i}", None)
                store.add_feedback(cid, "up" if i % 2 else "down", correction=None if i % 2 else f"fixed {n}.{i}")
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    completions = store.completions()
    assert len(completions) == 120 and all(len(c["feedback"]) == 1 for c in completions)
    assert export_feedback(store.path, "sft", tmp_path / "sft.jsonl")["used"] == {"correction": 60, "up_rated": 60}
