"""The review store: synthesised question/answer pairs and the decisions people make on them (SQLite).

    seektune synth examples/customer-service/synth.yaml     # fills <run>/synth/review.sqlite
    seektune review runs/cs-synth                            # people accept, edit or reject each pair
    seektune prepare recipe.yaml data.paths=[runs/cs-synth/synth/review.sqlite]   # accepted + edited rows

One row per pair, keyed by a stable id, so a rerun of synthesis adds new pairs and never
touches a decision already made. Every decision also goes to an append-only ``decisions``
table (who, when, what), and each pair carries a ``version`` that a decision must name: a
second browser tab deciding on a pair it showed before the first tab's decision gets
:class:`StaleDecision` instead of silently overwriting it. The database runs in WAL mode,
so a crash loses at most the decision being written.

Only accepted and edited pairs are training data (:func:`training_rows`, read by ``prepare``
when ``data.paths`` names the store); rejected pairs stay with the reviewer's reason.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STORE_SUFFIXES = {".sqlite", ".sqlite3"}
STATUSES = ("pending", "accepted", "edited", "rejected")
TRAINING_STATUSES = ("accepted", "edited")
MAX_TEXT = 20_000  # characters of an edited question or answer, or a reason

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    document TEXT NOT NULL,
    origin TEXT NOT NULL,
    kind TEXT NOT NULL,
    chunk TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    reasoning TEXT,
    support TEXT NOT NULL DEFAULT '[]',
    warnings TEXT NOT NULL DEFAULT '[]',
    record TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'edited', 'rejected')),
    edited_question TEXT,
    edited_answer TEXT,
    reason TEXT,
    reviewer TEXT,
    decided_at TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL REFERENCES pairs(id),
    status TEXT NOT NULL,
    question TEXT,
    answer TEXT,
    reason TEXT,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pairs_status ON pairs(status);
"""


class ReviewError(ValueError):
    """A decision that cannot be recorded (unknown pair, bad status, empty edit, missing reviewer)."""


class StaleDecision(ReviewError):
    """The pair changed since the page showed it (another tab or reviewer decided first)."""


@dataclass
class Pair:
    """One synthesised pair as the review page shows it."""

    id: str
    position: int
    document: str
    origin: str
    kind: str
    chunk: str
    question: str
    answer: str
    reasoning: str | None = None
    support: list[list[int]] = field(default_factory=list)  # [start, end) character spans of the chunk
    warnings: list[str] = field(default_factory=list)
    status: str = "pending"
    edited_question: str | None = None
    edited_answer: str | None = None
    reason: str | None = None
    reviewer: str | None = None
    decided_at: str | None = None
    version: int = 0
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def final_question(self) -> str:
        return self.edited_question if self.edited_question is not None else self.question

    @property
    def final_answer(self) -> str:
        return self.edited_answer if self.edited_answer is not None else self.answer

    def public(self) -> dict[str, Any]:
        """What the review page's API returns (the full record stays server-side)."""
        out = {key: value for key, value in self.__dict__.items() if key != "record"}
        out["facts"] = self.record.get("meta", {}).get("facts", [])
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pair(row: sqlite3.Row) -> Pair:
    data = dict(row)
    data["support"] = json.loads(data["support"])
    data["warnings"] = json.loads(data["warnings"])
    data["record"] = json.loads(data["record"])
    return Pair(**data)


class ReviewStore:
    """The SQLite file of one synthesis run (``RunDir.review_store``)."""

    def __init__(self, path: str | Path, create: bool = True):
        """``create=False`` opens an existing store only (never writes a table into some other SQLite file)."""
        self.path = Path(path)
        if not create:
            if not self.path.is_file():
                raise ReviewError(f"no review store at {self.path}")
            with closing(sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True)) as db:
                try:
                    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                except sqlite3.DatabaseError as exc:
                    raise ReviewError(f"{self.path} is not an SQLite database ({exc})") from None
            if not {"pairs", "decisions"} <= tables:
                raise ReviewError(f"{self.path} is not a seektune review store (no pairs table)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: the review page serves requests from several threads
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db

    # ------------------------------------------------------------ written by synthesis

    def add(self, records: list[dict[str, Any]]) -> int:
        """Add synthesised records (``{"messages", "meta"}`` with ``meta.id``, ``meta.source``); pairs already
        in the store keep their decisions. Returns how many were new."""
        with self._connect() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM pairs").fetchone()[0]
            added = 0
            db.execute("BEGIN IMMEDIATE")
            for record in records:
                meta = record["meta"]
                source = meta["source"]
                messages = record["messages"]
                question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                answer = messages[-1]["content"]
                cursor = db.execute(
                    "INSERT OR IGNORE INTO pairs (id, position, document, origin, kind, chunk, question, answer, "
                    "reasoning, support, warnings, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (meta["id"], start + added, source["document"], meta["origin"], meta.get("kind", "factual"),
                     source["text"], question, answer, messages[-1].get("reasoning"),
                     json.dumps(meta.get("support", [])), json.dumps(meta.get("warnings", [])),
                     json.dumps(record, ensure_ascii=False)))
                added += cursor.rowcount
            db.execute("COMMIT")
        return added

    # ------------------------------------------------------------ read by the page and by prepare

    def pairs(self, status: str | None = None, document: str | None = None, warning: str | None = None
              ) -> list[Pair]:
        """Pairs in generation order, optionally only one status, one document, or one gate warning."""
        query, args = "SELECT * FROM pairs WHERE 1=1", []
        if status:
            query, args = query + " AND status = ?", args + [status]
        if document:
            query, args = query + " AND document = ?", args + [document]
        with self._connect() as db:
            rows = [_pair(row) for row in db.execute(query + " ORDER BY position", args)]
        return [p for p in rows if warning is None or warning in p.warnings]

    def get(self, pair_id: str) -> Pair:
        with self._connect() as db:
            row = db.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
        if row is None:
            raise ReviewError(f"no pair {pair_id!r} in {self.path}")
        return _pair(row)

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            found = dict(db.execute("SELECT status, COUNT(*) FROM pairs GROUP BY status").fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def documents(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT document FROM pairs ORDER BY document")]

    def decisions(self, pair_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first."""
        query, args = "SELECT * FROM decisions", ()
        if pair_id is not None:
            query, args = query + " WHERE pair_id = ?", (pair_id,)
        with self._connect() as db:
            return [dict(row) for row in db.execute(query + " ORDER BY seq", args)]

    # ------------------------------------------------------------ written by reviewers

    def decide(self, pair_id: str, status: str, reviewer: str, *, version: int | None = None,
               question: str | None = None, answer: str | None = None, reason: str | None = None) -> Pair:
        """Record a decision: ``accepted``; ``edited`` with a new question and/or answer; ``rejected`` with a
        reason; ``pending`` undoes. ``version`` is the pair's version the reviewer saw (None: do not check)."""
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise ReviewError("a decision needs the reviewer's name")
        if status not in STATUSES:
            raise ReviewError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        for name, text in (("question", question), ("answer", answer), ("reason", reason), ("reviewer", reviewer)):
            if text is not None and len(text) > MAX_TEXT:
                raise ReviewError(f"{name} is longer than {MAX_TEXT:,} characters")
        if status == "rejected" and not (reason or "").strip():
            raise ReviewError("a rejection needs a reason (it is kept with the pair)")
        current = self.get(pair_id)
        if status == "edited":
            question = current.question if question is None else question
            answer = current.answer if answer is None else answer
            if not question.strip() or not answer.strip():
                raise ReviewError("an edited pair needs a question and an answer with text in them")
            if question == current.question and answer == current.answer:
                status, question, answer = "accepted", None, None  # nothing changed: it is an acceptance
        else:
            question = answer = None
        now = _now()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "UPDATE pairs SET status = ?, edited_question = ?, edited_answer = ?, reason = ?, reviewer = ?, "
                "decided_at = ?, version = version + 1 WHERE id = ? AND (? IS NULL OR version = ?)",
                (status, question, answer, reason if status == "rejected" else None, reviewer,
                 now if status != "pending" else None, pair_id, version, version))
            if cursor.rowcount == 0:
                db.execute("ROLLBACK")
                raise StaleDecision(f"pair {pair_id} changed since it was shown (version {version}); reload it")
            db.execute("INSERT INTO decisions (pair_id, status, question, answer, reason, reviewer, at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (pair_id, status, question, answer, reason, reviewer, now))
            db.execute("COMMIT")
        return self.get(pair_id)


def training_rows(path: str | Path, statuses: tuple[str, ...] = TRAINING_STATUSES) -> Iterator[tuple[str, dict]]:
    """(origin, flat row) for each accepted or edited pair: ``{"messages", "id", "facts", "category", "group"}``
    as ``data.formats`` reads them; the group is the source chunk, so split keeps a chunk's pairs together."""
    store = ReviewStore(path, create=False)
    for pair in store.pairs():
        if pair.status not in statuses:
            continue
        record = pair.record
        messages = [dict(m) for m in record["messages"]]
        user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[user]["content"] = pair.final_question
        messages[-1]["content"] = pair.final_answer
        if pair.status == "edited":
            messages[-1].pop("reasoning", None)  # the reviewer's answer replaces the teacher's reasoning too
        meta = record.get("meta", {})
        facts = meta.get("facts") or []
        if pair.status == "edited":
            facts = [f for f in facts if f.lower() in pair.final_answer.lower()]  # facts the edit removed go
        row = {"messages": messages, "id": pair.id, "facts": facts, "category": meta.get("kind", pair.kind),
               "group": meta.get("source", {}).get("chunk_id", pair.origin)}
        yield f"{Path(path).name}:{pair.origin}", row
