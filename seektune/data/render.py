"""Conversation -> ``(input_ids, labels)`` with the chat template. The only place that
decides the loss mask.

The text is cut into segments at assistant turns: the prompt up to and including the
generation prompt (no loss), then the assistant's answer up to and including the
end-of-turn token (loss), then whatever the template adds after it (no loss). Segments
are tokenised separately, which is exactly how the model sees them at inference
(prompt tokens, then generated tokens), so training and serving agree on token
boundaries. A template that renders no end-of-turn token gets the tokenizer's EOS
appended to each answer: a model that never learns to stop is a common failure.

User text never becomes a control token. A message that contains ``<|im_end|>`` or
``<｜User｜>`` would otherwise forge turns once the rendered text is tokenised, in training
rows as much as in served prompts. So every string of the conversation has its control
tokens wrapped in private-use markers before the template runs; the template's own control
tokens stay unmarked, and only those become control ids. Text without control-token
strings is tokenised exactly as before. (transformers >= 5.24 has the same idea behind
``apply_chat_template(sanitize_control_tokens=True)``, but only for one whole tokenised
chat, and the loss mask needs the text cut into segments first.)
"""

from __future__ import annotations

import re
import weakref
from functools import lru_cache
from typing import Any

IGNORE_INDEX = -100


class RenderError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Private-use code points (plane 15) that wrap a control token typed by a user; stripped from user text first.
_OPEN, _CLOSE = "\U000f0000", "\U000f0001"


# tokenizer -> ((chat template, vocabulary size), its control tokens): every rendered row asks, so the
# scan over the added tokens runs once per tokenizer (again only if its template or vocabulary changes)
_CONTROL_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def control_tokens(tokenizer) -> tuple[str, ...]:
    """The added tokens that user text must not produce: every special token, the tokenizer's
    ``chat_control_tokens`` if it lists them, and any added token the chat template writes
    (DeepSeek-R1's ``<think>`` is not special but is structure). Whitespace tokens are left
    alone: templates and text both hold them as ordinary text."""
    template = getattr(tokenizer, "chat_template", None) or ""
    key = (template if isinstance(template, str) else tuple(sorted(template.items())),
           len(tokenizer) if hasattr(tokenizer, "__len__") else None)
    try:
        cached = _CONTROL_TOKENS.get(tokenizer)
    except TypeError:  # a stand-in that cannot be weakly referenced: no cache
        cached = None
    if cached is not None and cached[0] == key:
        return cached[1]
    listed = set(getattr(tokenizer, "chat_control_tokens", None) or ())
    text = template if isinstance(template, str) else "\0".join(template.values())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}  # none: a stand-in tokenizer in tests
    tokens = tuple(sorted(
        token.content for token in added.values()
        if token.special or token.content in listed or (token.content in text and not token.content.isspace())
    ))
    try:
        _CONTROL_TOKENS[tokenizer] = (key, tokens)
    except TypeError:
        pass
    return tokens


@lru_cache(maxsize=16)
def _patterns(tokens: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """A regex for any control token (longest first), and one that splits marked text into
    ``[text, marked token, text, ...]`` (a lone marker, left by a template's string method, splits too)."""
    alternatives = "|".join(map(re.escape, sorted(tokens, key=len, reverse=True))) or "(?!)"
    return re.compile(alternatives), re.compile(f"{_OPEN}({alternatives}){_CLOSE}|[{_OPEN}{_CLOSE}]")


def mark_user_text(tokenizer, value: Any) -> Any:
    """``value`` (a string, or messages) with each control token in its strings wrapped in markers."""
    pattern, _ = _patterns(control_tokens(tokenizer))

    def mark(item: Any) -> Any:
        if isinstance(item, str):
            item = item.replace(_OPEN, "").replace(_CLOSE, "")
            return pattern.sub(lambda m: _OPEN + m.group(0) + _CLOSE, item)
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [mark(inner) for inner in item]
        return item

    return mark(value)


def _plain_ids(tokenizer, text: str) -> list[int]:
    """``text`` as ordinary text: no added token, special or not, is matched."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python tokenizer: split_special_tokens is all it offers
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)] if backend.pre_tokenizer else [text]
    return [token.id for piece in pieces for token in backend.model.tokenize(piece)]


def _after_newline(encode, text: str, newline: list[int]) -> list[int]:
    """Encode a piece from the middle of a text: after a newline that is then removed, so a
    SentencePiece tokenizer does not add the prefix space it gives the start of a string."""
    ids = encode("\n" + text)
    return ids[len(newline):] if ids[: len(newline)] == newline else encode(text)


def encode_marked(tokenizer, text: str) -> list[int]:
    """Token ids of text rendered from marked user text: marked control tokens as plain text,
    the rest (the template's control tokens included) as the tokenizer encodes it."""
    _, markers = _patterns(control_tokens(tokenizer))
    pieces = markers.split(text)
    if len(pieces) == 1:  # nothing marked: exactly the tokenizer's own encoding
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    encode = lambda piece: tokenizer(piece, add_special_tokens=False)["input_ids"]  # noqa: E731
    newline = encode("\n")
    ids = encode(pieces[0]) if pieces[0] else []
    for index, piece in enumerate(pieces[1:], start=1):
        if not piece:
            continue
        if index % 2 == 1:  # a marked token: plain text
            plain = _after_newline(lambda t: _plain_ids(tokenizer, t), piece, _plain_ids(tokenizer, "\n"))
            if tokenizer.convert_tokens_to_ids(piece) in plain:
                raise RenderError("control_token_from_text", f"the tokenizer produces {piece!r} from plain text")
            ids += plain
        else:
            ids += _after_newline(encode, piece, newline)
    return ids


def encode_user_text(tokenizer, text: str) -> list[int]:
    """Token ids of raw user text (a completion prompt, a pre-training row): control-token
    strings in it are plain text. No BOS/EOS is added."""
    return encode_marked(tokenizer, mark_user_text(tokenizer, text))


def with_special_tokens(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` framed as the tokenizer frames any text it encodes with ``add_special_tokens`` (e.g. a BOS),
    found by encoding one plain token both ways."""
    bare, framed = (tokenizer("a", add_special_tokens=flag)["input_ids"] for flag in (False, True))
    start = next((i for i in range(len(framed) - len(bare) + 1) if framed[i:i + len(bare)] == bare), 0)
    return framed[:start] + ids + framed[start + len(bare):]


def _apply(tokenizer, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _structural_find(text: str, token: str) -> int:
    """Where ``token`` first occurs in ``text`` other than inside markers (there a user typed it); -1 if nowhere."""
    at = text.find(token)
    while at > 0 and text[at - 1] == _OPEN:
        at = text.find(token, at + 1)
    return at


def segments(tokenizer, messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, trained)`` pieces; user text is marked
    (see ``encode_marked``)."""
    messages = mark_user_text(tokenizer, messages)
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
        cut = _structural_find(answer, eos) if eos else -1
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
        ids = encode_marked(tokenizer, text)
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
        ids = encode_user_text(tokenizer, record["text"])
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        ids = ids[:max_length] if max_length else ids
        return {"input_ids": ids, "labels": list(ids)}
    return render(tokenizer, record["messages"], max_length)


def _prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def prompt_text(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The text a model is given to answer the last user turn (the final assistant turn dropped).
    For display and string checks; tokenise a prompt with ``prompt_ids``, never this text."""
    return _apply(tokenizer, _prompt_messages(messages), True)


def prompt_ids(tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The token ids of ``prompt_text``, with control-token strings in user text as plain text."""
    return encode_marked(tokenizer, _apply(tokenizer, mark_user_text(tokenizer, _prompt_messages(messages)), True))


def continuation_ids(tokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], str]:
    """A served conversation's prompt ``(ids, text)``: every message kept, the generation prompt added.

    Unlike ``prompt_ids`` (which drops a final assistant turn: in a training row it is the
    reference answer), a final assistant message here is the start of the answer, a prefix the
    model continues: its text follows the generation prompt, as plain text like all user text."""
    head, prefix = messages, ""
    if messages and messages[-1]["role"] == "assistant":
        head, prefix = messages[:-1], messages[-1]["content"] or ""
    if head:
        text = _apply(tokenizer, head, True)
        ids = encode_marked(tokenizer, _apply(tokenizer, mark_user_text(tokenizer, head), True))
    else:  # only a prefix: the generation prompt alone (what a one-turn rendering adds for the answer)
        probe = [{"role": "user", "content": ""}]
        text = _apply(tokenizer, probe, True)[len(_apply(tokenizer, probe, False)):]
        ids = encode_marked(tokenizer, text)
    if prefix:
        ids, text = ids + encode_user_text(tokenizer, prefix), text + prefix
    return ids, text


# ---------------------------------------------------------------- for trainers that tokenise rows themselves


class _MarkedText:
    """Mixin over a tokenizer class: text carrying `mark_user_text`'s markers is tokenised with
    `encode_marked`, in ``apply_chat_template(tokenize=True)`` and in ``__call__`` on one string;
    everything else is the tokenizer's own behaviour."""

    def apply_chat_template(self, conversation, *args, **kwargs):
        simple = (kwargs.get("tokenize", True) and kwargs.get("return_dict", True) and not args
                  and not any(kwargs.get(k) for k in ("return_tensors", "padding", "truncation",
                                                      "return_assistant_tokens_mask", "tokenizer_kwargs"))
                  and isinstance(conversation, list) and conversation and isinstance(conversation[0], dict))
        if not simple:
            return super().apply_chat_template(conversation, *args, **kwargs)
        text = super().apply_chat_template(conversation, **{**kwargs, "tokenize": False, "return_dict": False})
        ids = encode_marked(self, text)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def __call__(self, text=None, *args, **kwargs):
        if not (isinstance(text, str) and (_OPEN in text or _CLOSE in text)) or args or kwargs.get("return_tensors"):
            return super().__call__(text, *args, **kwargs)
        ids = encode_marked(self, text)
        if kwargs.get("add_special_tokens", True):
            ids = with_special_tokens(self, ids)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}


_MARKED_CLASSES: dict[type, type] = {}


def control_safe(tokenizer):
    """A copy of ``tokenizer`` for a trainer that renders and tokenises rows itself (trl's DPO / KTO /
    ORPO): give it rows passed through `mark_user_text`, and control-token strings in their text stay
    plain text, as in `render`. The copy shares the tokenizer's vocabulary and saves as the same class."""
    base = type(tokenizer)
    if isinstance(tokenizer, _MarkedText):
        return tokenizer
    if base not in _MARKED_CLASSES:  # the same name, so save_pretrained records the class from_pretrained knows
        _MARKED_CLASSES[base] = type(base.__name__, (_MarkedText, base), {"__module__": base.__module__})
    safe = object.__new__(_MARKED_CLASSES[base])
    safe.__dict__.update(tokenizer.__dict__)
    return safe
