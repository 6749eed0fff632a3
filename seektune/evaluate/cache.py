"""The eval stage's answer cache: answers keyed by (system, generation settings, conversation), so a re-run
generates only what changed, and every run on the same untrained base model reuses its answers.

    cache = AnswerCache(run.eval_cache, enabled=True, shared_dir=shared_answers_dir())
    answers, reused = cache.answers(system, conversations, options, "base model")
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from seektune.models.load import cache_root

__all__ = ["AnswerCache", "shared_answers_dir"]

Answer = dict[str, Any]  # {"answer", "reasoning"}; systems and options are the eval stage's System and GenOptions


def shared_answers_dir() -> Path:
    """``$SEEKTUNE_ANSWERS`` or ``$SEEKTUNE_CACHE/answers`` (default ``~/.cache/seektune/answers``)."""
    return Path(os.environ.get("SEEKTUNE_ANSWERS") or cache_root() / "answers")


class AnswerCache:
    """Answers on disk, keyed by (system, generation settings, conversation): the run's own file, and for a
    system marked ``shared`` (an untrained model, keyed by its weights' fingerprint and chat template) also one
    file per model under ``shared_dir`` (`shared_answers_dir`), so every run on the same base and test
    questions reuses the base model's answers instead of generating them again."""

    def __init__(self, path: Path, enabled: bool = True, shared_dir: Path | None = None):
        self.path = path
        self.enabled = enabled
        self.shared_dir = shared_dir
        self.entries: dict[str, Answer] = self._read(path) if enabled else {}

    @staticmethod
    def _read(path: Path) -> dict[str, Answer]:
        entries: dict[str, Answer] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    entries[item["key"]] = {"answer": item["answer"], "reasoning": item.get("reasoning")}
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run: that answer is generated again
        return entries

    def _shared_file(self, system: Any) -> Path | None:
        if not (self.enabled and system.shared and self.shared_dir is not None):
            return None
        return self.shared_dir / f"{hashlib.sha256(system.key.encode()).hexdigest()[:32]}.jsonl"

    @staticmethod
    def _append(path: Path, new: dict[str, Answer]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            for k, value in new.items():
                handle.write(json.dumps({"key": k, **value}, ensure_ascii=False) + "\n")

    @staticmethod
    def key(system: Any, options: Any, messages: list[dict[str, Any]]) -> str:
        prompt = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
        payload = json.dumps([system.key, options.identity(), prompt], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def answers(self, system: Any, conversations, options: Any, desc: str) -> tuple[list[Answer], int]:
        """Every conversation's answer, generating only those not cached; returns (answers, reused)."""
        keys = [self.key(system, options, messages) for messages in conversations]
        shared_file = self._shared_file(system)
        shared = self._read(shared_file) if shared_file is not None else {}
        from_shared = {k: shared[k] for k in keys if k not in self.entries and k in shared}
        if from_shared:  # into the run's own file too: the run keeps what it was scored on
            self._append(self.path, from_shared)
            self.entries.update(from_shared)
        missing = [i for i, k in enumerate(keys) if not self.enabled or k not in self.entries]
        fresh = system.answer([conversations[i] for i in missing], options, desc) if missing else []
        new = dict(zip((keys[i] for i in missing), fresh))
        if self.enabled and new:
            self._append(self.path, new)
            if shared_file is not None:
                self._append(shared_file, new)
            self.entries.update(new)
        lookup = {**self.entries, **new}
        return [lookup[k] for k in keys], len(conversations) - len(missing)
