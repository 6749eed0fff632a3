""".venv/bin/python examples/customer-service/docs/make_pdf.py

Render handbook.md (next to this script) to handbook.pdf, for `seektune synth` tests and examples
that read PDFs. A dev-time tool: it needs fpdf2 (`.venv/bin/python -m pip install fpdf2`), which
is deliberately not a seektune dependency; the generated handbook.pdf is kept in the repository.

Handles the Markdown the handbook uses and nothing more: `#`/`##`/`###` headings, paragraphs,
`- ` bullets, one pipe table, and **bold** inside a line. The PDF uses the core Helvetica font,
so characters it cannot encode (curly quotes, dashes, ellipses) become ASCII first. The output
is deterministic (fixed creation date), so re-running it changes nothing unless handbook.md did.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

HERE = Path(__file__).resolve().parent
TITLE = "Larkspur Goods Customer Policy Handbook"
FIXED_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

ASCII = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u202f": " ",
    "\u2022": "-", "\u00d7": "x", "\u2192": "->", "\u2264": "<=", "\u2265": ">=",
}
BODY, LINE = 10.5, 5.4  # body font size (pt) and line height (mm)
HEADING = {1: (20, 11), 2: (15, 8), 3: (12, 6.5)}  # level: (font size, line height)


def to_core_font(text: str) -> str:
    """ASCII stand-ins for what Helvetica (latin-1) lacks; `code` loses its backticks."""
    for char, plain in ASCII.items():
        text = text.replace(char, plain)
    text = text.replace("`", "")
    # fpdf2's markdown=True reads __ ~~ -- as italics/strikethrough/underline: keep them literal.
    text = re.sub(r"(__|~~|--)", lambda m: "\\" + m.group(1), text)
    bad = sorted({c for c in text if ord(c) > 255})
    if bad:
        print(f"make_pdf: replacing {bad} with '?'", file=sys.stderr)
        text = "".join(c if ord(c) <= 255 else "?" for c in text)
    return text


def blocks(markdown: str):
    """Yield ("h", level, text), ("p", text), ("ul", [items]) and ("table", [[cells]]) blocks."""
    para: list[str] = []
    items: list[str] = []
    rows: list[list[str]] = []

    def flush():
        if para:
            yield ("p", " ".join(para))
            para.clear()
        if items:
            yield ("ul", list(items))
            items.clear()
        if rows:
            yield ("table", [list(r) for r in rows])
            rows.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        heading = re.match(r"(#{1,3})\s+(.*)", line)
        if not line:
            yield from flush()
        elif heading:
            yield from flush()
            yield ("h", len(heading.group(1)), heading.group(2))
        elif line.startswith("|"):
            if para or items:
                yield from flush()
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):  # skip the |---| rule
                rows.append(cells)
        elif line.startswith(("- ", "* ")):
            if para or rows:
                yield from flush()
            items.append(line[2:])
        elif items and raw.startswith("  "):  # a bullet's continuation line
            items[-1] += " " + line
        else:
            if items or rows:
                yield from flush()
            para.append(line)
    yield from flush()


class Handbook(FPDF):
    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", size=8)
        self.set_text_color(110)
        self.cell(0, 6, f"{TITLE} - page {self.page_no()}", align="C")
        self.set_text_color(0)


def render(source: Path, target: Path) -> None:
    pdf = Handbook(format="Letter")
    pdf.set_margins(22, 20, 22)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_title(TITLE)
    pdf.set_author("Larkspur Goods (fictional; written for seektune)")
    pdf.set_creation_date(FIXED_DATE)
    pdf.add_page()
    first = True
    for block in blocks(source.read_text(encoding="utf-8")):
        kind = block[0]
        if kind == "h":
            _, level, text = block
            size, height = HEADING[level]
            if not first:
                pdf.ln(4 if level > 1 else 6)
            if pdf.will_page_break(height * 3):  # keep a heading with its first lines
                pdf.add_page()
            pdf.set_font("Helvetica", "B", size)
            pdf.multi_cell(0, height, to_core_font(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(1.5)
        elif kind == "p":
            pdf.set_font("Helvetica", size=BODY)
            pdf.multi_cell(0, LINE, to_core_font(block[1]), markdown=True,
                           new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2.5)
        elif kind == "ul":
            pdf.set_font("Helvetica", size=BODY)
            for item in block[1]:
                pdf.set_x(pdf.l_margin + 4)
                pdf.cell(5, LINE, "-")
                pdf.multi_cell(0, LINE, to_core_font(item), markdown=True,
                               new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(0.8)
            pdf.ln(1.7)
        else:  # table: the first row is the header
            pdf.set_font("Helvetica", size=BODY - 1)
            with pdf.table(line_height=LINE, padding=1.5, text_align="LEFT",
                           first_row_as_headings=True, markdown=True) as table:
                for cells in block[1]:
                    row = table.row()
                    for cell in cells:
                        row.cell(to_core_font(cell))
            pdf.ln(3)
        first = False
    target.write_bytes(bytes(pdf.output()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("source", nargs="?", type=Path, default=HERE / "handbook.md")
    parser.add_argument("target", nargs="?", type=Path, default=HERE / "handbook.pdf")
    args = parser.parse_args()
    render(args.source, args.target)
    print(f"wrote {args.target} ({args.target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
