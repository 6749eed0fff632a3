"""Rule rewards for ``objective: grpo``: DeepSeek-R1's kind (no neural reward model to hack), in domain form.

    grpo:
      rewards:
        - facts                      # share of the row's reference facts in the answer
        - {name: format, weight: 0.5}
        - {name: python, function: my_rewards:politeness}

Each built-in scores one completion in [0, 1] (``None`` where it does not apply to a row, which trl
leaves out of that reward's mean):

* ``facts``: the share of the row's ``meta.facts`` found in the answer; a fact with numbers also counts
  when the answer writes them differently (``1,000`` / ``1000``, ``四十五天`` / ``45天``, ``forty-five
  days`` / ``45 days``, ``$14.50`` / ``14.50 dollars``);
* ``match``: 1 when the answer's final value (the last ``\\boxed{...}``, or ``pattern``'s first group)
  equals the reference's (numerically when both are numbers);
* ``format``: R1's form, one non-empty ``<think>...</think>`` and then a non-empty answer (a prompt that
  already opened ``<think>`` counts as the completion's start);
* ``language``: DeepSeek's language consistency, the share of the row's language among the letters of
  the reasoning and the answer (CJK ideographs for ``zh``, Latin letters otherwise);
* ``glossary``: 0 when a forbidden variant appears; else the share of the required terms the reference
  uses that the answer uses as written;
* ``length``: 1 up to ``budget`` completion tokens, falling linearly to 0 at twice the budget;
* ``python``: ``module:function``, called as trl calls any reward function.

The reasoning is never scored as the answer (:func:`seektune.text.strip_reasoning`).
"""

from __future__ import annotations

import importlib
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Sequence

from seektune.glossary import GlossaryEntry, forbidden_variants, variants_used
from seektune.text import CJK_IDEOGRAPHS, normalise_for_match, split_think, strip_reasoning

BUILT_IN = ("facts", "match", "format", "language", "glossary", "length")

# ---------------------------------------------------------------- completions


def completion_text(completion: Any) -> str:
    """A trl completion as text: a string as it is, a conversation's assistant turns joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return "".join(str(turn.get("content") or "") for turn in completion or [] if isinstance(turn, dict))


def prompt_opens_think(prompt: Any) -> bool:
    """Whether the prompt already opened a ``<think>`` block the completion continues (R1 templates end the
    generation prompt with ``<think>\\n``)."""
    text = prompt if isinstance(prompt, str) else completion_text(prompt)
    tail = text.rstrip()
    return tail.endswith("<think>")


def _full(prompt: Any, completion: Any, opened: bool = False) -> str:
    """The completion as the model wrote it, with the ``<think>`` its prompt opened (``opened``: the chat template
    opens one for every answer, as trl hands conversational prompts over as messages, not text)."""
    text = completion_text(completion)
    if (opened or prompt_opens_think(prompt)) and "<think>" not in text.split("</think>", 1)[0]:
        return "<think>" + text
    return text


# ---------------------------------------------------------------- numbers

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?")
_CHINESE_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿点]+")


@lru_cache(maxsize=4096)  # a row's answer is read by every fact of the row and by every reward
def _spelled_out(text: str) -> str:
    """Numbers written in words as digits, where the libraries for it are installed (cn2an for Chinese,
    text2num for English); text without such numbers comes back unchanged."""
    if _CHINESE_NUMERAL.search(text):
        try:
            import cn2an

            text = cn2an.transform(text.replace("两", "二"), "cn2an")
        except (ImportError, ValueError):
            pass
    if re.search(r"[a-z]", text):
        try:
            from text_to_num import alpha2digit

            text = alpha2digit(text, "en")
        except ImportError:
            pass
    return text


@lru_cache(maxsize=4096)
def number_values(text: str) -> tuple[Decimal, ...]:
    """The numbers in ``text`` as values: ``1,000`` and ``1000.00`` are both 1000; spelled-out numbers
    (``forty-five``, ``四十五``) count when cn2an / text2num are installed. (Unlike
    :func:`seektune.text.numbers_in`, which gives digit runs as written.)"""
    return tuple(Decimal(raw.replace(",", "")).normalize()
                 for raw in _NUMBER.findall(_spelled_out(normalise_for_match(text))))


# units that name the same thing, so "$14.50" is found in "14.50 dollars"
_UNIT_GROUPS = [("$", "dollar", "dollars", "usd", "美元"), ("%", "percent", "per cent", "百分之"),
                ("¥", "元", "yuan", "rmb", "人民币"), ("€", "euro", "euros"), ("£", "pound", "pounds")]
_UNIT_OF = {word: group for group in _UNIT_GROUPS for word in group}


def _unit_words(fact: str) -> list[str]:
    """The words of a fact other than its numbers (its unit, e.g. 'business days', '天', '$')."""
    rest = _NUMBER.sub(" ", _spelled_out(normalise_for_match(fact)))
    words = re.findall(f"[$%€£¥]|[a-z]+|[{CJK_IDEOGRAPHS}]+", rest)
    return [w for w in words if w not in {"a", "an", "the", "of", "and"}]


def fact_found(answer: str, fact: str) -> bool:
    """Whether ``fact`` is in ``answer``: as written (after :func:`normalise_for_match`), or with each of its
    numbers present as a value and each of its unit words (or a synonym: ``$`` / ``dollars``) present."""
    answer_n, fact_n = normalise_for_match(answer), normalise_for_match(fact)
    if fact_n and fact_n in answer_n:
        return True
    wanted = number_values(fact)
    if not wanted:
        return False
    have = number_values(answer)
    if any(have.count(value) < wanted.count(value) for value in set(wanted)):
        return False
    answer_words = _spelled_out(answer_n)
    return all(any(alias in answer_words for alias in _UNIT_OF.get(word, (word,))) for word in _unit_words(fact))


# ---------------------------------------------------------------- the rewards, one completion at a time


def facts_score(answer: str, facts: Sequence[str] | None) -> float | None:
    facts = [f for f in facts or [] if isinstance(f, str) and f.strip()]
    if not facts:
        return None
    return sum(fact_found(answer, fact) for fact in facts) / len(facts)


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def final_value(text: str, pattern: str | None = None) -> str | None:
    """The last ``\\boxed{...}`` (or ``pattern``'s first group, last match) in ``text``; None if absent."""
    found = re.findall(pattern, text) if pattern else _BOXED.findall(text)
    if not found:
        return None
    last = found[-1]
    return (last[0] if isinstance(last, tuple) else last).strip()


def match_score(answer: str, reference: str | None, pattern: str | None = None) -> float | None:
    if not reference:
        return None
    wanted = final_value(reference, pattern) or reference.strip()
    got = final_value(answer, pattern)
    if got is None:
        return 0.0
    got_numbers, wanted_numbers = number_values(got), number_values(wanted)
    if got_numbers and wanted_numbers and len(got_numbers) == len(wanted_numbers) == 1:
        return float(got_numbers == wanted_numbers)
    return float(normalise_for_match(got) == normalise_for_match(wanted))


def format_score(text: str) -> float:
    """1.0 for exactly one leading, non-empty ``<think>...</think>`` followed by a non-empty answer."""
    reasoning, answer = split_think(text)
    if not reasoning or not answer.strip():
        return 0.0
    return 0.0 if "<think>" in answer or "</think>" in answer else 1.0


_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def language_score(text: str, language: str | None) -> float | None:
    """The share of the letters of ``text`` (reasoning and answer) written in ``language`` (zh: CJK ideographs;
    en: Latin letters); None for another language or a text without letters."""
    if language not in ("zh", "en"):
        return None
    text = text.replace("<think>", " ").replace("</think>", " ")
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk + latin == 0:
        return None
    # a Chinese word is one ideograph and an English word about five letters: count English in words
    words_latin = latin / 5
    mine = cjk if language == "zh" else words_latin
    return mine / (cjk + words_latin)


def glossary_score(answer: str, reference: str | None, entries: Sequence[GlossaryEntry]) -> float | None:
    """0.0 when a forbidden variant is in the answer; else the share of the terms the reference uses that the
    answer uses as written (1.0 when the reference uses none); None without a glossary."""
    if not entries:
        return None
    reference_n = normalise_for_match(reference or "")
    if variants_used(answer, forbidden_variants(entries)):  # as written, as term_errors counts them
        return 0.0
    wanted = [entry.term for entry in entries if normalise_for_match(entry.term) in reference_n]
    if not wanted:
        return 1.0
    return sum(term in answer for term in wanted) / len(wanted)  # as written: case and form count


def length_score(tokens: int, budget: int) -> float:
    """1.0 up to ``budget`` tokens, then falling linearly to 0.0 at twice the budget."""
    if tokens <= budget:
        return 1.0
    return max(0.0, 1.0 - (tokens - budget) / budget)


# ---------------------------------------------------------------- as trl reward functions


def _answers(prompts: list, completions: list, opened: bool = False) -> list[tuple[str, str]]:
    """(whole text with the reasoning, answer without it) per completion."""
    pairs = []
    for prompt, completion in zip(prompts, completions):
        full = _full(prompt, completion, opened)
        pairs.append((full, strip_reasoning(full)[0]))
    return pairs


def make_reward(spec: Any, glossary: Sequence[GlossaryEntry] = (),
                opens_think: bool = False) -> Callable[..., list[float | None]]:
    """A trl reward function (``f(prompts, completions, completion_ids, **columns) -> [reward]``) named after
    the reward, for a ``grpo.rewards`` entry. The data columns it reads: ``facts``, ``reference`` and
    ``language`` (the grpo stage puts them in each prompt row). ``opens_think``: the chat template opens
    ``<think>`` in every prompt (R1), so a completion starts inside it."""
    name = spec.name

    if name == "judge":
        return _judge_reward(spec, opens_think)
    if name == "python":
        module, _, attribute = (spec.function or "").partition(":")
        try:
            function = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"grpo.rewards: python function {spec.function!r} cannot be loaded ({err}); "
                             "give it as module:function, with the module on PYTHONPATH") from None
        return function

    def reward(prompts: list, completions: list, completion_ids: list | None = None,
               **columns: Any) -> list[float | None]:
        rows = _answers(prompts, completions, opens_think)
        facts = columns.get("facts") or [None] * len(rows)
        references = columns.get("reference") or [None] * len(rows)
        languages = columns.get("language") or [None] * len(rows)
        if name == "facts":
            return [facts_score(answer, row_facts) for (_, answer), row_facts in zip(rows, facts)]
        if name == "match":
            return [match_score(answer, ref, spec.pattern) for (_, answer), ref in zip(rows, references)]
        if name == "format":
            return [format_score(full) for full, _ in rows]
        if name == "language":
            return [language_score(full, lang) for (full, _), lang in zip(rows, languages)]
        if name == "glossary":
            return [glossary_score(answer, ref, glossary) for (_, answer), ref in zip(rows, references)]
        if name == "length":
            counts = [len(ids) for ids in completion_ids] if completion_ids else [len(full) // 4 for full, _ in rows]
            return [length_score(count, spec.budget) for count in counts]
        raise ValueError(f"unknown reward {name!r}; built in: {', '.join(BUILT_IN)}, python")

    reward.__name__ = name
    reward.__qualname__ = name
    return reward


JUDGE_RUBRIC = ("The answer is correct, complete and consistent with the reference answer, and written in the "
                "question's language.")
_SCORE = re.compile(r"\d+(?:\.\d+)?")


def judge_prompt(question: str, reference: str, answer: str, rubric: str | None = None) -> list[dict[str, str]]:
    """The judge's conversation: the rubric, then the three texts as data, then the one-number reply asked for."""
    return [{"role": "system", "content": "You grade answers. Reply with one number from 0 to 10 and nothing else."},
            {"role": "user", "content": f"Rubric: {rubric or JUDGE_RUBRIC}\n\n<question>\n{question}\n</question>\n"
                                        f"<reference>\n{reference}\n</reference>\n<answer>\n{answer}\n</answer>\n\n"
                                        "Score (0-10):"}]


def judge_score(reply: str) -> float | None:
    """The judge's first number, as a share of 10 (clipped to 0-1); None when it gave none."""
    found = _SCORE.search(reply or "")
    return None if found is None else min(max(float(found.group(0)) / 10.0, 0.0), 1.0)


def _judge_reward(spec: Any, opens_think: bool) -> Callable[..., list[float | None]]:
    """The opt-in ``judge`` reward: an OpenAI-compatible endpoint scores each answer against the reference by the
    rubric, four requests at a time; a failed request or a reply without a number gives None (left out)."""
    from concurrent.futures import ThreadPoolExecutor

    from seektune.models.endpoint import ChatEndpoint, EndpointError

    endpoint = ChatEndpoint(spec.endpoint, spec.model, spec.api_key_env)

    def question_of(prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        users = [turn.get("content") or "" for turn in prompt or [] if turn.get("role") == "user"]
        return users[-1] if users else ""

    def one(item: tuple[Any, str, str]) -> float | None:
        prompt, reference, answer = item
        try:
            return judge_score(endpoint.chat(judge_prompt(question_of(prompt), reference, answer, spec.rubric),
                                             max_tokens=8))
        except EndpointError:
            return None

    def judge(prompts: list, completions: list, completion_ids: list | None = None, **columns: Any):
        answers = [answer for _, answer in _answers(prompts, completions, opens_think)]
        references = columns.get("reference") or [""] * len(answers)
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, zip(prompts, references, answers)))

    judge.__name__ = judge.__qualname__ = "judge"
    return judge
