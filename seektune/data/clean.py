"""Cleaning steps of ``seektune prepare``, each a small named function.

    seektune prepare recipe.yaml        # data.clean lists the steps, data.filters configures the filters

``make_cleaner(["strip_control", {"pii": {"types": ["email"]}}])`` returns a ``Cleaner`` that applies
the steps in order to every message's ``content`` and ``reasoning`` and returns a new record;
``cleaner.changed`` counts, per step, the records it altered. The steps are deliberately conservative,
because a cleaner that damages good rows is worse than no cleaner: HTML stripping only removes real HTML
element names (so ``a<b and c>d`` and ``List<Map>`` survive), and the steps that rewrite markup or
punctuation leave Markdown code (fenced blocks and inline spans) alone, since DeepSeek-Coder style data
is full of ``<div>``, ``&amp;`` and ``a, b`` that must stay as written.

The ``pii`` step lives in :mod:`seektune.data.pii`, the row filters in :mod:`seektune.data.filters`.
"""

from __future__ import annotations

import copy
import functools
import html
import inspect
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from seektune.data.pii import mask_pii
from seektune.text import MARKDOWN_CODE, is_cjk, language_of

TEXT_FIELDS = ("content", "reasoning")


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
    stripped = _outside(MARKDOWN_CODE, text, _strip_tags)
    return stripped.strip("\n") if stripped != text else text


# Only complete references ending in ';': html.unescape alone also turns "?a=1&not=2" into "?a=1¬=2".
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def unescape_html(text: str) -> str:
    """``&amp;`` -> ``&``, ``&#39;`` -> ``'``, ``&nbsp;`` -> no-break space; one level, outside Markdown code."""
    if "&" not in text:
        return text
    return _outside(MARKDOWN_CODE, text, lambda part: _ENTITY.sub(lambda m: html.unescape(m.group(0)), part))


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


_CJK_CLOSERS = "」』）》】〉"
_TO_FULLWIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_TO_ASCII = {"，": ",", "。": ".", "？": "?", "！": "!", "：": ":", "；": ";", "（": "(", "）": ")"}
_ASCII_MARKS = re.compile(r"[,.?!:;]+")
_FULLWIDTH_MARKS = re.compile(r"[，。？！：；（）]")
# A URL never ends in punctuation: the "." or "," after it belongs to the sentence.
_URL = r"(?:https?://|ftp://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*[A-Za-z0-9/#=_~\-]"
_EMAIL_TEXT = r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"
# Spans whose punctuation is syntax, not prose.
_PUNCTUATION_PROTECTED = re.compile(rf"{MARKDOWN_CODE.pattern}|{_URL}|{_EMAIL_TEXT}", re.MULTILINE | re.DOTALL)
PUNCTUATION_STYLES = ("auto", "zh", "en")


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
    follows_cjk = is_cjk(before) or (before != "" and before in _CJK_CLOSERS)
    precedes_cjk = is_cjk(after) and "." not in run
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


# --- the user's own substitution, and the steps by name ------------------------------------------------------------


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

