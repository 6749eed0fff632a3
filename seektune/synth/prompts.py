"""The prompts synthesis sends to the teacher, in the documents' language.

``PROMPT_VERSION`` is part of every cache key and of each row's provenance: change a prompt's
wording and bump it, so cached replies to the old wording are not reused. Document text is
put in the prompt as data between plain delimiters; it never becomes a system instruction.
"""

from __future__ import annotations

import re

PROMPT_VERSION = "synth-v1"

_SYSTEM = {
    "en": "You write realistic questions that customers ask a business. You reply with exactly what is asked, "
          "nothing else.",
    "zh": "你为企业撰写顾客会提出的真实问题。只回复所要求的内容，不要添加其他内容。",
}

# extractive: the answer is fixed (sentences of the chunk); the teacher writes a question it answers
_QUESTION_STYLES = {
    "en": [
        "Write one question a customer could ask that this text from the handbook answers. Reply with the question "
        "only.",
        "A customer is chatting with the support desk. Write the short question they typed, which this text from "
        "the handbook answers. Reply with the question only.",
        "Write a question, starting with How, What, When, Can or Do, that this text from the handbook answers. "
        "Reply with the question only.",
    ],
    "zh": [
        "请写出一个顾客可能会问的问题，这段手册内容正好回答了它。只回复问题本身。",
        "一位顾客正在联系客服。请写出他输入的简短问题，这段手册内容回答了该问题。只回复问题本身。",
        "请用“怎么”“什么”“多久”“能不能”等词写一个问题，这段手册内容回答了它。只回复问题本身。",
    ],
}

_LABELS = {"en": ("Topic", "Text"), "zh": ("主题", "内容")}
STYLES = len(_QUESTION_STYLES["en"])  # variants up to this many are greedy, one per style


def question_prompt(answer: str, heading: str | None, language: str, variant: int) -> list[dict[str, str]]:
    styles = _QUESTION_STYLES[language]
    topic, text = _LABELS[language]
    context = f"{topic}: {heading}\n" if heading else ""
    return [{"role": "system", "content": _SYSTEM[language]},
            {"role": "user", "content": f"{styles[variant % len(styles)]}\n\n{context}{text}: {answer}"}]


def procedure_prompt(steps: str, heading: str | None, language: str, variant: int) -> list[dict[str, str]]:
    ask = {"en": "Write one 'How do I ...?' question a customer could ask that these steps from the handbook "
                 "answer. Reply with the question only.",
           "zh": "请写一个“我该怎么……？”的问题，手册中的这些步骤正好回答了它。只回复问题本身。"}[language]
    topic, text = _LABELS[language]
    context = f"{topic}: {heading}\n" if heading else ""
    return [{"role": "system", "content": _SYSTEM[language]},
            {"role": "user", "content": f"{ask}\n\n{context}{text}:\n{steps}"}]


def multi_prompt(first: str, second: str, language: str, variant: int) -> list[dict[str, str]]:
    ask = {"en": "Write one question a customer could ask whose answer needs both of these facts from the "
                 "handbook. Reply with the question only.",
           "zh": "请写一个顾客可能会问的问题，回答它需要手册中的这两条信息。只回复问题本身。"}[language]
    return [{"role": "system", "content": _SYSTEM[language]},
            {"role": "user", "content": f"{ask}\n\n1. {first}\n2. {second}"}]


def out_of_scope_prompt(topics: list[str], language: str, variant: int) -> list[dict[str, str]]:
    ask = {"en": "A store's handbook covers only these topics: {topics}. Write one question a customer might ask "
                 "the store about something the handbook does not cover (for example a product's recipe, the "
                 "weather, a competitor, legal or medical advice). Reply with the question only.",
           "zh": "一家商店的手册只涵盖这些主题：{topics}。请写一个顾客可能会问、但手册没有涉及的问题（例如菜谱、天气、"
                 "竞争对手、法律或医疗建议）。只回复问题本身。"}[language]
    return [{"role": "system", "content": _SYSTEM[language]},
            {"role": "user", "content": ask.format(topics="; ".join(topics[:30]))}]


def generate_prompt(chunk: str, language: str, variant: int) -> list[dict[str, str]]:
    """generate mode: the teacher writes the question and the answer, from the chunk alone."""
    ask = {"en": "Read this text from a store's handbook. Write one question a customer could ask that the text "
                 "answers, and the answer, using only facts stated in the text. Reply in exactly two lines:\n"
                 "Q: <question>\nA: <answer>",
           "zh": "阅读这段商店手册内容。写一个顾客可能会问、且这段内容能够回答的问题，并只用其中的事实写出答案。"
                 "严格按两行回复：\nQ: <问题>\nA: <答案>"}[language]
    _, text = _LABELS[language]
    return [{"role": "system", "content": _SYSTEM[language]},
            {"role": "user", "content": f"{ask}\n\n{text}:\n{chunk}"}]


def judge_prompt(chunk: str, question: str, answer: str, language: str) -> list[dict[str, str]]:
    ask = {"en": "Does the text fully support the answer to the question? Reply with one word: yes or no.",
           "zh": "这段内容是否完全支持该问题的答案？只回复一个词：是 或 否。"}[language]
    _, text = _LABELS[language]
    return [{"role": "user", "content": f"{ask}\n\n{text}:\n{chunk}\n\nQ: {question}\nA: {answer}"}]


def reasoning_for(heading: str | None, origin: str, language: str) -> str:
    """The short <think> text of a row when ``synth.reasoning`` is on (R1-style students)."""
    if language == "zh":
        return f"这个问题由手册的“{heading or origin}”部分回答。我按手册的原话作答，不添加手册中没有的内容。"
    return (f"The handbook's section \"{heading or origin}\" answers this. I answer with what it states and add "
            "nothing it does not say.")


def refusal_reasoning(language: str) -> str:
    if language == "zh":
        return "手册中没有涉及这个问题的内容，所以我不应猜测，而应说明并请顾客联系客服。"
    return "Nothing in the handbook covers this, so I should not guess; I say so and point to the support team."


def parse_generated(reply: str) -> tuple[str, str] | None:
    """(question, answer) from a ``Q: ... / A: ...`` reply, or None."""
    question = answer = None
    lines = reply.strip().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped[:2].upper() in ("Q:", "Q：") and question is None:
            question = stripped[2:].strip()
        elif stripped[:2].upper() in ("A:", "A：") and question is not None:
            answer = " ".join([stripped[2:].strip()] + [rest.strip() for rest in lines[index + 1:] if rest.strip()])
            break
    return (question, answer) if question and answer else None


_VERB = re.compile(r"^(?:is|are|was|were|can|cannot|can't|must|may|will|should|has|have|had|does|do|did|gets?|lets?|"
                   r"ships?|arrives?|takes?|costs?|covers?|starts?|opens?|closes?|needs?|includes?|uses?|offers?|"
                   r"comes?|goes?|runs?|pays?|earns?|receives?|returns?|sends?|reviews?|applies|apply|works?|"
                   r"stays?|becomes?|moves?|appears?|requires?|expires?|accepts?|charges?|issues?|replies|reply)$",
                   re.IGNORECASE)
_ZH_VERB = re.compile(r"可以|可|会|在|是|需要|将|应|须|必须|有|能|按|由|于")


def subject_of(sentence: str, language: str) -> str:
    """What a sentence is about, roughly: its words before the first verb ("Sprig Pay lets customers ..." ->
    "Sprig Pay"), at most six words (or twelve characters of Chinese)."""
    if language == "zh":
        head = _ZH_VERB.split(sentence.strip(), maxsplit=1)[0]
        return re.sub(r"[，。；：、\s]+$", "", head)[:12]
    words = re.sub(r"^[-*•\d.)\s]+", "", sentence).split()
    subject: list[str] = []
    for word in words[:7]:
        bare = word.strip(",.;:")
        if subject and word[:1].islower() and (_VERB.match(bare) or (bare.endswith("ed") and len(bare) > 4)):
            break
        subject.append(word.strip(",.;:()\"'"))
    if subject and subject[0].lower() in ("the", "a", "an", "every", "all", "each", "any"):
        subject = subject[1:]
    subject = subject[:6]
    if subject and subject[0][1:].islower() and all(not w[:1].isupper() for w in subject[1:]):
        subject[0] = subject[0].lower()  # "Standard shipping" -> "standard shipping"; "Sprig Pay" stays
    return " ".join(subject)


def template_question(answer: str, heading: str | None, language: str) -> str:
    """A plain question about the answer's subject, for an answer none of the teacher's questions fit."""
    subject = subject_of(answer, language)
    topic = (heading or "").split(" > ")[-1]
    if language == "zh":
        return f"关于{subject or topic}，有什么规定？"
    subject = subject or topic
    if topic and topic.lower() not in subject.lower():
        return f"{topic} - what should I know about {subject}?"
    return f"What should I know about {subject}?"


# what replaces each kind of fact (gates.FACT_PATTERNS, in order) in a cloze question
_CLOZE_EN = ["how much", "what percentage", "what time", "how many {unit}", "how many {unit}", "what number",
             "which email address", "which website", "which code"]
_CLOZE_ZH = ["多少钱", "百分之多少", "几点", "多少{unit}", "多少{unit}", "哪个号码", "哪个邮箱", "哪个网站", "哪个代码"]


# short customer-style questions about a sentence's subject, by the kind of its first fact
_SHORT_EN = ["How much is {subject}?", "What percentage is {subject}?", "What time is {subject}?",
             "How long is {subject}?", "How many for {subject}?", "What number is {subject}?",
             "What email is {subject}?", "What website is {subject}?", "What code is {subject}?"]
_SHORT_ZH = ["{subject}多少钱？", "{subject}是百分之多少？", "{subject}是几点？", "{subject}是多少？",
             "{subject}要多久？",  # the Chinese pattern of durations ("45天")
             "{subject}是什么号码？", "{subject}是哪个邮箱？", "{subject}是哪个网站？", "{subject}是什么代码？"]


def short_question(sentence: str, language: str) -> str | None:
    """A terse question such as customers type ("How long is LarkCare?"): the wh-word of the sentence's first
    fact and its subject; None when the sentence holds no fact."""
    from seektune.synth.gates import FACT_PATTERNS

    subject = subject_of(sentence, language)
    if not subject:
        return None
    first = min(((m.start(), kind) for kind, p in enumerate(FACT_PATTERNS) for m in p.finditer(sentence)),
                default=None)
    if first is None:
        return None
    if first[1] == 3 and re.search(r"\d+\s?(?:items?|orders?|points?|digits|characters)\b", sentence, re.I):
        return (_SHORT_ZH if language == "zh" else _SHORT_EN)[4].format(subject=subject)
    return (_SHORT_ZH if language == "zh" else _SHORT_EN)[first[1]].format(subject=subject)


def cloze_questions(sentence: str, language: str, limit: int = 2) -> list[str]:
    """Questions made from the sentence itself, one per fact, the fact replaced by a question word:
    "Returns are accepted within 45 days of delivery." -> "Returns are accepted within how many days of
    delivery?". Specific to their sentence (so they never collide), and their answer is the sentence."""
    from seektune.synth.gates import FACT_PATTERNS

    questions: list[str] = []
    stem = re.sub(r"[.!。！]\s*$", "", sentence.strip())
    taken: list[tuple[int, int]] = []
    for kind, pattern in enumerate(FACT_PATTERNS):
        for match in pattern.finditer(stem):
            if any(a < match.end() and match.start() < b for a, b in taken):
                continue  # inside a fact already asked about ("$4.95" within "$4.95 per order")
            taken.append((match.start(), match.end()))
            unit = re.sub(r"^[\d.,\s-]+", "", match.group(0)).strip()
            if language == "zh":
                unit = re.sub(r"^个", "", unit)
                wh = _CLOZE_ZH[kind].format(unit=unit or "")
                questions.append(stem[: match.start()] + wh + stem[match.end():] + "？")
            else:
                unit = unit.lower() if unit.endswith("s") or not unit else unit.lower() + "s"
                wh = _CLOZE_EN[kind].format(unit=unit)
                questions.append(stem[: match.start()] + wh + stem[match.end():] + "?")
            if len(questions) >= limit:
                return questions
    return questions
