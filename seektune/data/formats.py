"""Every input format becomes one record: ``{"messages": [...], "meta": {...}}``.

Formats understood (detected per row when ``format: auto``):

- alpaca:   ``{"instruction", "input"?, "output", "system"?, "reasoning"?}``
- sharegpt: ``{"conversations": [{"from": "human|gpt|system", "value"}]}``
- messages: ``{"messages": [{"role", "content", "reasoning"?|"reasoning_content"?}]}``
- columns:  flat rows mapped by the recipe's ``columns:`` (e.g. ``{user: query, assistant: response}``)
- text:     ``{"text"}`` (and documents), kept as ``{"text", "meta"}`` for continued pre-training
- preference (dpo / orpo / kto), see ``_from_preference``:
    pairs: trl's ``{"prompt", "chosen", "rejected"}`` (prompt a string or messages; chosen / rejected a
    string, one message, or messages ending with the answer; without a prompt, the turns before the
    answers are the prompt), LLaMA-Factory's ``{"conversations"|"messages": prompt turns, "chosen":
    {"from", "value"}, "rejected": {...}}``, and seektune's own record form below;
    unpaired (kto): ``{"prompt", "completion", "label": true|false}``.
  A pair becomes ``{"messages": prompt + [chosen answer], "rejected": "text", "meta"}`` and a kto row
  ``{"messages": prompt + [completion], "label": bool, "meta"}``: the chosen answer is the reference
  every other stage (filters, dedup, eval) sees, and reading such a record again gives the same record.

R1 reasoning: an assistant turn may carry ``reasoning`` / ``reasoning_content``, or hold
``<think>...</think>`` before its answer; either way it ends up in the message's
``reasoning`` field (:func:`seektune.text.split_think`) and the chat template decides how to show it.
"""

from __future__ import annotations

from typing import Any

from seektune.text import split_think

ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant", "chatgpt": "assistant", "bing": "assistant"}


class FormatError(ValueError):
    """A row that cannot become a conversation; ``reason`` is a short code for rejects.jsonl."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def detect_format(row: dict[str, Any], columns: dict[str, str] | None = None) -> str:
    if columns and all(field in row for field in (columns["user"], columns["assistant"])):
        return "columns"
    if is_preference_row(row):
        return "preference"
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


def is_preference_row(row: dict[str, Any]) -> bool:
    """chosen / rejected (a pair), or a completion or a true/false label beside a prompt (kto). A
    ``{text, label}`` classification row is not one, nor a conversation whose ``label`` is a category."""
    if "chosen" in row or "rejected" in row or "completion" in row:
        return True
    return isinstance(row.get("label"), bool) and any(field in row for field in ("prompt", "messages", "conversations"))


def _text(row: dict[str, Any], field: str, *, required: bool) -> str | None:
    if field not in row or row[field] is None:
        if required:
            raise FormatError("missing_field", f"missing field '{field}'")
        return None
    value = row[field]
    if not isinstance(value, str):
        raise FormatError("wrong_type", f"field '{field}' must be a string, got {type(value).__name__}")
    return value


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
    messages = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append(_message("system", row["system"]))
    return messages + _turns(row["conversations"], "conversations")


def _from_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return _turns(row["messages"], "messages")


def _from_columns(row: dict[str, Any], columns: dict[str, str]) -> list[dict[str, str]]:
    messages = []
    system = _text(row, columns["system"], required=False) if "system" in columns else None
    if system:
        messages.append(_message("system", system))
    messages.append(_message("user", _text(row, columns["user"], required=True)))
    reasoning = _text(row, columns["reasoning"], required=False) if "reasoning" in columns else None
    messages.append(_message("assistant", _text(row, columns["assistant"], required=True), reasoning))
    return messages


def _turn(turn: Any, where: str) -> dict[str, str]:
    """One message in either spelling: ``{"role", "content"}`` or ShareGPT's ``{"from", "value"}``."""
    if isinstance(turn, dict) and "role" in turn and "content" in turn:
        return _message(turn["role"], turn["content"], turn.get("reasoning", turn.get("reasoning_content")),
                        f"{where}: ")
    if isinstance(turn, dict) and "from" in turn and "value" in turn:
        role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise FormatError("unknown_role", f"{where}: unknown speaker {turn['from']!r}")
        return _message(role, turn["value"], turn.get("reasoning"), f"{where}: ")
    raise FormatError("missing_field", f"{where} needs 'role' and 'content' (or 'from' and 'value')")


def _turns(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise FormatError("wrong_type", f"'{field}' must be a list of messages, got {type(value).__name__}")
    return [_turn(turn, f"{field}[{index}]") for index, turn in enumerate(value)]


def _answer(value: Any, field: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """A chosen / rejected / completion field -> (the turns before it, the assistant answer).

    A string is the answer; one message or a list of messages ends with it (trl's conversational
    form repeats the prompt there when the row has no separate prompt)."""
    if value is None:
        raise FormatError("missing_field", f"missing field '{field}'")
    if isinstance(value, str):
        return [], _message("assistant", value, where=f"{field}: ")
    turns = [_turn(value, field)] if isinstance(value, dict) else _turns(value, field)
    if not turns:
        raise FormatError("empty_answer", f"'{field}' is an empty list")
    if turns[-1]["role"] != "assistant":
        raise FormatError("not_an_answer",
                          f"'{field}' must end with an assistant answer, got a {turns[-1]['role']!r} turn")
    return turns[:-1], turns[-1]


def _prompt(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The prompt turns: ``prompt`` (a string or messages), else ``messages`` / ``conversations``; None when
    the row has none (the answers then carry it)."""
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            turns = [_message("user", prompt)]
        elif isinstance(prompt, list):
            turns = _turns(prompt, "prompt")
        else:
            raise FormatError("wrong_type",
                              f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
    elif "messages" in row or "conversations" in row:
        field = "messages" if "messages" in row else "conversations"
        turns = _turns(row[field], field)
    else:
        return None
    if isinstance(row.get("system"), str) and row["system"].strip() and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, _message("system", row["system"]))
    return turns


def _same_turns(a: list[dict[str, str]], b: list[dict[str, str]]) -> bool:
    """Equal roles and contents, system turns aside (trl's implicit-prompt rows often drop the system prompt)."""
    def key(turns):
        return [(t["role"], t["content"]) for t in turns if t["role"] != "system"]
    return key(a) == key(b)


def rejected_text(message: dict[str, str]) -> str:
    """A rejected answer as one string: its reasoning, if any, in a ``<think>`` block (``_message`` splits it off
    again)."""
    reasoning = message.get("reasoning")
    return f"<think>\n{reasoning}\n</think>\n\n{message['content']}" if reasoning else message["content"]


def rejected_message(record: dict[str, Any]) -> dict[str, str]:
    """A pair record's rejected answer as an assistant message (reasoning split off as for the chosen one)."""
    return _message("assistant", record["rejected"])


def check_preference(record: dict[str, Any]) -> None:
    """The checks a preference record must pass, before and after cleaning: a non-empty rejected answer that
    differs from the chosen one, or a true/false kto label. FormatError otherwise."""
    if "rejected" in record:
        rejected = record["rejected"]
        if not isinstance(rejected, str):
            raise FormatError("wrong_type", f"'rejected' must be a string, got {type(rejected).__name__}")
        bad = rejected_message(record)
        if not bad["content"].strip() and not bad.get("reasoning"):
            raise FormatError("empty_rejected", "empty rejected answer")
        good = record["messages"][-1]
        if (good["content"].strip(), good.get("reasoning")) == (bad["content"].strip(), bad.get("reasoning")):
            raise FormatError("same_answers", "chosen and rejected are the same answer; the pair teaches nothing")
    if "label" in record and not isinstance(record["label"], bool):
        raise FormatError("wrong_type",
                          f"'label' must be true (desirable) or false (undesirable), got {record['label']!r}")


def _from_preference(row: dict[str, Any]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A preference row -> (prompt + [chosen answer or completion], {"rejected": text} or {"label": bool})."""
    paired = "chosen" in row or "rejected" in row
    if not paired and "completion" not in row and "label" not in row:
        raise FormatError("missing_field", "a preference row needs 'chosen' and 'rejected' (dpo / orpo) or "
                          "'completion' and 'label' (kto)")
    prompt = _prompt(row)
    answer_field = "chosen" if paired else "completion"
    if answer_field in row:
        prefixes = [_answer(row[answer_field], answer_field)]
        answer = prefixes[0][1]
    elif prompt and prompt[-1]["role"] == "assistant":  # seektune's record form: the conversation ends with it
        prefixes, answer = [], prompt.pop()
    else:
        raise FormatError("missing_field", f"missing field '{answer_field}'")
    extra: dict[str, Any] = {}
    if paired:
        if row.get("rejected") is None:
            raise FormatError("missing_field", "missing field 'rejected' (a pair needs the worse answer too)")
        if isinstance(row["rejected"], str) and "chosen" not in row:  # the record form keeps the text as it is
            extra["rejected"] = row["rejected"]
        else:
            prefix, rejected = _answer(row["rejected"], "rejected")
            prefixes.append((prefix, rejected))
            extra["rejected"] = rejected_text(rejected)
    else:
        if "label" not in row:
            raise FormatError("missing_field", "missing field 'label' (kto: true for a desirable completion, false "
                              "for an undesirable one; for SFT on prompt/completion rows set data.columns: "
                              "{user: prompt, assistant: completion})")
        extra["label"] = row["label"]
    before = [prefix for prefix, _ in prefixes if prefix]  # turns the answers repeat (trl's implicit prompt)
    if prompt is None:
        if not before:
            raise FormatError("missing_field", "missing field 'prompt' (or 'messages' / 'conversations')")
        prompt = before[0]
    for other in before:
        if not _same_turns(other, prompt):
            raise FormatError("prompt_mismatch",
                              "the turns before the chosen / rejected answers differ from the prompt")
    return [*prompt, answer], extra


def validate_messages(messages: list[dict[str, str]]) -> None:
    """Roles must go (system?) user, assistant, user, assistant, ... and end with a non-empty answer."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise FormatError("no_turns", "conversation has no user/assistant turns")
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise FormatError("bad_role_order", f"turn {index + 1} is {message['role']!r}, expected {expected!r} "
                              "(user/assistant alternate)")
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
    """One raw row -> ``{"messages", "meta"}`` (plus ``rejected`` or ``label`` for preference rows); raises
    FormatError with a reason code."""
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
    extra: dict[str, Any] = {}
    if kind == "preference":
        messages, extra = _from_preference(row)
    elif kind == "columns":
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
    record = {"messages": messages, **extra, "meta": meta}
    check_preference(record)
    if "facts" in meta:
        facts = meta["facts"]
        if isinstance(facts, str):  # CSV cells: "45 days|$4.95"
            facts = [f.strip() for f in facts.split("|") if f.strip()]
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            raise FormatError("wrong_type", "field 'facts' must be a list of strings")
        meta["facts"] = facts
    return record


def with_reasoning(record: dict[str, Any], policy: str) -> dict[str, Any]:
    """A record with its assistant turns' reasoning as ``data.reasoning`` says: ``drop_history`` removes it from
    every assistant turn but the last, ``drop`` from all; ``keep`` returns the record as it is."""
    if policy == "keep" or "messages" not in record:
        return record
    assistant = [i for i, m in enumerate(record["messages"]) if m["role"] == "assistant"]
    keep = {assistant[-1]} if policy == "drop_history" and assistant else set()
    messages = [m if i in keep or "reasoning" not in m else {k: v for k, v in m.items() if k != "reasoning"}
                for i, m in enumerate(record["messages"])]
    return {**record, "messages": messages}
