"""Cleaning steps and row filters of ``seektune prepare``, each a small named function.

    seektune prepare recipe.yaml        # data.clean lists the steps, data.filters configures the filters

Cleaning: ``make_cleaner(["strip_control", {"pii": {"types": ["email"]}}])`` returns a
``Cleaner`` that applies the steps in order to every message's ``content`` and ``reasoning``
and returns a new record; ``cleaner.changed`` counts, per step, the records it altered.
The steps are deliberately conservative, because a cleaner that damages good rows is worse
than no cleaner: HTML stripping only removes real HTML element names (so ``a<b and c>d``
and ``List<Map>`` survive), and the steps that rewrite markup or punctuation leave Markdown
code (fenced blocks and inline spans) alone, since DeepSeek-Coder style data is full of
``<div>``, ``&amp;`` and ``a, b`` that must stay as written.

Filtering: ``filter_reason(record, FilterConfig(...), tokenizer)`` returns ``None`` to keep
the record or the first ``FilterFailure(reason, detail)``; ``reason`` is a short code for
rejects.jsonl and ``detail`` says the measured value and the limit it broke.
"""

from __future__ import annotations

import copy
import functools
import html
import inspect
import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from seektune.data.formats import FormatError, validate_messages
from seektune.evaluate.metrics import language_of

TEXT_FIELDS = ("content", "reasoning")

# Markdown code: a fenced block (``` or ~~~, to its closing fence or the end of the text) or an inline span.
_CODE = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=fence)[ \t]*$|\Z)"
    r"|(?P<ticks>`+)(?!`)[^\n]*?(?<!`)(?P=ticks)(?!`)",
    re.MULTILINE | re.DOTALL,
)


def _outside(pattern: re.Pattern[str], text: str, clean: Callable[[str], str]) -> str:
    """Apply ``clean`` to the text between matches of ``pattern``; the matches are kept verbatim."""
    parts: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        parts.append(clean(text[start:match.start()]))
        parts.append(match.group(0))
        start = match.end()
    parts.append(clean(text[start:]))
    return "".join(parts)


def _prose(text: str) -> str:
    """The text with Markdown code removed, for judging its language: code is English-looking in any language."""
    return _CODE.sub(" ", text)


# --- cleaning steps: each ``str -> str``, pure and deterministic --------------------------------------------------

# C0/C1 controls except \t and \n, plus invisible format characters: zero-width space / non-joiner, word joiner,
# BOM, soft hyphen, Mongolian vowel separator, bidi marks and embeddings (the "Trojan source" characters).
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200c\u2060\ufeff\u00ad\u180e\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_EMOJI = r"\U0001F000-\U0001FAFF\u2600-\u27BF"
# A zero-width joiner is kept only inside an emoji sequence (👨‍👩‍👧): removed there, one emoji becomes three.
_STRAY_JOINER = re.compile(rf"(?<![{_EMOJI}\uFE0F])\u200d|\u200d(?![{_EMOJI}])")


def strip_control(text: str) -> str:
    """Drop control and zero-width characters; \\r\\n and lone \\r become \\n, \\t and \\n stay."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _STRAY_JOINER.sub("", _INVISIBLE.sub("", text))


_HTML_ELEMENTS = frozenset(
    "a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption center "
    "cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure "
    "font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label legend li link main "
    "map mark meta meter nav noscript object ol optgroup option output p param picture pre progress q rp rt ruby s "
    "samp section select small source span strike strong sub summary sup table tbody td template textarea tfoot th "
    "thead time title tr track tt u ul var video wbr".split()
)
# Attributes that may appear without a value; any other bare word means "not a tag" (``a<b and c>d``).
_BOOLEAN_ATTRIBUTES = frozenset(
    "allowfullscreen async autofocus autoplay checked controls default defer disabled hidden inert ismap "
    "itemscope loop multiple muted nowrap novalidate open readonly required reversed selected".split()
)
# Tags that end a line of text; list and table items break after themselves, not before.
_LINE_BREAKING = frozenset(
    "br hr p div h1 h2 h3 h4 h5 h6 blockquote pre table ul ol section article header footer li tr dd dt "
    "caption figure form".split()
)
_ITEMS = frozenset({"li", "tr", "dd", "dt"})
_ATTRIBUTE = r"""[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?"""
_TAG = re.compile(rf"<(?P<close>/?)(?P<name>[A-Za-z][A-Za-z0-9]*)(?P<attrs>(?:\s+{_ATTRIBUTE})*)\s*/?>")
_BARE_ATTRIBUTE = re.compile(rf"\s+(?P<attr>{_ATTRIBUTE})")
_DROPPED_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->|<!doctype[^>]*>", re.IGNORECASE | re.DOTALL)


def _is_html_tag(match: re.Match[str]) -> bool:
    """A known element name, written all lower or all upper case (``List<Map>`` is Java), with HTML attributes."""
    name = match.group("name")
    if name.lower() not in _HTML_ELEMENTS or not (name.islower() or name.isupper()):
        return False
    for attr in _BARE_ATTRIBUTE.finditer(match.group("attrs")):
        if "=" not in attr.group("attr") and attr.group("attr").lower() not in _BOOLEAN_ATTRIBUTES:
            return False
    return True


def _replace_tag(match: re.Match[str]) -> str:
    if not _is_html_tag(match):
        return match.group(0)
    name = match.group("name").lower()
    if name in _LINE_BREAKING and not (name in _ITEMS and not match.group("close")):
        return "\n"
    return ""


def _strip_tags(text: str) -> str:
    return _TAG.sub(_replace_tag, _DROPPED_BLOCK.sub("", text))


def strip_html(text: str) -> str:
    """Remove HTML tags but keep their text; <script>/<style> bodies and comments go, <br> and block ends become
    newlines. Only real element names count as tags, so comparisons and generics in plain text survive."""
    if "<" not in text:
        return text
    stripped = _outside(_CODE, text, _strip_tags)
    return stripped.strip("\n") if stripped != text else text


# Only complete references ending in ';': html.unescape alone also turns "?a=1&not=2" into "?a=1¬=2".
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def unescape_html(text: str) -> str:
    """``&amp;`` -> ``&``, ``&#39;`` -> ``'``, ``&nbsp;`` -> no-break space; one level, outside Markdown code."""
    if "&" not in text:
        return text
    return _outside(_CODE, text, lambda part: _ENTITY.sub(lambda m: html.unescape(m.group(0)), part))


# NFKC would turn Chinese full-width punctuation into ASCII (你好，世界！ -> 你好,世界!), … into ..., m² into m2
# and ½ into 1⁄2; these are kept and the punctuation step decides punctuation style.
_NFKC_KEEP = re.compile(r"[！（），：；？～…²³¹\u2070-\u209f¼½¾\u2150-\u215e]+")


def nfkc(text: str) -> str:
    """Unicode NFKC (full-width letters and digits -> ASCII, ligatures split), keeping CJK punctuation,
    superscripts, subscripts and fractions whose meaning NFKC would lose."""
    if text.isascii():
        return text
    return _outside(_NFKC_KEEP, text, lambda part: unicodedata.normalize("NFKC", part))


_LINE_BREAK = re.compile(r"\r\n|[\r\v\f\x85\u2028\u2029]")
_INNER_SPACE = re.compile(r"[^\S\n]+")
_INDENT = re.compile(r"[^\S\n]*")
_FENCE_OPEN = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")


def _closes(line: str, fence: str) -> bool:
    return re.fullmatch(rf"[ \t]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", line) is not None


def collapse_whitespace(text: str) -> str:
    """Runs of spaces/tabs inside a line -> one space, no trailing spaces, at most one blank line, ends stripped.

    A line's leading indentation is kept (Markdown lists, YAML, Python), and lines inside fenced code blocks
    keep their inner spacing and blank lines: only their trailing spaces go.
    """
    lines: list[str] = []
    fence: str | None = None
    for line in _LINE_BREAK.sub("\n", text).split("\n"):
        if fence is not None:
            lines.append(line.rstrip())
            if _closes(line, fence):
                fence = None
            continue
        opening = _FENCE_OPEN.match(line)
        if opening:
            fence = opening.group(1)
            lines.append(line.rstrip())
            continue
        indent = _INDENT.match(line).group(0)
        body = _INNER_SPACE.sub(" ", line[len(indent):]).rstrip()
        if body:
            lines.append(indent + body)
        elif lines and lines[-1] != "":
            lines.append("")
    return "\n".join(lines).strip()


_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_CLOSERS = "」』）》】〉"
_TO_FULLWIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_TO_ASCII = {"，": ",", "。": ".", "？": "?", "！": "!", "：": ":", "；": ";", "（": "(", "）": ")"}
_ASCII_MARKS = re.compile(r"[,.?!:;]+")
_FULLWIDTH_MARKS = re.compile(r"[，。？！：；（）]")
# A URL never ends in punctuation: the "." or "," after it belongs to the sentence.
_URL = r"(?:https?://|ftp://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*[A-Za-z0-9/#=_~\-]"
_EMAIL_TEXT = r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"
# Spans whose punctuation is syntax, not prose.
_PUNCTUATION_PROTECTED = re.compile(rf"{_CODE.pattern}|{_URL}|{_EMAIL_TEXT}", re.MULTILINE | re.DOTALL)
PUNCTUATION_STYLES = ("auto", "zh", "en")


def _is_cjk(char: str) -> bool:
    return bool(char) and _CJK_CHAR.match(char) is not None


def _fullwidth_run(match: re.Match[str]) -> str:
    """An ASCII mark run next to Chinese becomes full-width; numbers (4.95, 10:30), ellipses (...) and
    file names or domains (报告.pdf) are left alone."""
    run, text = match.group(0), match.string
    before = text[match.start() - 1] if match.start() else ""
    after = text[match.end()] if match.end() < len(text) else ""
    if len(run) > 1 and set(run) == {"."}:
        return run
    if "." in run and after.isascii() and after.isalnum():
        return run
    follows_cjk = _is_cjk(before) or (before != "" and before in _CJK_CLOSERS)
    precedes_cjk = _is_cjk(after) and "." not in run
    if follows_cjk or precedes_cjk:
        return "".join(_TO_FULLWIDTH[mark] for mark in run)
    return run


def _ascii_mark(match: re.Match[str]) -> str:
    """A full-width mark in English text -> ASCII, with the spaces English puts around it ("Price：4.95（USD）"
    -> "Price: 4.95 (USD)"), but never inside a number (10：30 -> 10:30)."""
    mark = _TO_ASCII[match.group(0)]
    text = match.string
    before = text[match.start() - 1] if match.start() else ""
    after = text[match.end()] if match.end() < len(text) else ""
    if mark == "(":
        return " (" if before.isalnum() else mark
    if mark == ")":
        return ") " if after.isalnum() else mark
    if after.isalpha() or (after.isdigit() and not before.isdigit()):
        return mark + " "
    return mark


def fix_punctuation(text: str, *, style: str = "auto") -> str:
    """Make punctuation match the text's language. ``zh``: in mostly-Chinese text, ASCII , . ? ! : ; written
    after (or, except '.', before) a Chinese character become full-width. ``en``: in other text, full-width
    marks become ASCII. ``auto`` does both, each text by its own language. URLs, e-mails and code are untouched."""
    if style not in PUNCTUATION_STYLES:
        raise ValueError(f"punctuation style {style!r} is not one of {', '.join(PUNCTUATION_STYLES)}")
    language = language_of(_PUNCTUATION_PROTECTED.sub(" ", text))
    if language == "zh" and style in ("zh", "auto"):
        return _outside(_PUNCTUATION_PROTECTED, text, lambda part: _ASCII_MARKS.sub(_fullwidth_run, part))
    if language == "en" and style in ("en", "auto"):
        return _outside(_PUNCTUATION_PROTECTED, text, lambda part: _FULLWIDTH_MARKS.sub(_ascii_mark, part))
    return text


# --- personal data -------------------------------------------------------------------------------------------------
# Numbers must not run into letters or digits ("LG12345678" is an order number), but may touch Chinese text
# ("手机13812345678"), which is why these use explicit ASCII look-arounds instead of \b.

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,}"
    r"(?![A-Za-z0-9\-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![0-9A-Za-z.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9A-Za-z]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4})(?![0-9A-Za-z:])"
)
_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
    r"(?![0-9A-Za-z])"
)
# Payment cards start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, UnionPay/Discover 6): written solid,
# in groups of four, or Amex's 4-6-5; the Luhn check decides.
_BANK_CARD = re.compile(
    r"(?<![0-9A-Za-z])(?:[2-6][0-9]{12,18}"
    r"|[2-6][0-9]{3}(?P<sep>[ \-])[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{1,4}){1,2}"
    r"|3[47][0-9]{2}(?P<amex>[ \-])[0-9]{6}(?P=amex)[0-9]{5})(?![0-9A-Za-z])"
)
_PHONE = re.compile(
    r"(?<![0-9A-Za-z+])(?:"
    r"(?:\+|00)86[ \-]?1[3-9][0-9][ \-]?[0-9]{4}[ \-]?[0-9]{4}"  # +86 138 1234 5678
    r"|1[3-9][0-9][ \-]?[0-9]{4}[ \-]?[0-9]{4}"  # 13812345678, 138-1234-5678
    r"|(?:\+?1[ .\-]?)?(?:\([2-9][0-9]{2}\)|[2-9][0-9]{2})[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}"  # (415) 555-0143
    r"|\+[1-9][0-9]{0,2}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){2,6}"  # +44 20 7946 0958
    r"|0[0-9]{2,3}-[2-9][0-9]{6,7}"  # mainland landline 010-62345678
    r")(?![0-9A-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
PII_TYPES = ("email", "ip", "id_card", "bank_card", "phone")  # the order they are masked in
PII_PLACEHOLDERS = {"email": "[EMAIL]", "ip": "[IP]", "id_card": "[ID_CARD]", "bank_card": "[BANK_CARD]",
                    "phone": "[PHONE]"}


def id_card_valid(number: str) -> bool:
    """Chinese resident ID: a real birth date and the ISO 7064 MOD 11-2 check character."""
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _mask_ipv6(match: re.Match[str]) -> str:
    """Only real addresses that hold a digit: "std::cout" and "10:30:45" look similar but are not."""
    candidate = match.group(0)
    if not any(char.isdigit() for char in candidate):
        return candidate
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate
    return PII_PLACEHOLDERS["ip"]


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[^0-9]", "", match.group(0))
    return PII_PLACEHOLDERS["bank_card"] if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group(0))
    return PII_PLACEHOLDERS["phone"] if 7 <= digits <= 15 else match.group(0)


_PII_MASKS: dict[str, Callable[[str], str]] = {
    "email": lambda text: _EMAIL.sub(PII_PLACEHOLDERS["email"], text),
    "ip": lambda text: _IPV4.sub(PII_PLACEHOLDERS["ip"], _IPV6.sub(_mask_ipv6, text)),
    "id_card": lambda text: _ID_CARD.sub(
        lambda m: PII_PLACEHOLDERS["id_card"] if id_card_valid(m.group(0)) else m.group(0), text),
    "bank_card": lambda text: _BANK_CARD.sub(_mask_card, text),
    "phone": lambda text: _PHONE.sub(_mask_phone, text),
}


def mask_pii(text: str, *, types: Sequence[str] | None = None) -> str:
    """Replace personal data with placeholders ([EMAIL], [IP], [ID_CARD], [BANK_CARD], [PHONE]).

    Masks always run in the order of PII_TYPES whatever order ``types`` lists: e-mails first (they hold digits),
    then IPs, then checksummed ID cards and bank cards, and phones last, so an 18-digit ID is never read as a
    phone number. IDs and cards with a wrong checksum are left as they are. Run ``nfkc`` first so full-width
    digits are seen.
    """
    chosen = PII_TYPES if types is None else [types] if isinstance(types, str) else list(types)
    unknown = [kind for kind in chosen if kind not in PII_TYPES]
    if unknown:
        raise ValueError(f"unknown pii type(s) {unknown}; allowed: {', '.join(PII_TYPES)}")
    for kind in PII_TYPES:
        if kind in chosen:
            text = _PII_MASKS[kind](text)
    return text


@functools.lru_cache(maxsize=64)
def _user_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from exc


def regex_replace(text: str, *, pattern: str, replace: str = "") -> str:
    """The user's own substitution (``re.sub`` semantics: \\1 and \\g<name> work; inline flags like (?i) too)."""
    compiled = _user_pattern(pattern)
    try:
        return compiled.sub(replace, text)
    except re.error as exc:
        raise ValueError(f"replacement {replace!r} for pattern {pattern!r} is invalid: {exc}") from exc


CLEANERS: dict[str, Callable[..., str]] = {
    "strip_control": strip_control,
    "strip_html": strip_html,
    "unescape_html": unescape_html,
    "nfkc": nfkc,
    "whitespace": collapse_whitespace,
    "punctuation": fix_punctuation,
    "pii": mask_pii,
    "regex": regex_replace,
}
DEFAULT_CLEAN_STEPS = ["strip_control", "strip_html", "unescape_html", "nfkc", "whitespace"]


class Cleaner:
    """Applies named steps in order to every message's content and reasoning (and a preference pair's
    ``rejected`` answer); returns new records.

    ``changed[label]`` counts the records a step altered (a repeated step is labelled ``regex#2``, ...), so
    prepare can say "pii changed 12 records". A reasoning field emptied by cleaning is dropped, as the format
    readers do for an empty ``<think>`` block.
    """

    def __init__(self, steps: list[tuple[str, Callable[[str], str]]]):
        self.steps = steps
        self.changed: Counter[str] = Counter({label: 0 for label, _ in steps})  # every step listed, in order

    def clean_text(self, text: str, touched: set[str] | None = None) -> str:
        for label, step in self.steps:
            cleaned = step(text)
            if touched is not None and cleaned != text:
                touched.add(label)
            text = cleaned
        return text

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(record)
        touched: set[str] = set()
        for message in out.get("messages", []):
            for field in TEXT_FIELDS:
                if isinstance(message.get(field), str):
                    message[field] = self.clean_text(message[field], touched)
            if message.get("reasoning") == "":
                del message["reasoning"]
        if isinstance(out.get("rejected"), str):  # a preference pair's worse answer is training text too
            out["rejected"] = self.clean_text(out["rejected"], touched)
        self.changed.update(label for label, _ in self.steps if label in touched)
        return out


def _parse_step(step: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(step, str):
        return step, {}
    if isinstance(step, dict) and len(step) == 1:
        name, options = next(iter(step.items()))
        if options is None:
            return name, {}
        if isinstance(options, dict):
            return name, options
    raise ValueError(f"a cleaning step is a name or a one-key mapping {{name: {{options}}}}, got {step!r}")


def _bind(name: str, options: dict[str, Any]) -> Callable[[str], str]:
    """The step with its options, checked now so a typo fails before any data is read."""
    if name not in CLEANERS:
        raise ValueError(f"unknown cleaning step {name!r}; allowed: {', '.join(CLEANERS)}")
    function = CLEANERS[name]
    parameters = list(inspect.signature(function).parameters.values())[1:]
    allowed = [p.name for p in parameters]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"cleaning step {name!r} has no option(s) {unknown}; its options: {allowed or 'none'}")
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        raise ValueError(f"cleaning step {name!r} needs option(s) {missing}")
    bound = functools.partial(function, **options) if options else function
    try:
        bound("")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cleaning step {name!r}: {exc}") from exc
    return bound


def make_cleaner(steps: Sequence[str | dict[str, Any]]) -> Cleaner:
    """``["nfkc", {"pii": {"types": ["email"]}}, {"regex": {"pattern": "\\\\bACME\\\\b", "replace": "[BRAND]"}}]``
    -> a Cleaner; unknown steps, unknown options and bad patterns raise ValueError here."""
    bound: list[tuple[str, Callable[[str], str]]] = []
    seen: Counter[str] = Counter()
    for step in steps:
        name, options = _parse_step(step)
        function = _bind(name, options)
        seen[name] += 1
        bound.append((name if seen[name] == 1 else f"{name}#{seen[name]}", function))
    return Cleaner(bound)


# --- filters -------------------------------------------------------------------------------------------------------

LANGUAGES = ("en", "zh")


@dataclass
class FilterConfig:
    """Thresholds of the row filters; ``None`` turns a filter off. Characters are counted without whitespace."""

    min_chars: int = 1  # every turn (content + reasoning)
    max_chars: int | None = None  # the whole conversation
    min_answer_chars: int = 1  # every assistant answer (content only)
    min_tokens: int | None = None  # target tokenizer, concatenated contents; skipped without a tokenizer
    max_tokens: int | None = None
    max_repetition: float | None = 0.5  # see repetition_ratio
    max_symbol_ratio: float | None = 0.5  # see symbol_ratio
    languages: list[str] | None = None  # allowed among LANGUAGES, judged on the user and assistant turns
    check_roles: bool = True  # (system?) user, assistant, ... ending with the assistant

    def __post_init__(self) -> None:
        if self.languages is not None:
            unknown = [lang for lang in self.languages if lang not in LANGUAGES]
            if unknown:
                raise ValueError(f"unknown language(s) {unknown} in languages; allowed: {', '.join(LANGUAGES)}")
        for name in ("max_repetition", "max_symbol_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} > max_tokens {self.max_tokens}")


@dataclass(frozen=True)
class FilterFailure:
    """Why a record was filtered: ``reason`` is the code in rejects.jsonl, ``detail`` the measured value and limit."""

    reason: str
    detail: str


_WORDS = re.compile(r"\w+")
_MIN_JUDGED_CHARS = 10  # "?" or ":)" is a fine turn, too short to call garbage


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def repetition_ratio(text: str) -> float:
    """1 - unique n-grams / all n-grams: word 3-grams (lower-cased) for space-separated text, character 5-grams
    of letters and digits for Chinese. "the the the the the" scores 0.67; 0.0 below two n-grams."""
    if language_of(text) == "zh":
        chars = "".join(char for char in text if char.isalnum())
        grams: list[Any] = [chars[i:i + 5] for i in range(len(chars) - 4)]
    else:
        words = _WORDS.findall(text.lower())
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(grams) < 2:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def symbol_ratio(text: str) -> float:
    """Share of the non-whitespace characters that are neither letters (CJK included), digits nor combining marks."""
    visible = [char for char in text if not char.isspace()]
    if not visible:
        return 0.0
    symbols = sum(1 for char in visible if not (char.isalnum() or unicodedata.category(char).startswith("M")))
    return symbols / len(visible)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens without special tokens; works with a transformers tokenizer and a bare ``tokenizers.Tokenizer``."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return len(getattr(encoded, "ids", encoded))


def _turn_text(message: dict[str, Any]) -> str:
    return message.get("content", "") + "\n" + (message.get("reasoning") or "")


def _where(index: int, message: dict[str, Any]) -> str:
    return f"message {index + 1} ({message.get('role')})"


def filter_turn_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    for index, message in enumerate(record["messages"]):
        chars = visible_chars(_turn_text(message))
        if chars == 0 and config.min_chars > 0:
            return FilterFailure("empty_turn", f"{_where(index, message)} is empty")
        if chars < config.min_chars:
            return FilterFailure(
                "turn_too_short", f"{_where(index, message)} has {chars} characters < min_chars {config.min_chars}")
    return None


def filter_role_order(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if not config.check_roles:
        return None
    try:
        validate_messages(record["messages"])
    except FormatError as exc:
        return FilterFailure(exc.reason, exc.detail)
    return None


def filter_answer_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    for index, message in enumerate(record["messages"]):
        if message.get("role") != "assistant":
            continue
        chars = visible_chars(message.get("content", ""))
        if chars < config.min_answer_chars:
            return FilterFailure(
                "answer_too_short",
                f"{_where(index, message)} answer has {chars} characters < min_answer_chars {config.min_answer_chars}",
            )
    return None


def filter_total_length(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if config.max_chars is None:
        return None
    chars = sum(visible_chars(_turn_text(message)) for message in record["messages"])
    if chars > config.max_chars:
        return FilterFailure("too_long_chars", f"conversation has {chars} characters > max_chars {config.max_chars}")
    return None


def filter_token_count(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if tokenizer is None or (config.min_tokens is None and config.max_tokens is None):
        return None
    text = "\n".join(
        part for message in record["messages"] for part in (message.get("reasoning"), message.get("content")) if part
    )
    tokens = count_tokens(tokenizer, text)
    if config.min_tokens is not None and tokens < config.min_tokens:
        return FilterFailure("too_few_tokens", f"conversation has {tokens} tokens < min_tokens {config.min_tokens}")
    if config.max_tokens is not None and tokens > config.max_tokens:
        return FilterFailure("too_many_tokens", f"conversation has {tokens} tokens > max_tokens {config.max_tokens}")
    return None


def filter_language(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """The conversation's language, from its user and assistant turns with code removed (system prompts are
    often English in Chinese data, and one short "OK" should not decide)."""
    if config.languages is None:
        return None
    text = "\n".join(_prose(m.get("content", "")) for m in record["messages"] if m.get("role") != "system")
    if not _WORDS.search(text):
        return None
    language = language_of(text)
    if language not in config.languages:
        return FilterFailure(
            "wrong_language", f"conversation language {language!r} not in languages {config.languages}")
    return None


def filter_symbols(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    if config.max_symbol_ratio is None:
        return None
    for index, message in enumerate(record["messages"]):
        text = _turn_text(message)
        if visible_chars(text) < _MIN_JUDGED_CHARS:
            continue
        ratio = symbol_ratio(text)
        if ratio > config.max_symbol_ratio:
            return FilterFailure(
                "garbage",
                f"{_where(index, message)} symbol ratio {ratio:.2f} > max_symbol_ratio {config.max_symbol_ratio}",
            )
    return None


def filter_repetition(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """Answers and their reasoning: a looping generation is the usual failure of distilled R1 data."""
    if config.max_repetition is None:
        return None
    for index, message in enumerate(record["messages"]):
        if message.get("role") != "assistant":
            continue
        for field in ("content", "reasoning"):
            ratio = repetition_ratio(message.get(field) or "")
            if ratio > config.max_repetition:
                what = "answer" if field == "content" else "reasoning"
                return FilterFailure(
                    "repetitive",
                    f"{_where(index, message)} {what} repetition {ratio:.2f} > max_repetition {config.max_repetition}",
                )
    return None


FilterFunction = Callable[[dict[str, Any], FilterConfig, Any], "FilterFailure | None"]
# Checked in this order, cheapest and most basic first; filter_reason reports the first failure.
FILTERS: dict[str, FilterFunction] = {
    "turn_length": filter_turn_length,
    "role_order": filter_role_order,
    "answer_length": filter_answer_length,
    "total_length": filter_total_length,
    "token_count": filter_token_count,
    "language": filter_language,
    "symbols": filter_symbols,
    "repetition": filter_repetition,
}
FILTER_REASONS = (
    "empty_turn", "turn_too_short", "no_turns", "bad_role_order", "odd_turn_count", "empty_question", "empty_answer",
    "answer_too_short", "too_long_chars", "too_few_tokens", "too_many_tokens", "wrong_language", "garbage",
    "repetitive",
)


def filter_reason(record: dict[str, Any], config: FilterConfig, tokenizer: Any = None) -> FilterFailure | None:
    """None to keep the record, else the first failing filter's reason and detail."""
    for check in FILTERS.values():
        failure = check(record, config, tokenizer)
        if failure is not None:
            return failure
    return None
