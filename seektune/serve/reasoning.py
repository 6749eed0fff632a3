"""Reasoning models' ``<think>...</think>`` split off the answer, streamed or whole, the same way.

    splitter = ThinkSplitter(in_reasoning=prompt.rstrip().endswith("<think>"))
    pieces = splitter.feed(text) + splitter.feed(more) + splitter.finish()   # [(kind, text), ...]

The server sends the pieces as OpenAI-style ``reasoning_content`` and ``content`` deltas.
"""

from __future__ import annotations


class ThinkSplitter:
    """Streamed text -> ("reasoning_content" | "content", text) pieces, split at <think>...</think>.

    R1-style models think inside ``<think>`` first (their template may already open the tag
    in the prompt: ``in_reasoning``). Whitespace around both parts is dropped, holding back
    only what could still turn into a tag or trailing whitespace, so the concatenated
    stream equals the non-streaming answer exactly.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, in_reasoning: bool = False):
        self.mode = "reasoning" if in_reasoning else "start"  # start -> reasoning? -> content
        self.buffer = ""
        self.lead = True  # at the start of the current part: drop leading whitespace

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buffer += text
        out: list[tuple[str, str]] = []
        while True:
            if self.lead:
                self.buffer = self.buffer.lstrip()
                if not self.buffer:
                    return out
            if self.mode == "start":
                if self.buffer.startswith(self.OPEN):
                    self.buffer, self.mode, self.lead = self.buffer[len(self.OPEN):], "reasoning", True
                    continue
                if self.OPEN.startswith(self.buffer):
                    return out  # may still become <think>
                self.mode = "content"
            elif self.mode == "reasoning":
                end = self.buffer.find(self.CLOSE)
                if end >= 0:
                    self._emit(out, "reasoning_content", self.buffer[:end].rstrip())
                    self.buffer, self.mode, self.lead = self.buffer[end + len(self.CLOSE):], "content", True
                    continue
                self._emit_held(out, "reasoning_content", self.CLOSE)
                return out
            else:
                self._emit_held(out, "content", None)
                return out

    def _emit(self, out, kind, text):
        if text:
            out.append((kind, text))
            self.lead = False

    def _emit_held(self, out, kind, tag):
        """Emit the buffer except trailing whitespace and any tail that could start ``tag``."""
        cut = len(self.buffer)
        if tag:
            for size in range(min(len(tag) - 1, cut), 0, -1):
                if self.buffer.endswith(tag[:size]):
                    cut -= size
                    break
        cut = len(self.buffer[:cut].rstrip())
        self._emit(out, kind, self.buffer[:cut])
        self.buffer = self.buffer[cut:]

    def finish(self) -> list[tuple[str, str]]:
        kind = "reasoning_content" if self.mode == "reasoning" else "content"
        text, self.buffer = self.buffer.strip(), ""
        return [(kind, text)] if text else []
