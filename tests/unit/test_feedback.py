"""The feedback store (real SQLite in tmp_path) and its SFT/DPO exports, against hand-written rows.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_feedback.py
"""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from seektune.data.formats import to_record
from seektune.serve.feedback import MAX_TEXT_CHARS, FeedbackStore, StoredChoice, export_feedback, export_notes

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
    """Six chat completions (finish_reason stop) covering every case; the expected exports are written by hand."""
    store.record_completion("c1", "base", Q1, "Within a week.", None, "stop")
    store.add_feedback("c1", "down")
    store.add_feedback("c1", "down", correction="Returns are accepted within 45 days of delivery.", comment="wrong")
    store.record_completion("c2", "base", Q1, "45 days.", "The policy says 45 days.", "stop")
    store.add_feedback("c2", "up")
    store.record_completion("c3", "adapter-b", Q1, "Never.", None, "stop")
    store.add_feedback("c3", "down")
    store.record_completion("c4", "base", Q2, "It is free.", None, "stop")  # nobody rated it
    store.record_completion("c5", "base", Q2, "Standard shipping costs $4.95.", None, "stop")
    store.add_feedback("c5", "up")
    store.record_completion("c6", "base", BAD_PROMPT, "??", None, "stop")
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
        "rows": 3, "completions": 6, "choices": 6, "used": {"correction": 1, "up_rated": 2},
        "skipped": {"down_without_correction": 1, "no_feedback": 1, "invalid_prompt:bad_role_order": 1},
        "left_out": {}, "unknown_finish_reason": 0,
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
        "rows": 4, "completions": 6, "choices": 6, "used": {"correction": 2, "up_rated": 2},
        # c5 is up-rated but nobody down-rated an answer to its prompt
        "skipped": {"no_feedback": 1, "invalid_prompt:bad_role_order": 1, "unpaired": 1},
        "left_out": {}, "unknown_finish_reason": 0,
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


# ---------------------------------------------------------------- route, finish reason, every choice

FOX = [{"role": "user", "content": "The quick brown fox"}]  # how a /v1/completions prompt is stored


def test_a_raw_completion_rated_up_is_left_out_unless_asked(store, tmp_path):
    store.record_completion("cmpl-1", "base", FOX, " with a quick brown bear.", None, "stop", route="completion")
    store.add_feedback("cmpl-1", "up")
    store.record_completion("chatcmpl-1", "base", Q1, "45 days.", None, "stop", route="chat")
    store.add_feedback("chatcmpl-1", "up")
    assert [c["route"] for c in store.completions()] == ["completion", "chat"]

    counts = export_feedback(store.path, "sft", tmp_path / "sft.jsonl")
    assert [row["meta"]["origin"] for row in read_jsonl(tmp_path / "sft.jsonl")] == ["feedback:chatcmpl-1"]
    assert counts["left_out"] == {"raw_completion": 1} and counts["skipped"] == {}
    assert counts["rows"] + sum(counts["skipped"].values()) + sum(counts["left_out"].values()) == counts["choices"]
    assert export_notes(counts) == ["left out: 1 raw completion; --include-completions to keep them"]

    kept = export_feedback(store.path, "sft", tmp_path / "all.jsonl", include_completions=True)
    assert kept["rows"] == 2 and kept["left_out"] == {} and export_notes(kept) == []
    assert read_jsonl(tmp_path / "all.jsonl")[0]["messages"] == [
        *FOX, {"role": "assistant", "content": " with a quick brown bear."}]


def test_a_length_truncated_answer_is_left_out_unless_asked_and_a_correction_of_one_is_kept(store, tmp_path):
    store.record_completion("cut", "base", Q1, "Returns are accepted within", None, "length")
    store.add_feedback("cut", "up")
    store.record_completion("cut-corrected", "base", Q1, "Returns are", None, "length")
    store.add_feedback("cut-corrected", "down", correction="Returns are accepted within 45 days.")
    store.record_completion("raw", "base", FOX, " jumps", None, "length", route="completion")
    store.add_feedback("raw", "up")

    counts = export_feedback(store.path, "sft", tmp_path / "sft.jsonl")
    [row] = read_jsonl(tmp_path / "sft.jsonl")
    assert row["messages"][-1]["content"] == "Returns are accepted within 45 days."  # complete by definition
    assert counts["used"] == {"correction": 1} and counts["left_out"] == {"truncated": 1, "raw_completion": 1}
    assert export_notes(counts) == [
        "left out: 1 truncated answer (finish_reason length), 1 raw completion; "
        "--include-truncated / --include-completions to keep them"]

    kept = export_feedback(store.path, "sft", tmp_path / "kept.jsonl", include_truncated=True)
    assert kept["used"] == {"up_rated": 1, "correction": 1} and kept["left_out"] == {"raw_completion": 1}
    assert read_jsonl(tmp_path / "kept.jsonl")[0]["messages"][-1]["content"] == "Returns are accepted within"
    both = export_feedback(store.path, "sft", tmp_path / "both.jsonl", include_truncated=True,
                           include_completions=True)
    assert both["rows"] == 3 and both["left_out"] == {}

    # DPO: the truncated answers are on neither side of a pair; kept when asked
    dpo = export_feedback(store.path, "dpo", tmp_path / "dpo.jsonl")
    assert dpo["rows"] == 0 and dpo["left_out"] == {"raw_completion": 1, "truncated": 2}
    dpo = export_feedback(store.path, "dpo", tmp_path / "dpo.jsonl", include_truncated=True)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in read_jsonl(tmp_path / "dpo.jsonl")] == [
        ("Returns are accepted within", "Returns are"), ("Returns are accepted within 45 days.", "Returns are")]


def test_every_choice_of_an_n3_request_is_stored_rated_and_paired(store, tmp_path):
    store.record_completion("chatcmpl-3", "base", Q1, "45 days.", None, "stop",
                            more_choices=[StoredChoice("Within a week.", None, "stop"),
                                          StoredChoice("Never.", "I am not sure.", "stop")])
    store.add_feedback("chatcmpl-3", "up", choice=0)
    store.add_feedback("chatcmpl-3", "down", choice=1)
    store.add_feedback("chatcmpl-3", "down", correction="Within 45 days of delivery.", choice=2)
    with pytest.raises(KeyError, match="has no choice 3"):
        store.add_feedback("chatcmpl-3", "up", choice=3)
    with pytest.raises(ValueError, match="choice must be"):
        store.add_feedback("chatcmpl-3", "up", choice=-1)
    [stored] = store.completions()
    assert stored["choices"] == [
        {"index": 0, "response": "45 days.", "reasoning": None, "finish_reason": "stop"},
        {"index": 1, "response": "Within a week.", "reasoning": None, "finish_reason": "stop"},
        {"index": 2, "response": "Never.", "reasoning": "I am not sure.", "finish_reason": "stop"},
    ]
    assert [(f["choice"], f["rating"]) for f in stored["feedback"]] == [(0, "up"), (1, "down"), (2, "down")]

    sft = export_feedback(store.path, "sft", tmp_path / "sft.jsonl")
    assert [(r["meta"]["origin"], r["messages"][-1]["content"]) for r in read_jsonl(tmp_path / "sft.jsonl")] == [
        ("feedback:chatcmpl-3", "45 days."), ("feedback:chatcmpl-3#2", "Within 45 days of delivery.")]
    assert sft["completions"] == 1 and sft["choices"] == 3 and sft["skipped"] == {"down_without_correction": 1}

    dpo = export_feedback(store.path, "dpo", tmp_path / "dpo.jsonl")
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["meta"]["chosen_origin"], r["meta"]["origin"])
             for r in read_jsonl(tmp_path / "dpo.jsonl")]
    assert pairs == [
        ("45 days.", "Within a week.", "feedback:chatcmpl-3", "feedback:chatcmpl-3#1"),
        ("45 days.", "Never.", "feedback:chatcmpl-3", "feedback:chatcmpl-3#2"),
        ("Within 45 days of delivery.", "Within a week.", "feedback:chatcmpl-3#2", "feedback:chatcmpl-3#1"),
        ("Within 45 days of delivery.", "Never.", "feedback:chatcmpl-3#2", "feedback:chatcmpl-3#2"),
    ]
    assert dpo["used"] == {"up_rated": 2, "correction": 2} and dpo["skipped"] == {} and dpo["left_out"] == {}


OLD_SCHEMA = """
CREATE TABLE completions (id TEXT PRIMARY KEY, created TEXT NOT NULL, model TEXT NOT NULL,
                          messages_json TEXT NOT NULL, response TEXT NOT NULL, reasoning TEXT);
CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, completion_id TEXT NOT NULL REFERENCES completions(id),
                       created TEXT NOT NULL, rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
                       correction TEXT, comment TEXT);
CREATE INDEX feedback_by_completion ON feedback (completion_id, id);
"""


def test_a_database_from_before_routes_and_choices_exports_and_migrates(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # what seektune wrote before it stored the route, finish reason and choices
        conn.executescript(OLD_SCHEMA)
        conn.executemany("INSERT INTO completions VALUES (?, '2026-01-01T00:00:00+00:00', 'base', ?, ?, NULL)",
                         [("old-1", json.dumps(Q1), "45 days."), ("old-2", json.dumps(Q1), "Never.")])
        conn.execute("INSERT INTO feedback (completion_id, created, rating) VALUES ('old-1', 'x', 'up')")
        conn.execute("INSERT INTO feedback (completion_id, created, rating, correction) "
                     "VALUES ('old-2', 'x', 'down', 'Within 45 days.')")
    conn.close()

    counts = export_feedback(db, "sft", tmp_path / "sft.jsonl")  # read-only: the file is not changed
    assert counts["rows"] == 2 and counts["used"] == {"up_rated": 1, "correction": 1}
    assert counts["unknown_finish_reason"] == 1 and counts["left_out"] == {}  # the correction is complete anyway
    assert export_notes(counts) == ["kept 1 row with no recorded finish reason (recorded by an older seektune): "
                                    "an answer may be cut off, or a raw completion"]
    with sqlite3.connect(db) as conn:
        assert "route" not in {row[1] for row in conn.execute("PRAGMA table_info(completions)")}
    conn.close()

    store = FeedbackStore(db)  # the server opening it adds the new columns; old rows read as unknown
    old = {c["id"]: c for c in store.completions()}
    assert old["old-1"]["route"] is None and old["old-1"]["finish_reason"] is None
    assert [f["choice"] for f in old["old-2"]["feedback"]] == [0]
    store.record_completion("new", "base", Q1, "45 days.", None, "stop",
                            more_choices=[StoredChoice("Within a day.", None, "length")])
    store.add_feedback("new", "down", choice=1)
    store.add_feedback("new", "up")
    counts = export_feedback(db, "sft", tmp_path / "sft.jsonl")
    assert counts["rows"] == 3 and counts["choices"] == 4 and counts["skipped"] == {"down_without_correction": 1}
    assert FeedbackStore(db).completions() == store.completions()  # opening again migrates nothing twice

