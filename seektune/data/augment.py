"""Augmentation: template filling from entity lists, synonym swaps, paraphrases by a generator.

Only the user side is rewritten: answers carry the facts the model must learn, so they
are never altered. Every new record is tagged with the record it came from
(``meta.augmented_from`` and ``meta.augment``) and its origin says so (``faq.jsonl:12+para1``).
Augmentation runs on the train split only, after splitting, so a paraphrase of a test
question can never leak into training.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _derived(record: dict[str, Any], kind: str, number: int) -> dict[str, Any]:
    new = copy.deepcopy(record)
    origin = record["meta"].get("origin", "?")
    new["meta"]["origin"] = f"{origin}+{kind}{number}"
    new["meta"]["augmented_from"] = origin
    new["meta"]["augment"] = kind
    return new


def _user_turns(record: dict[str, Any]):
    return [m for m in record.get("messages", []) if m["role"] == "user"]


def fill_templates(records: list[dict[str, Any]], entities: dict[str, list[str]]) -> tuple[list, list]:
    """Rows whose text holds ``{name}`` placeholders are expanded with every combination of the
    named entity lists. Returns ``(records, rejects)``: template rows are replaced by their
    fillings (an unfilled placeholder is not training text); a placeholder with no entity list
    is a reject, not a silent pass-through."""
    out, rejects = [], []
    for record in records:
        texts = [m["content"] for m in record.get("messages", [])]
        names = sorted({n for text in texts for n in _PLACEHOLDER.findall(text)})
        if not names:
            out.append(record)
            continue
        missing = [n for n in names if n not in entities]
        if missing:
            rejects.append((record, "unknown_placeholder", f"no entity list for {{{', '.join(missing)}}}"))
            continue
        for number, values in enumerate(itertools.product(*(entities[n] for n in names)), 1):
            new = _derived(record, "template", number)
            mapping = dict(zip(names, values))
            for message in new["messages"]:
                message["content"] = _PLACEHOLDER.sub(lambda m: mapping.get(m.group(1), m.group(0)), message["content"])
            out.append(new)
    return out, rejects


def expand_terms(records: list[dict[str, Any]], expansions: dict[str, list[str]], per_row: int, seed: int) -> list:
    """New questions with a term replaced by a more specific one (e.g. 患者 -> 糖尿病患者)."""
    rng = random.Random(seed)
    new_records = []
    for record in records:
        options = [(term, value) for term, values in expansions.items() for value in values
                   if any(term in m["content"] for m in _user_turns(record))]
        rng.shuffle(options)
        for number, (term, value) in enumerate(options[:per_row], 1):
            new = _derived(record, "expand", number)
            for message in _user_turns(new):
                message["content"] = message["content"].replace(term, value)
            new_records.append(new)
    return new_records


def swap_synonyms(records: list[dict[str, Any]], synonyms: dict[str, list[str]], per_row: int, seed: int) -> list:
    """New questions with words from the user's dictionary replaced by a synonym (whole words only
    for Latin script; plain substrings for CJK, which has no spaces)."""
    rng = random.Random(seed)
    patterns = {
        word: re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE) if word.isascii() else re.compile(re.escape(word))
        for word in synonyms
    }
    new_records = []
    for record in records:
        present = [w for w, p in patterns.items() if any(p.search(m["content"]) for m in _user_turns(record))]
        if not present:
            continue
        seen = {tuple(m["content"] for m in _user_turns(record))}
        for number in range(1, per_row + 1):
            new = _derived(record, "synonym", number)
            for message in _user_turns(new):
                for word in present:
                    message["content"] = patterns[word].sub(lambda _: rng.choice(synonyms[word]), message["content"])
            key = tuple(m["content"] for m in _user_turns(new))
            if key not in seen:
                seen.add(key)
                new_records.append(new)
    return new_records


PARAPHRASE_PROMPT = (
    "Rewrite the customer's question below in different words, keeping its meaning and language. "
    "Reply with the rewritten question only.\n\nQuestion: {question}"
)


def paraphrase(records: list[dict[str, Any]], generate: Callable[[str], str], per_row: int) -> tuple[list, list]:
    """Paraphrase the last user turn with a generator (an OpenAI-compatible endpoint or a local model).
    Returns ``(new_records, failures)``; a failing call is reported, never silently dropped."""
    from tqdm.auto import tqdm

    new_records, failures = [], []
    for record in tqdm(records, desc="paraphrasing", unit="row"):
        users = _user_turns(record)
        if not users:
            continue
        seen = {users[-1]["content"].strip().lower()}
        for number in range(1, per_row + 1):
            try:
                text = generate(PARAPHRASE_PROMPT.format(question=users[-1]["content"])).strip().strip('"')
            except Exception as exc:  # network errors, model errors: report per row
                failures.append((record, "paraphrase_failed", str(exc)))
                break
            if not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            new = _derived(record, "para", number)
            _user_turns(new)[-1]["content"] = text
            new_records.append(new)
    return new_records, failures


def local_generator(model_name: str, max_new_tokens: int = 64) -> Callable[[str], str]:
    """A paraphraser backed by a local chat model (any seektune model name: alias, directory, .gguf,
    Hub id), loaded with its registry chat template; it samples, so repeated calls differ."""
    import torch

    from seektune.data.render import prompt_ids
    from seektune.models.load import load_model

    loaded = load_model(model_name)
    model, tokenizer = loaded.model, loaded.tokenizer
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)

    @torch.inference_mode()
    def generate(prompt: str) -> str:
        # the prompt quotes a user's row: its control-token strings stay plain text
        ids = torch.tensor([prompt_ids(tokenizer, [{"role": "user", "content": prompt}])], device=model.device)
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=True, temperature=0.8, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=eos)
        return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)

    return generate
