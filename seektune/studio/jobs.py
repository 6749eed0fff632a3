"""The studio's jobs: seektune commands run as subprocesses, one at a time by default, their state in SQLite.

    store = JobStore(Path("runs/.studio/jobs.sqlite"))
    runner = JobRunner(store, logs_dir=Path("runs/.studio/logs"), max_running=1)
    runner.start()                                  # a thread that starts queued jobs and reaps finished ones
    job = runner.submit("cs", "run", ["run", "runs/.studio/recipes/cs.yaml"])   # `seektune run ...`, queued
    runner.cancel(job.id)                           # queued: cancelled at once; running: SIGTERM, then SIGKILL

A job is a `seektune` command line (the same one a user would type), started with this Python in its own
process group, its output in ``logs/<id>.log``. A small wrapper process writes the command's exit code
to ``logs/<id>.rc`` when it ends, so a studio that was stopped while a job ran finds the truth when it
starts again: the code if the job ended meanwhile, the job adopted if it still runs, and "failed" with
its log if its process died without a code (the machine rebooted, someone killed it).

Statuses: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``. A training run on a
CPU machine uses every core, so one job runs at a time and the rest wait in order (``max_running``
raises that on a GPU machine).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Job", "JobError", "JobNotFound", "JobRunner", "JobStore", "STAGES", "TERMINAL"]

log = logging.getLogger(__name__)

STAGES = ("run", "prepare", "train", "eval", "export", "update", "tune", "synth", "index", "feedback")
TERMINAL = ("succeeded", "failed", "cancelled")
KILL_AFTER_S = 10.0  # a cancelled job gets this long to stop after SIGTERM before SIGKILL
POLL_S = 0.2

# Runs the command, then writes its exit code beside the log; a signal's number is written as 128 + n.
WRAPPER = """
import subprocess, sys
rc_path, argv = sys.argv[1], sys.argv[2:]
try:
    code = subprocess.call(argv)
except KeyboardInterrupt:
    code = 130
code = 128 - code if code < 0 else code
with open(rc_path + ".tmp", "w") as out:
    out.write(str(code))
import os; os.replace(rc_path + ".tmp", rc_path)
sys.exit(code)
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    argv TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    returncode INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
"""


class JobError(ValueError):
    """An action a job's status does not allow (or, as JobNotFound, a job that does not exist)."""


class JobNotFound(JobError):
    pass


@dataclass
class Job:
    id: int
    run: str
    stage: str
    argv: list[str]
    status: str
    pid: int | None
    created: float
    started: float | None
    ended: float | None
    returncode: int | None
    cancel_requested: bool
    note: str | None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "run": self.run, "stage": self.stage, "command": ["seektune", *self.argv],
                "status": self.status, "created": self.created, "started": self.started, "ended": self.ended,
                "returncode": self.returncode, "cancel_requested": self.cancel_requested, "note": self.note}


class JobStore:
    """Jobs in one SQLite file (WAL: the page's reads never wait for the runner's writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(id=row["id"], run=row["run"], stage=row["stage"], argv=json.loads(row["argv"]),
                   status=row["status"], pid=row["pid"], created=row["created"], started=row["started"],
                   ended=row["ended"], returncode=row["returncode"], cancel_requested=bool(row["cancel_requested"]),
                   note=row["note"])

    def add(self, run: str, stage: str, argv: list[str]) -> Job:
        if stage not in STAGES:
            raise JobError(f"unknown stage {stage!r}; one of: {', '.join(STAGES)}")
        with self.lock:
            cursor = self.db.execute("INSERT INTO jobs (run, stage, argv, status, created) VALUES (?, ?, ?, ?, ?)",
                                     (run, stage, json.dumps(argv), "queued", time.time()))
        return self.get(cursor.lastrowid)

    def get(self, job_id: int) -> Job:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return self._job(row)

    def jobs(self, status: str | None = None, run: str | None = None) -> list[Job]:
        """Newest first."""
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        if run is not None:
            query, args = query + " AND run = ?", [*args, run]
        with self.lock:
            return [self._job(r) for r in self.db.execute(query + " ORDER BY id DESC", args).fetchall()]

    def update(self, job_id: int, **fields: Any) -> Job:
        columns = ", ".join(f"{name} = ?" for name in fields)  # names come from this module, never a request
        with self.lock:
            self.db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", [*fields.values(), job_id])
        return self.get(job_id)

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a child nobody reaped) is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class JobRunner:
    """Starts queued jobs in order (at most ``max_running`` at once), reaps them, and cancels on request."""

    def __init__(self, store: JobStore, logs_dir: Path, max_running: int = 1, cwd: Path | None = None,
                 command: list[str] | None = None, env: dict[str, str] | None = None):
        self.store, self.logs_dir, self.max_running = store, Path(logs_dir), max(1, max_running)
        self.cwd = cwd
        self.command = command or [sys.executable, "-m", "seektune"]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[int, subprocess.Popen] = {}
        self.term_sent: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.recover()

    # ---------------------------------------------------------------- paths

    def log_path(self, job_id: int) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def rc_path(self, job_id: int) -> Path:
        return self.logs_dir / f"{job_id}.rc"

    def _returncode(self, job_id: int) -> int | None:
        try:
            return int(self.rc_path(job_id).read_text().strip())
        except (OSError, ValueError):
            return None

    # ---------------------------------------------------------------- actions

    def submit(self, run: str, stage: str, argv: list[str]) -> Job:
        return self.store.add(run, stage, argv)

    def cancel(self, job_id: int) -> Job:
        job = self.store.get(job_id)
        if job.status in TERMINAL:
            raise JobError(f"job {job_id} has already {job.status}")
        if job.status == "queued":
            return self.store.update(job_id, status="cancelled", cancel_requested=1, ended=time.time(),
                                     note="cancelled before it started")
        job = self.store.update(job_id, cancel_requested=1)
        self._signal(job, signal.SIGTERM)
        self.term_sent.setdefault(job_id, time.monotonic())
        return job

    def _signal(self, job: Job, sig: int) -> None:
        if job.pid and _alive(job.pid):
            try:
                os.killpg(job.pid, sig)  # the job's own process group: the wrapper, seektune and its workers
            except (ProcessLookupError, PermissionError):
                pass

    # ---------------------------------------------------------------- the loop

    def recover(self) -> None:
        """After a restart: a job marked running whose process is gone ends as its exit code says, or failed."""
        for job in self.store.jobs(status="running"):
            if _alive(job.pid):
                log.warning("studio: job %d (%s %s) still runs as pid %d; following it", job.id, job.stage,
                            job.run, job.pid)
                continue
            self._finish(job, self._returncode(job.id), died=True)

    def _finish(self, job: Job, code: int | None, died: bool = False) -> Job:
        if job.cancel_requested:
            status, note = "cancelled", "cancelled while running"
        elif code == 0:
            status, note = "succeeded", None
        elif code is None:
            status, note = "failed", "its process ended without an exit code (killed, or the machine stopped)"
        else:
            status, note = "failed", f"exit code {code}" + (" (found after a studio restart)" if died else "")
        self.term_sent.pop(job.id, None)
        return self.store.update(job.id, status=status, returncode=code, ended=time.time(), note=note)

    def _start(self, job: Job) -> None:
        out = self.log_path(job.id).open("ab")
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", WRAPPER, str(self.rc_path(job.id)), *self.command, *job.argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                start_new_session=True)
        except OSError as exc:
            self.store.update(job.id, status="failed", ended=time.time(), note=f"could not start: {exc}")
            return
        finally:
            out.close()
        self.processes[job.id] = process
        self.store.update(job.id, status="running", pid=process.pid, started=time.time())

    def tick(self) -> None:
        """One pass: reap what ended, escalate overdue cancellations, start what fits."""
        running = self.store.jobs(status="running")
        for job in running:
            process = self.processes.get(job.id)
            if process is not None:
                code = process.poll()
                if code is not None:
                    self.processes.pop(job.id)
                    self._finish(job, self._returncode(job.id) if self._returncode(job.id) is not None else code)
                    continue
            elif not _alive(job.pid):  # adopted after a restart: not our child, so no poll()
                self._finish(job, self._returncode(job.id))
                continue
            if job.cancel_requested:
                sent = self.term_sent.setdefault(job.id, time.monotonic())
                if time.monotonic() - sent > KILL_AFTER_S:
                    self._signal(job, signal.SIGKILL)
        free = self.max_running - len(self.store.jobs(status="running"))
        for job in sorted(self.store.jobs(status="queued"), key=lambda j: j.id)[:max(0, free)]:
            self._start(job)

    def _loop(self) -> None:
        while not self.stop_event.wait(POLL_S):
            try:
                self.tick()
            except Exception:  # the loop must outlive one bad pass (a full disk, a locked database)
                log.exception("studio: job runner pass failed")

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="studio-jobs", daemon=True)
            self.thread.start()

    def stop(self, deadline_s: float = 5.0) -> None:
        """Stop the loop (running jobs keep running; a restarted studio adopts them)."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(deadline_s)
            self.thread = None
