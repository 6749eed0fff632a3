"""Documents (.txt, .md, .html, .pdf, .docx) -> headed sections of verbatim text, or a precise reason why not.

    from seektune.docs import read_documents
    documents, failures = read_documents(["examples/customer-service/docs"])
    documents[0].sections[0]   # Section(heading='Returns > Refunds', text='...', page=None)
    failures[0]                # {'document': 'scan.pdf', 'reason': 'image_only', 'detail': '...'}

The text is shown to people and answers are checked against it, so it stays as written: only heading
markers (``#``), HTML markup and dropped page furniture (scripts, navigation, headers, footers) are removed.
A file that cannot be read raises :class:`DocumentError` with a reason code; :func:`read_documents` turns
each one into a failure row and reads on, so one bad file never stops the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seektune.text import language_of

DOCUMENT_SUFFIXES = {".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm"}
HEADING_SEPARATOR = " > "
BINARY_SNIFF_BYTES = 8192


class DocumentError(ValueError):
    """A document that cannot be read. ``reason`` is a code: empty, encrypted, image_only, binary, invalid_utf8,
    unsupported_type, unreadable or not_found; ``detail`` is one sentence for a person."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable across process pools despite the two-argument constructor
        return type(self), (self.reason, self.detail)

    def __str__(self) -> str:
        return f"{self.detail} ({self.reason})"


@dataclass
class Section:
    """One block of text under one heading."""

    heading: str | None  # heading path, e.g. "Returns > Refunds"; None before the first heading
    text: str  # paragraphs joined by blank lines
    page: int | None = None  # 1-based PDF page; None for other formats


@dataclass
class Document:
    name: str  # display name: the path relative to the root it was found under
    path: Path
    sections: list[Section]
    language: str  # "zh" or "en" (seektune.text.language_of on the whole text)

    @property
    def text(self) -> str:
        """Every section's text joined by blank lines (no headings)."""
        return "\n\n".join(section.text for section in self.sections)

    @property
    def text_with_headings(self) -> str:
        """:attr:`text` with each heading path as a line where it changes: the whole document as prose."""
        parts: list[str] = []
        previous: str | None = None
        for section in self.sections:
            if section.heading is not None and section.heading != previous:
                parts.append(f"{section.heading}\n{section.text}")
            else:
                parts.append(section.text)
            previous = section.heading
        return "\n\n".join(parts)


# ---------------------------------------------------------------- building sections


class _Sections:
    """Collects paragraphs under the current heading path; headings nest by level."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.paragraphs: list[str] = []
        self.page: int | None = None
        self.under_heading = 0  # paragraphs since the last heading

    @property
    def heading(self) -> str | None:
        return HEADING_SEPARATOR.join(title for _, title in self.path) if self.path else None

    def paragraph(self, text: str) -> None:
        text = "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip("\n")
        if text.strip():
            self.paragraphs.append(text)
            self.under_heading += 1

    def flush(self) -> None:
        if self.paragraphs:
            self.sections.append(Section(self.heading, "\n\n".join(self.paragraphs), self.page))
        self.paragraphs = []

    def heading_at(self, level: int, title: str) -> None:
        self.flush()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, title))
        self.under_heading = 0


# ---------------------------------------------------------------- text files


def _decode(raw: bytes, name: str) -> str:
    """UTF-8 (a BOM is fine; UTF-16 with a BOM too) with newlines normalised; NUL bytes mean binary."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentError("invalid_utf8", f"{name} starts with a UTF-16 mark but is not UTF-16: {exc.reason}")
    else:
        if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
            raise DocumentError("binary", f"{name} holds NUL bytes: it is a binary file, not text")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
            line = raw[:offset].count(b"\n") + 1
            raise DocumentError(
                "invalid_utf8",
                f"{name} is not UTF-8: byte 0x{raw[offset]:02x} at offset {offset} (line {line}) is invalid; "
                "save the file as UTF-8",
            ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _plain_sections(text: str) -> list[Section]:
    builder = _Sections()
    for paragraph in re.split(r"\n[ \t]*\n", text):
        builder.paragraph(paragraph)
    builder.flush()
    return builder.sections


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _without_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() == "---":
        for index in range(1, len(lines)):
            if lines[index].strip() in ("---", "..."):
                return lines[index + 1 :]
    return lines


def _markdown_sections(text: str) -> list[Section]:
    """ATX headings start sections and nest by level; everything else (lists, tables, code) stays verbatim.
    A ``#`` line inside a fenced code block is code, not a heading."""
    builder = _Sections()
    current: list[str] = []
    fence: str | None = None
    for line in _without_front_matter(text.split("\n")):
        if fence is not None:
            current.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)[0] * len(opening.group(1))
            current.append(line)
            continue
        heading = _ATX_HEADING.match(line)
        if heading and heading.group(2).strip():
            builder.paragraph("\n".join(current))
            current = []
            builder.heading_at(len(heading.group(1)), heading.group(2).strip())
        elif not line.strip():
            builder.paragraph("\n".join(current))
            current = []
        else:
            current.append(line)
    builder.paragraph("\n".join(current))
    builder.flush()
    return builder.sections


# ---------------------------------------------------------------- HTML

_HTML_DROP = {"script", "style", "nav", "header", "footer", "noscript", "head", "template", "svg", "iframe"}
_HTML_BLOCK = {
    "p", "div", "section", "article", "main", "aside", "ul", "ol", "dl", "table", "thead", "tbody", "tfoot",
    "blockquote", "figure", "figcaption", "form", "fieldset", "address", "hr", "body", "html", "caption",
    "details", "summary", "li", "dt", "dd", "td", "th",
}  # fmt: skip
_HTML_LINE = {"li", "dt", "dd"}  # a run of these (and table rows) forms one paragraph, one per line


class _HtmlText:
    """Walks an lxml tree: headings start sections, blocks become paragraphs, list items and table rows lines.
    The markup is only read as data: nothing is fetched, run or rendered."""

    def __init__(self) -> None:
        self.builder = _Sections()
        self.inline: list[list[str]] = [[]]  # lines of the block being collected (<br> starts a line)
        self.lines: list[str] = []  # the list / table paragraph being collected
        self.line_depth = 0

    @staticmethod
    def squash(text: str) -> str:
        return " ".join(text.split())

    def _close_lines(self) -> None:
        if self.lines:
            self.builder.paragraph("\n".join(self.lines))
            self.lines = []

    def block(self, text: str, as_line: bool) -> None:
        if not text.strip():
            return
        if as_line:
            self.lines.append(text)
        else:
            self._close_lines()
            self.builder.paragraph(text)

    def flush_inline(self) -> None:
        text = "\n".join(line for line in (self.squash("".join(parts)) for parts in self.inline) if line)
        self.inline = [[]]
        self.block(text, self.line_depth > 0)

    def walk(self, element) -> None:
        tag = element.tag.lower() if isinstance(element.tag, str) else None
        if tag is None or tag in _HTML_DROP:  # comments and processing instructions hold no text
            return
        if re.fullmatch(r"h[1-6]", tag):
            self.flush_inline()
            self._close_lines()
            title = self.squash(element.text_content())
            if title:
                self.builder.heading_at(int(tag[1]), title)
            return
        if tag == "tr":
            self.flush_inline()
            cells = [self.squash(cell.text_content()) for cell in element
                     if isinstance(cell.tag, str) and cell.tag.lower() in ("td", "th")]
            self.block(" | ".join(cell for cell in cells if cell), as_line=True)
            return
        if tag == "pre":
            self.flush_inline()
            self.block(element.text_content().strip("\n"), as_line=False)
            return
        if tag == "br":
            self.inline.append([])
            return
        is_block = tag in _HTML_BLOCK
        if is_block:
            self.flush_inline()
        if tag in _HTML_LINE:
            self.line_depth += 1
        if element.text:
            self.inline[-1].append(element.text)
        for child in element:
            self.walk(child)
            if child.tail:
                self.inline[-1].append(child.tail)
        if is_block:
            self.flush_inline()
        if tag in _HTML_LINE:
            self.line_depth -= 1

    def sections(self) -> list[Section]:
        self.flush_inline()
        self._close_lines()
        self.builder.flush()
        return self.builder.sections


def _html_sections(text: str) -> list[Section]:
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    root = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    walker = _HtmlText()
    walker.walk(root)
    return walker.sections()


# ---------------------------------------------------------------- PDF

_CLOSING_PUNCTUATION = tuple(".,;:!?。，；：！？、…")
_SENTENCE_END = tuple(".!?。！？；:：")
_BULLETS = tuple("•·-–—*▪●○◦")


def _heading_like(line: str) -> bool:
    """A PDF line that may be a heading: short, has letters, no closing punctuation, not a bullet or a data row."""
    letters = [char for char in line if char.isalpha()]
    digits = sum(char.isdigit() for char in line)
    return (
        0 < len(line) < 80
        and bool(letters)
        and not line.endswith(_CLOSING_PUNCTUATION)
        and not line.startswith(_BULLETS)
        and not letters[0].islower()
        and digits <= 0.2 * len(line.replace(" ", ""))
    )


def _page_lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _furniture_key(line: str) -> str:
    return re.sub(r"\d+", "#", line)  # "Page 3 of 9" and "Page 4 of 9" are one running line


def _page_furniture(pages: list[list[str]]) -> set[str]:
    """Running heads and feet: a line that opens or closes more than half of the pages (of three or more).
    They are dropped, else each page's running head would read as a new heading."""
    if len(pages) < 3:
        return set()
    counts: dict[str, int] = {}
    for lines in pages:
        filled = [line for line in lines if line]
        for key in {_furniture_key(line) for line in filled[:1] + filled[-1:]}:
            counts[key] = counts.get(key, 0) + 1
    return {key for key, count in counts.items() if count > len(pages) / 2}


def _pdf_page_sections(builder: _Sections, page: int, lines: list[str]) -> None:
    """One page's lines into the builder. A run of one or two heading-like lines becomes the heading when it
    follows the end of a paragraph (page start, blank line, sentence end) and text follows it on the page;
    a heading straight after another one (no text between) nests under it."""
    builder.page = page
    current: list[str] = []
    after_paragraph_end = True
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line:
            builder.paragraph("\n".join(current))
            current, after_paragraph_end = [], True
            index += 1
            continue
        run = 0
        while index + run < len(lines) and lines[index + run] and _heading_like(lines[index + run]):
            run += 1
        text_follows = index + run < len(lines) and any(lines[index + run:])
        if after_paragraph_end and 1 <= run <= 2 and text_follows:
            builder.paragraph("\n".join(current))
            current = []
            level = builder.path[-1][0] + 1 if builder.path and not builder.under_heading else 1
            builder.heading_at(level, HEADING_SEPARATOR.join(lines[index : index + run]))
            index += run
            continue
        current.append(line)
        after_paragraph_end = line.endswith(_SENTENCE_END)
        index += 1
    builder.paragraph("\n".join(current))
    builder.flush()  # a section never spans two pages: each keeps its page number


def _pdf_sections(path: Path, name: str) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    reader = PdfReader(str(path))
    if reader.is_encrypted:
        try:  # many PDFs are encrypted with an empty user password and open without one
            opened = reader.decrypt("")
        except DependencyError as exc:
            raise DocumentError("encrypted", f"{name} is encrypted in a way this install cannot open: {exc}") from None
        if not opened:
            raise DocumentError("encrypted", f"{name} is protected by a password; save an unprotected copy")
    texts = [page.extract_text() or "" for page in reader.pages]
    if not texts:
        raise DocumentError("empty", f"{name} has no pages")
    if not any(text.strip() for text in texts):
        raise DocumentError(
            "image_only",
            f"{name} has {len(texts)} page(s) but no extractable text (a scan?); run OCR on it first",
        )
    pages = [_page_lines(text) for text in texts]
    furniture = _page_furniture(pages)
    builder = _Sections()
    for number, lines in enumerate(pages, 1):
        filled = [index for index, line in enumerate(lines) if line]
        edges = {index for index in filled[:1] + filled[-1:] if _furniture_key(lines[index]) in furniture}
        _pdf_page_sections(builder, number, [line for index, line in enumerate(lines) if index not in edges])
    return builder.sections


# ---------------------------------------------------------------- DOCX

_DOCX_HEADING = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


def _docx_level(paragraph) -> int | None:
    style = paragraph.style
    for name in (getattr(style, "name", None), getattr(style, "style_id", None)):
        if not name:
            continue
        if name.lower() == "title":
            return 0  # the document's title roots every heading path, as "# Title" does in Markdown
        match = _DOCX_HEADING.match(name)
        if match:
            return int(match.group(1))
    return None


def _docx_sections(path: Path) -> list[Section]:
    import docx
    from docx.table import Table

    builder = _Sections()
    list_lines: list[str] = []
    for block in docx.Document(str(path)).iter_inner_content():
        if isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                        cells.append(text)
                if cells:
                    rows.append(" | ".join(cells))
            builder.paragraph("\n".join(list_lines))
            list_lines = []
            builder.paragraph("\n".join(rows))
            continue
        text = block.text
        style_name = getattr(block.style, "name", None) or ""
        if style_name.lower().startswith("list") and text.strip():
            list_lines.append(text)  # list paragraphs read as one paragraph of lines
            continue
        builder.paragraph("\n".join(list_lines))
        list_lines = []
        level = _docx_level(block)
        if level is not None and text.strip():
            builder.heading_at(level, " ".join(text.split()))
        else:
            builder.paragraph(text)
    builder.paragraph("\n".join(list_lines))
    builder.flush()
    return builder.sections


# ---------------------------------------------------------------- entry points


def read_document(path: Path, name: str | None = None) -> Document:
    """One document's sections; raises :class:`DocumentError` (with a reason code) when it cannot be read."""
    path = Path(path)
    name = name or path.name
    suffix = path.suffix.lower()
    if not path.is_file():
        detail = "is a directory, not a document" if path.is_dir() else "does not exist"
        raise DocumentError("not_found", f"{path} {detail}")
    if suffix not in DOCUMENT_SUFFIXES:
        raise DocumentError(
            "unsupported_type", f"{name}: {suffix or 'no suffix'} is not a document type; use one of "
            f"{', '.join(sorted(DOCUMENT_SUFFIXES))}",
        )
    try:
        if suffix == ".pdf":
            sections = _pdf_sections(path, name)
        elif suffix == ".docx":
            sections = _docx_sections(path)
        else:
            text = _decode(path.read_bytes(), name)
            if not text.strip():
                raise DocumentError("empty", f"{name} is empty")
            if suffix in (".md", ".markdown"):
                sections = _markdown_sections(text)
            elif suffix in (".html", ".htm"):
                sections = _html_sections(text)
            else:
                sections = _plain_sections(text)
    except DocumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged PDF/DOCX/HTML: the library's own words say what broke
        raise DocumentError("unreadable", f"{name} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not sections:
        raise DocumentError("empty", f"{name} holds no text (only markup, headings or page furniture)")
    document = Document(name, path, sections, "en")
    document.language = language_of(document.text)
    return document


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def find_documents(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """``(file, display name)`` for every file under the given files and directories, sorted and recursive,
    unsupported types included (so they can be reported); hidden files and folders (.git, .DS_Store) are
    skipped. A missing path raises ``DocumentError("not_found", ...)``."""
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            entries = [(root, root.name)]
        elif root.is_dir():
            entries = [(file, file.relative_to(root).as_posix()) for file in sorted(root.rglob("*"))
                       if file.is_file() and not _is_hidden(file.relative_to(root))]
        else:
            raise DocumentError("not_found", f"document path not found: {root}")
        for file, name in entries:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append((file, name))
    return found


def read_documents(paths: list[str | Path], wanted: Callable[[Path, str], bool] | None = None
                   ) -> tuple[list[Document], list[dict[str, Any]]]:
    """The documents that read, and a failure ``{"document", "reason", "detail"}`` for each that did not
    (a missing path included): one bad file never stops the others. ``wanted(file, name)`` returning False
    skips a file unread (an index leaves out files it holds unchanged)."""
    documents: list[Document] = []
    failures: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for raw in paths:
        try:
            files = find_documents([raw])
        except DocumentError as err:
            failures.append({"document": str(raw), "reason": err.reason, "detail": err.detail})
            continue
        for file, name in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            if wanted is not None and not wanted(file, name):
                continue
            try:
                documents.append(read_document(file, name))
            except DocumentError as err:
                failures.append({"document": name, "reason": err.reason, "detail": err.detail})
    return documents, failures
