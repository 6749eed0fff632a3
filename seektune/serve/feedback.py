"""Ratings and corrections from users, kept in SQLite, exported as rows for the next training run.

    seektune serve runs/customer-service --feedback-db feedback.sqlite     # the server records
    seektune feedback export --db feedback.sqlite --to sft                 # -> rows to train on

The server records every completion it returns (`FeedbackStore.record_completion`): its route
(``chat`` or ``completion``), and every choice of an ``n > 1`` request with its text, reasoning
and ``finish_reason``; and every `POST /v1/feedback` (`FeedbackStore.add_feedback`), which rates
one choice (0 unless told). A choice may be rated several times (a thumbs-down, then a
correction); **the latest feedback row wins, as a whole**, when exporting: its rating, correction
and comment replace the earlier ones. An older feedback.sqlite gains the new columns when a store
opens it; its rows have no route or finish reason (unknown: kept, and counted).

Only complete chat answers train by default: a choice from ``/v1/completions`` (a raw
continuation, not a conversation) is *left out* unless ``include_completions``, and so is a model
response that did not finish with ``stop`` (``length``: cut off at max_tokens) unless
``include_truncated``; a correction is complete by definition. `export_notes` says what was left
out and which flag keeps it.

Exports (`export_feedback`), each row in seektune's one data form plus ``meta.origin =
"feedback:<completion id>"`` (``#<index>`` added for choices after the first) and ``meta.model``:

- ``sft``: ``{"messages": prompt + [answer], "meta"}``. The answer is the correction where there
  is one, else the response of an up-rated choice (with its reasoning). A down-rated
  choice without a correction has nothing to learn from and is skipped.
- ``dpo``: TRL's conversational preference form ``{"prompt": [...], "chosen": [{"role":
  "assistant", "content"}], "rejected": [...], "meta"}``. Choices are grouped by their prompt
  messages (so the choices of one request pair with each other, and with other requests' answers
  to the same prompt, across models/adapters); in each group every preferred answer (a
  correction, or an up-rated response without one) is paired with every down-rated response. A
  left-out response is on neither side. Reasoning is left out of DPO pairs: corrections have
  none, and pairing "no reasoning" against "reasoning" would teach the model that reasoning
  itself is bad.

Every choice in the database is used, counted under ``skipped`` (never trains: ``no_feedback``
counts choices nobody rated) or under ``left_out`` (trains when asked), so the counts reconcile.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from seektune.data.formats import FormatError, to_record

RATINGS = ("up", "down")
ROUTES = ("chat", "completion")  # /v1/chat/completions, /v1/completions
EXPORT_FORMATS = ("sft", "dpo")
MAX_TEXT_CHARS = 20_000  # a correction or comment; longer is a mistake or abuse, not feedback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id            TEXT PRIMARY KEY,
    created       TEXT NOT NULL,
    model         TEXT NOT NULL,
    messages_json TEXT NOT NULL,
    response      TEXT NOT NULL,          -- choice 0; choices 1.. are in `choices`
    reasoning     TEXT,
    route         TEXT,                   -- chat | completion; NULL: recorded before seektune kept it
    finish_reason TEXT                    -- of choice 0: stop | length; NULL: not recorded (older seektune)
);
CREATE TABLE IF NOT EXISTS choices (
    completion_id TEXT NOT NULL REFERENCES completions(id),
    idx           INTEGER NOT NULL CHECK (idx >= 1),
    response      TEXT NOT NULL,
    reasoning     TEXT,
    finish_reason TEXT,
    PRIMARY KEY (completion_id, idx)
);
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    completion_id TEXT NOT NULL REFERENCES completions(id),
    created       TEXT NOT NULL,
    rating        TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    correction    TEXT,
    comment       TEXT,
    choice        INTEGER NOT NULL DEFAULT 0   -- which choice of an n > 1 request was rated
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id, id);
"""


# columns later versions added to an existing table: (table, column, definition); see _migrate
_ADDED_COLUMNS = (
    ("completions", "route", "TEXT"),
    ("completions", "finish_reason", "TEXT"),
    ("feedback", "choice", "INTEGER NOT NULL DEFAULT 0"),
)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older feedback.sqlite lacks (its rows keep NULL: route and finish reason unknown)."""
    for table, column, definition in _ADDED_COLUMNS:
        if column not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class StoredChoice(NamedTuple):
    """One more choice of an ``n > 1`` completion, as `FeedbackStore.record_completion` keeps it."""

    response: str
    reasoning: str | None = None
    finish_reason: str | None = None


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


class ChoiceNotFound(KeyError):
    """A known completion rated on a choice it does not have."""


class FeedbackStore:
    """The SQLite file behind `POST /v1/feedback`; safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)  # users' conversations: owner only (SQLite's -wal/-shm follow)
        with _connect(self.path) as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            conn.executescript(_SCHEMA)
            _migrate(conn)
        conn.close()

    def record_completion(self, completion_id: str, model: str, messages: list[dict], response: str,
                          reasoning: str | None = None, finish_reason: str | None = None, *, route: str = "chat",
                          more_choices: Sequence[StoredChoice] = ()) -> None:
        """Keep what the model was asked (``messages``) and answered, so feedback can point at it.

        ``response``/``reasoning``/``finish_reason`` are choice 0; ``more_choices`` are choices 1..n-1 of an
        ``n > 1`` request; ``route`` is ``chat`` (/v1/chat/completions) or ``completion`` (/v1/completions)."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
        conn = _connect(self.path)
        try:
            with conn:
                conn.execute(
                    "INSERT INTO completions (id, created, model, messages_json, response, reasoning, route, "
                    "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (completion_id, _now(), model, json.dumps(messages, ensure_ascii=False), response, reasoning,
                     route, finish_reason),
                )
                conn.executemany(
                    "INSERT INTO choices (completion_id, idx, response, reasoning, finish_reason) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(completion_id, index, *StoredChoice(*choice)) for index, choice in enumerate(more_choices, 1)],
                )
        except sqlite3.IntegrityError as err:
            raise ValueError(f"completion {completion_id!r} is already recorded") from err
        finally:
            conn.close()

    def add_feedback(self, completion_id: str, rating: str, correction: str | None = None,
                     comment: str | None = None, choice: int = 0) -> None:
        """Store one rating of one choice (0 unless the request asked for n > 1); KeyError for an unknown
        completion id or choice, ValueError for a bad rating or text."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be 'up' or 'down', got {rating!r}")
        if isinstance(choice, bool) or not isinstance(choice, int) or choice < 0:
            raise ValueError(f"choice must be a choice index (0, 1, ...), got {choice!r}")
        correction = _optional_text("correction", correction)
        comment = _optional_text("comment", comment)
        conn = _connect(self.path)
        try:
            with conn:
                if conn.execute("SELECT 1 FROM completions WHERE id = ?", (completion_id,)).fetchone() is None:
                    raise KeyError(f"no completion with id {completion_id!r}")
                if choice and conn.execute("SELECT 1 FROM choices WHERE completion_id = ? AND idx = ?",
                                           (completion_id, choice)).fetchone() is None:
                    raise ChoiceNotFound(f"completion {completion_id!r} has no choice {choice}")
                conn.execute(
                    "INSERT INTO feedback (completion_id, created, rating, correction, comment, choice) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (completion_id, _now(), rating, correction, comment, choice),
                )
        finally:
            conn.close()

    def completions(self) -> list[dict]:
        """Every completion in recording order, with its ``choices`` (index, response, reasoning, finish_reason)
        and its ``feedback`` rows (oldest first, each naming its ``choice``); ``response``, ``reasoning`` and
        ``finish_reason`` are choice 0's."""
        conn = _connect(self.path)
        try:
            completions, choices, feedback = _read_tables(conn)
        finally:
            conn.close()
        listed = []
        for cid, created, model, messages, response, reasoning, route, finish_reason in completions:
            listed.append({
                "id": cid, "created": created, "model": model, "messages": json.loads(messages), "route": route,
                "response": response, "reasoning": reasoning, "finish_reason": finish_reason,
                "choices": [{"index": 0, "response": response, "reasoning": reasoning, "finish_reason": finish_reason},
                            *({"index": i, "response": r, "reasoning": rs, "finish_reason": f}
                              for i, r, rs, f in choices.get(cid, []))],
                "feedback": [{"created": f_created, "rating": rating, "correction": correction, "comment": comment,
                              "choice": index}
                             for f_created, rating, correction, comment, index in feedback.get(cid, [])],
            })
        return listed


def _read_tables(conn: sqlite3.Connection) -> tuple[list[tuple], dict[str, list[tuple]], dict[str, list[tuple]]]:
    """Completions rows (in recording order), choices 1.. and feedback rows by completion id (in order).

    Reads a database of any version without changing it (an export opens it read-only): columns and
    tables an older version lacks read as NULL / choice 0 / no more choices."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    have = _columns(conn, "completions")
    extra = ", ".join(column if column in have else "NULL" for column in ("route", "finish_reason"))
    completions = conn.execute(
        f"SELECT id, created, model, messages_json, response, reasoning, {extra} FROM completions ORDER BY rowid"
    ).fetchall()
    choices: dict[str, list[tuple]] = {}
    if "choices" in tables:
        for cid, *choice in conn.execute(
                "SELECT completion_id, idx, response, reasoning, finish_reason FROM choices "
                "ORDER BY completion_id, idx"):
            choices.setdefault(cid, []).append(tuple(choice))
    index = "choice" if "choice" in _columns(conn, "feedback") else "0"
    feedback: dict[str, list[tuple]] = {}
    for cid, *row in conn.execute(
            f"SELECT completion_id, created, rating, correction, comment, {index} FROM feedback ORDER BY id"):
        feedback.setdefault(cid, []).append(tuple(row))
    return completions, choices, feedback


@dataclass
class _Rated:
    """One choice of a completion with its latest feedback, its prompt already checked and normalised."""

    id: str
    index: int
    model: str
    route: str | None  # None: recorded before seektune kept the route
    prompt: list[dict]
    response: str
    reasoning: str | None
    finish_reason: str | None  # None: recorded before seektune kept it
    rating: str
    correction: str | None

    @property
    def origin(self) -> str:  # choice 0 keeps the form rows had before choices were stored
        return f"feedback:{self.id}" if self.index == 0 else f"feedback:{self.id}#{self.index}"


@dataclass(frozen=True)
class _Keep:
    """What an export keeps beyond complete chat answers (the CLI's --include-* flags)."""

    completions: bool = False
    truncated: bool = False

    def route_left_out(self, c: _Rated) -> str | None:
        """Why the whole choice is left out (a raw /v1/completions continuation), else None."""
        return "raw_completion" if c.route == "completion" and not self.completions else None

    def response_left_out(self, c: _Rated) -> str | None:
        """Why the model's response is not a training answer (cut off, or stopped otherwise), else None."""
        if c.finish_reason in (None, "stop") or self.truncated:
            return None
        return "truncated" if c.finish_reason == "length" else f"finish_reason:{c.finish_reason}"


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


def _load_rated(db: Path) -> tuple[list[_Rated], Counter, int, int]:
    """Every rated choice with its latest feedback; the others counted by reason; completions; choices."""
    if not db.is_file():
        raise FileNotFoundError(f"feedback database {db} does not exist; `seektune serve` writes it "
                                "(see its --feedback-db option)")
    try:
        conn = _connect(db, read_only=True)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"completions", "feedback"} <= tables:
                raise ValueError(f"{db} is not a seektune feedback database (no completions/feedback tables)")
            completions, more_choices, feedback = _read_tables(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"cannot read {db} as a feedback database: {err}") from err
    rated, skipped, total_choices = [], Counter(), 0
    for cid, _created, model, messages_json, response, reasoning, route, finish_reason in completions:
        latest = {}  # choice index -> its latest (rating, correction): the latest row wins as a whole
        for _f_created, rating, correction, _comment, index in feedback.get(cid, []):
            latest[index] = (rating, correction)
        choices = [(0, response, reasoning, finish_reason), *more_choices.get(cid, [])]
        total_choices += len(choices)
        prompt = None
        for index, text, thought, finish in choices:
            if index not in latest:
                skipped["no_feedback"] += 1
                continue
            if prompt is None:
                try:
                    # a placeholder answer checks the prompt's shape (roles alternate, ends with the user)
                    prompt = _training_messages(_plain_messages(json.loads(messages_json)), "placeholder")[:-1]
                except (FormatError, json.JSONDecodeError) as err:
                    prompt = f"invalid_prompt:{getattr(err, 'reason', 'bad_json')}"
            if isinstance(prompt, str):
                skipped[prompt] += 1
                continue
            rated.append(_Rated(cid, index, model, route, prompt, text, thought, finish, *latest[index]))
    return rated, skipped, len(completions), total_choices


def _sft_rows(rated: list[_Rated], keep: _Keep, skipped: Counter, left_out: Counter, used: Counter,
              unknown: Counter) -> list[dict]:
    rows = []
    for c in rated:
        if c.correction is None and c.rating != "up":
            skipped["down_without_correction"] += 1
            continue
        reason = keep.route_left_out(c) or (None if c.correction is not None else keep.response_left_out(c))
        if reason:
            left_out[reason] += 1
            continue
        if c.correction is not None:
            answer, reasoning, source = c.correction, None, "correction"  # the old reasoning led elsewhere
        else:
            answer, reasoning, source = c.response, c.reasoning, "up_rated"
        try:
            messages = _training_messages(c.prompt, answer, reasoning)
        except FormatError as err:
            skipped[f"invalid:{err.reason}"] += 1
            continue
        used[source] += 1
        unknown["finish_reason"] += source == "up_rated" and c.finish_reason is None
        rows.append({"messages": messages, "meta": {"origin": c.origin, "model": c.model}})
    return rows


def _dpo_rows(rated: list[_Rated], keep: _Keep, skipped: Counter, left_out: Counter, used: Counter,
              unknown: Counter) -> list[dict]:
    groups: dict[str, list[_Rated]] = {}
    for c in rated:  # dicts keep insertion order: groups come in the order of their first completion
        reason = keep.route_left_out(c)
        if reason:
            left_out[reason] += 1
            continue
        groups.setdefault(json.dumps(c.prompt, sort_keys=True, ensure_ascii=False), []).append(c)
    rows = []
    for group in groups.values():  # the choices of one request share a prompt: they pair with each other
        chosen = [(c, c.correction, "correction") if c.correction is not None else (c, c.response, "up_rated")
                  for c in group
                  if c.correction is not None or (c.rating == "up" and not keep.response_left_out(c))]
        chosen = [(c, text, kind) for c, text, kind in chosen if text.strip()]
        rejected = [c for c in group if c.rating == "down" and not keep.response_left_out(c)]
        paired: set[tuple[str, int]] = set()
        seen: set[tuple[str, str]] = set()
        for good, text, kind in chosen:
            for bad in rejected:
                if text == bad.response or (text, bad.response) in seen:
                    continue  # nothing to learn from a pair of equal answers, or from the same pair twice
                seen.add((text, bad.response))
                paired.update(((good.id, good.index), (bad.id, bad.index)))
                used[kind] += 1
                rows.append({
                    "prompt": good.prompt,
                    "chosen": [{"role": "assistant", "content": text}],
                    "rejected": [{"role": "assistant", "content": bad.response}],
                    "meta": {"origin": bad.origin, "model": bad.model, "chosen_kind": kind,
                             "chosen_origin": good.origin, "chosen_model": good.model},
                })
                unknown["finish_reason"] += bad.finish_reason is None or (
                    kind == "up_rated" and good.finish_reason is None)
        for c in group:
            if (c.id, c.index) not in paired:
                reason = keep.response_left_out(c)
                (left_out if reason else skipped)[reason or "unpaired"] += 1
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


def export_feedback(db: Path, to: str, out: Path, *, include_completions: bool = False,
                    include_truncated: bool = False) -> dict:
    """`seektune feedback export --db DB --to sft|dpo [--include-completions] [--include-truncated]` -> JSONL.

    Only complete chat answers train by default: a choice from ``/v1/completions`` (a raw
    continuation, not a conversation) is left out unless ``include_completions``, and a model
    response that did not finish with ``stop`` (``length``: cut off at max_tokens) unless
    ``include_truncated``; a correction is complete by definition. A truncated response is left
    out of DPO pairs on either side. Rows recorded before the finish reason was stored count as
    ``unknown_finish_reason`` and are kept.

    Returns ``{"rows", "completions", "choices", "used": {source: n}, "skipped": {reason: n},
    "left_out": {reason: n}, "unknown_finish_reason": n}``: ``skipped`` can never train,
    ``left_out`` can when asked (`export_notes` says how). For SFT
    ``rows + sum(skipped) + sum(left_out) == choices``; for DPO every choice is in a pair, skipped or
    left out.
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    db, out = Path(db), Path(out)
    rated, skipped, completions, choices = _load_rated(db)
    keep = _Keep(completions=include_completions, truncated=include_truncated)
    used, left_out, unknown = Counter(), Counter(), Counter()
    rows = (_sft_rows if to == "sft" else _dpo_rows)(rated, keep, skipped, left_out, used, unknown)
    _write_jsonl_atomic(out, rows)
    return {"rows": len(rows), "completions": completions, "choices": choices, "used": dict(used),
            "skipped": dict(skipped), "left_out": dict(left_out), "unknown_finish_reason": unknown["finish_reason"]}


_LEFT_OUT_WORDS = {  # reason -> (one, many, the flag that keeps them)
    "raw_completion": ("raw completion", "raw completions", "--include-completions"),
    "truncated": ("truncated answer (finish_reason length)", "truncated answers (finish_reason length)",
                  "--include-truncated"),
}


def export_notes(counts: dict) -> list[str]:
    """Lines for people about an export: what it left out and which flag keeps it; rows of unknown finish."""
    notes, parts, flags = [], [], []
    for reason, n in (counts.get("left_out") or {}).items():
        one, many, flag = _LEFT_OUT_WORDS.get(
            reason, (f"answer ({reason})", f"answers ({reason})", "--include-truncated"))
        parts.append(f"{n} {one if n == 1 else many}")
        if flag not in flags:
            flags.append(flag)
    if parts:
        notes.append(f"left out: {', '.join(parts)}; {' / '.join(flags)} to keep them")
    unknown = counts.get("unknown_finish_reason") or 0
    if unknown:
        notes.append(f"kept {unknown} {'row' if unknown == 1 else 'rows'} with no recorded finish reason (recorded "
                     "by an older seektune): an answer may be cut off, or a raw completion")
    return notes


def export_summary(counts: dict, to: str, out: Path) -> list[str]:
    """What `seektune feedback export` prints: rows written and skipped, then `export_notes`."""
    skipped = ", ".join(f"{reason} {n}" for reason, n in (counts.get("skipped") or {}).items())
    return [f"wrote {counts['rows']} {to} rows to {out}" + (f" (skipped: {skipped})" if skipped else ""),
            *export_notes(counts)]
