"""Ratings and corrections from users, kept in SQLite, exported as rows for the next training run.

    seektune serve runs/customer-service --feedback-db feedback.sqlite     # the server records
    seektune feedback export --db feedback.sqlite --to sft                 # -> rows to train on

The server records every completion it returns (`FeedbackStore.record_completion`) and every
`POST /v1/feedback` (`FeedbackStore.add_feedback`). A completion may be rated several times
(a thumbs-down, then a correction); **the latest feedback row wins, as a whole**, when exporting:
its rating, correction and comment replace the earlier ones.

Exports (`export_feedback`), each row in seektune's one data form plus ``meta.origin =
"feedback:<completion id>"`` and ``meta.model``:

- ``sft``: ``{"messages": prompt + [answer], "meta"}``. The answer is the correction where there
  is one, else the response of an up-rated completion (with its reasoning). A down-rated
  completion without a correction has nothing to learn from and is skipped.
- ``dpo``: TRL's conversational preference form ``{"prompt": [...], "chosen": [{"role":
  "assistant", "content"}], "rejected": [...], "meta"}``. Completions are grouped by their
  prompt messages (across models/adapters); in each group every preferred answer (a correction,
  or an up-rated response without one) is paired with every down-rated response. Reasoning is
  left out of DPO pairs: corrections have none, and pairing "no reasoning" against "reasoning"
  would teach the model that reasoning itself is bad.

Every completion in the database is either used or counted under ``skipped`` by reason, so
the counts reconcile (``no_feedback`` counts completions nobody rated).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seektune.data.formats import FormatError, to_record

RATINGS = ("up", "down")
EXPORT_FORMATS = ("sft", "dpo")
MAX_TEXT_CHARS = 20_000  # a correction or comment; longer is a mistake or abuse, not feedback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id            TEXT PRIMARY KEY,
    created       TEXT NOT NULL,
    model         TEXT NOT NULL,
    messages_json TEXT NOT NULL,
    response      TEXT NOT NULL,
    reasoning     TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    completion_id TEXT NOT NULL REFERENCES completions(id),
    created       TEXT NOT NULL,
    rating        TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    correction    TEXT,
    comment       TEXT
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id, id);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    # One connection per call: sqlite3 connections must not be shared across threads, and WAL
    # plus a busy timeout lets the server's threads (and an export) use the file at once.
    if read_only:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    else:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _optional_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty; leave it out instead")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters; at most {MAX_TEXT_CHARS} are accepted")
    return value


class FeedbackStore:
    """The SQLite file behind `POST /v1/feedback`; safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(self.path) as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            conn.executescript(_SCHEMA)
        conn.close()

    def _write(self, sql: str, params: tuple) -> None:
        conn = _connect(self.path)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    def record_completion(self, completion_id: str, model: str, messages: list[dict], response: str,
                          reasoning: str | None) -> None:
        """Keep what the model was asked (``messages``) and answered, so feedback can point at it."""
        try:
            self._write(
                "INSERT INTO completions (id, created, model, messages_json, response, reasoning) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (completion_id, _now(), model, json.dumps(messages, ensure_ascii=False), response, reasoning),
            )
        except sqlite3.IntegrityError as err:
            raise ValueError(f"completion {completion_id!r} is already recorded") from err

    def add_feedback(self, completion_id: str, rating: str, correction: str | None = None,
                     comment: str | None = None) -> None:
        """Store one rating; KeyError for an unknown completion id, ValueError for a bad rating or text."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be 'up' or 'down', got {rating!r}")
        correction = _optional_text("correction", correction)
        comment = _optional_text("comment", comment)
        conn = _connect(self.path)
        try:
            with conn:
                if conn.execute("SELECT 1 FROM completions WHERE id = ?", (completion_id,)).fetchone() is None:
                    raise KeyError(f"no completion with id {completion_id!r}")
                conn.execute(
                    "INSERT INTO feedback (completion_id, created, rating, correction, comment) VALUES (?, ?, ?, ?, ?)",
                    (completion_id, _now(), rating, correction, comment),
                )
        finally:
            conn.close()

    def completions(self) -> list[dict]:
        """Every completion in recording order, each with its ``feedback`` rows (oldest first)."""
        conn = _connect(self.path)
        try:
            rows = conn.execute(
                "SELECT id, created, model, messages_json, response, reasoning FROM completions ORDER BY rowid"
            ).fetchall()
            feedback: dict[str, list[dict]] = {}
            for cid, created, rating, correction, comment in conn.execute(
                "SELECT completion_id, created, rating, correction, comment FROM feedback ORDER BY id"
            ):
                feedback.setdefault(cid, []).append(
                    {"created": created, "rating": rating, "correction": correction, "comment": comment})
        finally:
            conn.close()
        return [
            {"id": cid, "created": created, "model": model, "messages": json.loads(messages), "response": response,
             "reasoning": reasoning, "feedback": feedback.get(cid, [])}
            for cid, created, model, messages, response, reasoning in rows
        ]


@dataclass
class _Rated:
    """A completion with its latest feedback, its prompt already checked and normalised."""

    id: str
    model: str
    prompt: list[dict]
    response: str
    reasoning: str | None
    rating: str
    correction: str | None


def _plain_messages(messages: Any) -> Any:
    """OpenAI content parts (``[{"type": "text", "text"}]``) -> one string; anything else unchanged."""
    if not isinstance(messages, list):
        return messages
    plain = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            parts = message["content"]
            if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
                message = {**message, "content": "".join(p["text"] for p in parts)}
        plain.append(message)
    return plain


def _training_messages(prompt: Any, answer: str, reasoning: str | None = None) -> list[dict]:
    """prompt + answer checked the way `seektune prepare` will check it; FormatError if it would be rejected."""
    if not isinstance(prompt, list):
        raise FormatError("wrong_type", "stored messages are not a list")
    assistant = {"role": "assistant", "content": answer}
    if reasoning:
        assistant["reasoning"] = reasoning
    return to_record({"messages": [*prompt, assistant]}, "feedback", fmt="messages")["messages"]


def _load_rated(db: Path) -> tuple[list[_Rated], Counter, int]:
    """The completions that have feedback, with their latest one; the others counted by reason; the total."""
    if not db.is_file():
        raise FileNotFoundError(f"feedback database {db} does not exist; `seektune serve` writes it "
                                "(see its --feedback-db option)")
    try:
        conn = _connect(db, read_only=True)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"completions", "feedback"} <= tables:
                raise ValueError(f"{db} is not a seektune feedback database (no completions/feedback tables)")
            rows = conn.execute(
                "SELECT c.id, c.model, c.messages_json, c.response, c.reasoning, f.rating, f.correction "
                "FROM completions c LEFT JOIN feedback f ON f.id = "
                "(SELECT MAX(id) FROM feedback WHERE completion_id = c.id) ORDER BY c.rowid"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"cannot read {db} as a feedback database: {err}") from err
    rated, skipped = [], Counter()
    for cid, model, messages_json, response, reasoning, rating, correction in rows:
        if rating is None:
            skipped["no_feedback"] += 1
            continue
        try:
            # a placeholder answer checks the prompt's shape (roles alternate, ends with the user)
            prompt = _training_messages(_plain_messages(json.loads(messages_json)), "placeholder")[:-1]
        except (FormatError, json.JSONDecodeError) as err:
            skipped[f"invalid_prompt:{getattr(err, 'reason', 'bad_json')}"] += 1
            continue
        rated.append(_Rated(cid, model, prompt, response, reasoning, rating, correction))
    return rated, skipped, len(rows)


def _sft_rows(rated: list[_Rated], skipped: Counter, used: Counter) -> list[dict]:
    rows = []
    for c in rated:
        if c.correction is not None:
            answer, reasoning, source = c.correction, None, "correction"  # the old reasoning led elsewhere
        elif c.rating == "up":
            answer, reasoning, source = c.response, c.reasoning, "up_rated"
        else:
            skipped["down_without_correction"] += 1
            continue
        try:
            messages = _training_messages(c.prompt, answer, reasoning)
        except FormatError as err:
            skipped[f"invalid:{err.reason}"] += 1
            continue
        used[source] += 1
        rows.append({"messages": messages, "meta": {"origin": f"feedback:{c.id}", "model": c.model}})
    return rows


def _dpo_rows(rated: list[_Rated], skipped: Counter, used: Counter) -> list[dict]:
    groups: dict[str, list[_Rated]] = {}
    for c in rated:  # dicts keep insertion order: groups come in the order of their first completion
        groups.setdefault(json.dumps(c.prompt, sort_keys=True, ensure_ascii=False), []).append(c)
    rows = []
    for group in groups.values():
        chosen = [(c, c.correction, "correction") if c.correction is not None else (c, c.response, "up_rated")
                  for c in group if c.correction is not None or c.rating == "up"]
        chosen = [(c, text, kind) for c, text, kind in chosen if text.strip()]
        rejected = [c for c in group if c.rating == "down"]
        paired: set[str] = set()
        seen: set[tuple[str, str]] = set()
        for good, text, kind in chosen:
            for bad in rejected:
                if text == bad.response or (text, bad.response) in seen:
                    continue  # nothing to learn from a pair of equal answers, or from the same pair twice
                seen.add((text, bad.response))
                paired.update((good.id, bad.id))
                used[kind] += 1
                rows.append({
                    "prompt": good.prompt,
                    "chosen": [{"role": "assistant", "content": text}],
                    "rejected": [{"role": "assistant", "content": bad.response}],
                    "meta": {"origin": f"feedback:{bad.id}", "model": bad.model, "chosen_kind": kind,
                             "chosen_origin": f"feedback:{good.id}", "chosen_model": good.model},
                })
        for c in group:
            if c.id not in paired:
                skipped["unpaired"] += 1
    return rows


def _write_jsonl_atomic(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)  # readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_feedback(db: Path, to: str, out: Path) -> dict:
    """`seektune feedback export --db DB --to sft|dpo` -> JSONL rows in ``out``.

    Returns ``{"rows", "completions", "used": {source: n}, "skipped": {reason: n}}``; for SFT
    ``rows + sum(skipped) == completions``, for DPO every completion is in a pair or skipped.
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    db, out = Path(db), Path(out)
    rated, skipped, total = _load_rated(db)
    used: Counter = Counter()
    rows = _sft_rows(rated, skipped, used) if to == "sft" else _dpo_rows(rated, skipped, used)
    _write_jsonl_atomic(out, rows)
    return {"rows": len(rows), "completions": total, "used": dict(used), "skipped": dict(skipped)}
