"""The teacher that writes synthesis questions: a local model or run, or an OpenAI-compatible endpoint.

Every reply is cached on disk under a key of (teacher, prompt version, messages, sampling), one
JSON line written and fsynced as soon as the reply arrives. A run killed half-way therefore
keeps every reply it received, and the rerun asks the teacher only for the prompts that have
no reply yet. A line cut short by the kill is ignored and that prompt is asked again.

Endpoint calls go out ``synth.workers`` at a time, each retried ``synth.retries`` times with
exponential backoff (1 s, 2 s, 4 s ...) on connection errors, timeouts, 429 and 5xx. A small
loop rather than a retry library: the policy is four lines and the errors are ours.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seektune.recipe import SynthSpec
from seektune.runs import RunDir, fingerprint, is_run_dir
from seektune.synth.prompts import PROMPT_VERSION

ENDPOINT_PREFIXES = ("http://", "https://")


@dataclass
class Request:
    """One prompt to the teacher. ``temperature`` 0 is greedy; ``seed`` makes a sampled reply repeatable."""

    messages: list[dict[str, str]]
    temperature: float = 0.0
    seed: int = 0
    key: str = ""


class TeacherError(RuntimeError):
    """The teacher could not be reached or loaded."""


class ReplyCache:
    """Append-only JSONL of ``{"key", "reply"}``."""

    def __init__(self, path: Path):
        self.path = path
        self.replies: dict[str, str] = {}
        self.lock = threading.Lock()
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self.replies[item["key"]] = item["reply"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed run: that prompt is asked again

    def put(self, key: str, reply: str) -> None:
        with self.lock:
            self.replies[key] = reply
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


class SynthTeacher:
    def __init__(self, spec: SynthSpec, dtype: str = "auto", trust_remote_code: bool = False):
        self.spec = spec
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.is_endpoint = spec.teacher.startswith(ENDPOINT_PREFIXES)
        self._model = None

    @property
    def label(self) -> str:
        return f"{self.spec.teacher_model} at {self.spec.teacher}" if self.is_endpoint else self.spec.teacher

    @functools.cached_property
    def identity(self) -> str:
        """What decides the replies: the endpoint and model name, or the weights' hash (hashed once: every
        prompt's cache key holds it)."""
        if self.is_endpoint:
            return f"endpoint:{self.spec.teacher.rstrip('/')}:{self.spec.teacher_model}"
        source = Path(self.spec.teacher)
        if is_run_dir(source):
            weights = RunDir(source).trained_weights()
            return f"run:{source.resolve()}:{fingerprint(weights) if weights else 'untrained'}"
        return f"model:{self.spec.teacher}:{fingerprint(source) if source.is_dir() else ''}:dtype={self.dtype}"

    def key(self, request: Request) -> str:
        payload = json.dumps([self.identity, PROMPT_VERSION, request.messages, request.temperature,
                              request.seed if request.temperature > 0 else 0, self.spec.max_new_tokens],
                             ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------ asking

    def ask(self, requests: list[Request], cache: ReplyCache) -> Iterator[tuple[Request, str | None, str | None]]:
        """``(request, reply, error)`` for every request: cached replies first, then the rest as they arrive.
        A request the teacher failed on has ``error`` set (asked again by the next run)."""
        for request in requests:
            request.key = request.key or self.key(request)
        missing = []
        for request in requests:
            if request.key in cache.replies:
                yield request, cache.replies[request.key], None
            else:
                missing.append(request)
        if not missing:
            return
        unique = list({r.key: r for r in missing}.values())  # the same prompt twice is asked once
        waiting: dict[str, list[Request]] = {}
        for request in missing:
            waiting.setdefault(request.key, []).append(request)
        answers = self._ask_endpoint(unique) if self.is_endpoint else self._ask_local(unique)
        for request, reply, error in answers:
            if reply is not None:
                cache.put(request.key, reply)
            for same in waiting[request.key]:
                yield same, reply, error

    def _ask_endpoint(self, requests: list[Request]) -> Iterator[tuple[Request, str | None, str | None]]:
        from seektune.models.endpoint import ChatEndpoint

        endpoint = ChatEndpoint(self.spec.teacher, self.spec.teacher_model, self.spec.api_key_env,
                                timeout_s=self.spec.timeout_s)

        def one(request: Request) -> tuple[Request, str | None, str | None]:
            error = None
            for attempt in range(self.spec.retries + 1):
                try:
                    content, _ = endpoint.complete(request.messages, temperature=request.temperature,
                                                   max_tokens=self.spec.max_new_tokens,
                                                   seed=request.seed if request.temperature > 0 else None)
                    return request, content, None
                except Exception as exc:  # noqa: BLE001 - EndpointError, or a reply that is not JSON
                    error = str(exc)
                    if " answered 4" in error and " answered 429" not in error:
                        break  # a client error (bad key, unknown model): retrying will not help
                    if attempt < self.spec.retries:
                        time.sleep(2 ** attempt)
            return request, None, error

        with ThreadPoolExecutor(max_workers=self.spec.workers) as pool:
            futures = [pool.submit(one, request) for request in requests]
            for future in as_completed(futures):
                yield future.result()

    def _load(self):
        if self._model is None:
            source = Path(self.spec.teacher)
            try:
                if is_run_dir(source):
                    _, loaded, model = RunDir(source).load_tuned()
                    self._model = (model, loaded.tokenizer)
                else:
                    from seektune.models.load import load_model

                    loaded = load_model(self.spec.teacher, dtype=self.dtype, trust_remote_code=self.trust_remote_code)
                    self._model = (loaded.model, loaded.tokenizer)
            except Exception as exc:  # noqa: BLE001 - ModelNotFound, a broken run: one line naming the key
                raise TeacherError(f"synth.teacher {self.spec.teacher!r} cannot be loaded: {exc}") from exc
        return self._model

    def _ask_local(self, requests: list[Request]) -> Iterator[tuple[Request, str | None, str | None]]:
        from seektune.evaluate.generate import generate_answers

        model, tokenizer = self._load()
        size = self.spec.batch_size
        by_setting: dict[tuple[float, int], list[Request]] = {}
        for request in requests:  # one generate call per sampling setting: its seed makes it repeatable
            by_setting.setdefault((request.temperature, request.seed), []).append(request)
        for (temperature, seed), group in by_setting.items():
            for start in range(0, len(group), size):  # a batch at a time, so a kill loses one batch at most
                batch = group[start:start + size]
                replies = generate_answers(model, tokenizer, [r.messages for r in batch], batch_size=size,
                                           max_new_tokens=self.spec.max_new_tokens, temperature=temperature,
                                           seed=seed + start, progress=False)
                for request, reply in zip(batch, replies):
                    yield request, reply["answer"], None


def describe(teacher: SynthTeacher) -> dict[str, Any]:
    return {"teacher": teacher.label, "identity": teacher.identity, "prompt_version": PROMPT_VERSION}
