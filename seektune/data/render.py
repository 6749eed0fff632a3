"""Conversation -> ``(input_ids, labels)`` with the chat template. The only place that
decides the loss mask.

The text is cut into segments at assistant turns: the prompt up to and including the
generation prompt (no loss), then the assistant's answer up to and including the
end-of-turn token (loss), then whatever the template adds after it (no loss). Segments
are tokenised separately, which is exactly how the model sees them at inference
(prompt tokens, then generated tokens), so training and serving agree on token
boundaries. A template that renders no end-of-turn token gets the tokenizer's EOS
appended to each answer: a model that never learns to stop is a common failure.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


class RenderError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _apply(tokenizer, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def segments(tokenizer, messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, trained)`` pieces."""
    eos = tokenizer.eos_token
    pieces: list[tuple[str, bool]] = []
    done = 0  # characters of the full text already assigned to pieces
    full = _apply(tokenizer, messages, False)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _apply(tokenizer, messages[:index], True)
        upto = _apply(tokenizer, messages[: index + 1], False)
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise RenderError(
                "template_not_prefix_stable",
                "the chat template renders earlier turns differently once later turns exist; "
                "set model.chat_template to a template that does not rewrite history",
            )
        answer = upto[len(prompt):]
        cut = answer.find(eos) if eos else -1
        if cut >= 0:
            trained, rest = answer[: cut + len(eos)], answer[cut + len(eos):]
        else:
            trained, rest = answer + (eos or ""), ""
        pieces.append((prompt[done:], False))
        pieces.append((trained, True))
        if rest:
            pieces.append((rest, False))
        done = len(upto)
    if done < len(full):
        pieces.append((full[done:], False))
    return [(text, trained) for text, trained in pieces if text]


def render(tokenizer, messages: list[dict[str, Any]], max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels (-100 where no loss is taken). Truncates from the right to ``max_length``."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise RenderError(
            "no_labels_after_truncation",
            f"no answer tokens left within max_length={max_length} (the prompt alone is too long)",
        )
    return {"input_ids": input_ids, "labels": labels}


def render_record(tokenizer, record: dict[str, Any], max_length: int | None = None) -> dict[str, list[int]]:
    """A conversation record, or a text record (continued pre-training: every token and EOS carry loss)."""
    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        ids = ids[:max_length] if max_length else ids
        return {"input_ids": ids, "labels": list(ids)}
    return render(tokenizer, record["messages"], max_length)


def prompt_text(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The text a model is given to answer the last user turn (the final assistant turn dropped)."""
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return _apply(tokenizer, messages, True)
