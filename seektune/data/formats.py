"""Every input format becomes one record: ``{"messages": [...], "meta": {...}}``.

Formats understood (detected per row when ``format: auto``):

- alpaca:   ``{"instruction", "input"?, "output", "system"?, "reasoning"?}``
- sharegpt: ``{"conversations": [{"from": "human|gpt|system", "value"}]}``
- messages: ``{"messages": [{"role", "content", "reasoning"?|"reasoning_content"?}]}``
- columns:  flat rows mapped by the recipe's ``columns:`` (e.g. ``{user: query, assistant: response}``)
- text:     ``{"text"}`` (and documents), kept as ``{"text", "meta"}`` for continued pre-training

R1 reasoning: an assistant turn may carry ``reasoning`` / ``reasoning_content``, or hold
``<think>...</think>`` before its answer; either way it ends up in the message's
``reasoning`` field and the chat template decides how to show it.
"""

from __future__ import annotations

import re
from typing import Any

ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant", "chatgpt": "assistant", "bing": "assistant"}
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


class FormatError(ValueError):
    """A row that cannot become a conversation; ``reason`` is a short code for rejects.jsonl."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def detect_format(row: dict[str, Any], columns: dict[str, str] | None = None) -> str:
    if columns and all(field in row for field in (columns["user"], columns["assistant"])):
        return "columns"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    if columns:
        return "columns"
    if "text" in row:
        return "text"
    raise FormatError(
        "unknown_format",
        f"cannot tell the format from fields {sorted(row)}; expected messages, conversations, "
        "instruction/output, or set data.columns to map your field names",
    )


def _text(row: dict[str, Any], field: str, *, required: bool) -> str | None:
    if field not in row or row[field] is None:
        if required:
            raise FormatError("missing_field", f"missing field '{field}'")
        return None
    value = row[field]
    if not isinstance(value, str):
        raise FormatError("wrong_type", f"field '{field}' must be a string, got {type(value).__name__}")
    return value


def split_think(content: str) -> tuple[str | None, str]:
    """``"<think>r</think>answer"`` -> ``("r", "answer")``; content without a think block is unchanged."""
    match = _THINK.match(content)
    if not match:
        return None, content
    return match.group(1).strip(), content[match.end():]


def _message(role: str, content: Any, reasoning: Any = None, where: str = "") -> dict[str, str]:
    if role not in ROLES:
        raise FormatError("unknown_role", f"{where}unknown role {role!r}; allowed: {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise FormatError("wrong_type", f"{where}content must be a string, got {type(content).__name__}")
    if reasoning is not None and not isinstance(reasoning, str):
        raise FormatError("wrong_type", f"{where}reasoning must be a string, got {type(reasoning).__name__}")
    message = {"role": role, "content": content}
    if role == "assistant":
        think, answer = split_think(content)
        reasoning = reasoning if reasoning is not None else think
        message["content"] = answer
        if reasoning:
            message["reasoning"] = reasoning
    return message


def _from_alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(row, "instruction", required=True)
    extra = _text(row, "input", required=False)
    output = _text(row, "output", required=True)
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages = []
    system = _text(row, "system", required=False)
    if system:
        messages.append(_message("system", system))
    messages.append(_message("user", user))
    messages.append(_message("assistant", output, row.get("reasoning") or row.get("reasoning_content")))
    return messages


def _from_sharegpt(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise FormatError("wrong_type", "'conversations' must be a list")
    messages = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append(_message("system", row["system"]))
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise FormatError("missing_field", f"conversations[{index}] needs 'from' and 'value'")
        role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise FormatError("unknown_role", f"conversations[{index}]: unknown speaker {turn['from']!r}")
        messages.append(_message(role, turn["value"], turn.get("reasoning"), f"conversations[{index}]: "))
    return messages


def _from_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row["messages"]
    if not isinstance(turns, list):
        raise FormatError("wrong_type", "'messages' must be a list")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise FormatError("missing_field", f"messages[{index}] needs 'role' and 'content'")
        reasoning = turn.get("reasoning", turn.get("reasoning_content"))
        messages.append(_message(turn["role"], turn["content"], reasoning, f"messages[{index}]: "))
    return messages


def _from_columns(row: dict[str, Any], columns: dict[str, str]) -> list[dict[str, str]]:
    messages = []
    system = _text(row, columns["system"], required=False) if "system" in columns else None
    if system:
        messages.append(_message("system", system))
    messages.append(_message("user", _text(row, columns["user"], required=True)))
    reasoning = _text(row, columns["reasoning"], required=False) if "reasoning" in columns else None
    messages.append(_message("assistant", _text(row, columns["assistant"], required=True), reasoning))
    return messages


def validate_messages(messages: list[dict[str, str]]) -> None:
    """Roles must go (system?) user, assistant, user, assistant, ... and end with a non-empty answer."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise FormatError("no_turns", "conversation has no user/assistant turns")
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise FormatError(
                "bad_role_order", f"turn {index + 1} is {message['role']!r}, expected {expected!r} (user/assistant alternate)"
            )
    if body[-1]["role"] != "assistant":
        raise FormatError("odd_turn_count", "conversation ends with a user turn; the last turn must be the assistant's")
    for message in body:
        if not message["content"].strip() and not message.get("reasoning"):
            reason = "empty_answer" if message["role"] == "assistant" else "empty_question"
            raise FormatError(reason, f"empty {message['role']} turn")


def to_record(
    row: dict[str, Any],
    origin: str,
    *,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    meta_fields: list[str] | tuple[str, ...] = ("id", "category", "facts", "group"),
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """One raw row -> ``{"messages", "meta"}``; raises FormatError with a reason code."""
    kind = detect_format(row, columns) if fmt == "auto" else fmt
    meta: dict[str, Any] = {"origin": origin}
    for field in meta_fields:
        if field in row and row[field] is not None:
            meta[field] = row[field]
    if kind == "text":  # plain text for continued pre-training: loss on every token
        text = _text(row, "text", required=True)
        if not text.strip():
            raise FormatError("empty_text", "empty text")
        if row.get("document"):
            meta["document"] = True
        return {"text": text, "meta": meta}
    if kind == "columns":
        if not columns:
            raise FormatError("no_columns", "format 'columns' needs data.columns")
        messages = _from_columns(row, columns)
    elif kind == "alpaca":
        messages = _from_alpaca(row)
    elif kind == "sharegpt":
        if "conversations" not in row:
            raise FormatError("missing_field", "missing field 'conversations'")
        messages = _from_sharegpt(row)
    else:
        if "messages" not in row:
            raise FormatError("missing_field", "missing field 'messages'")
        messages = _from_messages(row)
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    validate_messages(messages)
    if "facts" in meta:
        facts = meta["facts"]
        if isinstance(facts, str):  # CSV cells: "45 days|$4.95"
            facts = [f.strip() for f in facts.split("|") if f.strip()]
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            raise FormatError("wrong_type", "field 'facts' must be a list of strings")
        meta["facts"] = facts
    return {"messages": messages, "meta": meta}
