"""seektune.docs: every reader on documents written here, each failure's reason code, and chunking invariants
(budget, overlap, nothing lost, ids, pages, headings, sha256) with and without a real tokenizer."""

from __future__ import annotations

import hashlib

import pytest

from seektune.docs import (
    Document,
    DocumentError,
    Section,
    chunk_document,
    count_tokens,
    find_documents,
    read_document,
    read_documents,
)
from seektune.docs.chunk import sentences

HANDBOOK_MD = """---
title: Larkspur handbook
---
Read this first.

# Handbook

Welcome to the Larkspur customer handbook.

## Returns

Items can be returned within 45 days of delivery. Keep the receipt!

- unopened items: full refund
- opened items: store credit

| Kind | Days |
|------|------|
| Lamp | 45 |

### Refunds

Refunds take 5 business days.

```bash
# a comment in code, not a heading
echo refund
```

## 退货政策

退货期限是45天。请保留收据。运费由顾客承担！
"""


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF whose pages hold the given lines (Helvetica, one line per row), xref offsets computed here."""
    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        stream = ("BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines)
                  + " ET").encode("latin-1")
        kids.append(len(objects) + 1)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(objects) + 2))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{k} 0 R" for k in kids).encode(), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


HANDBOOK_PDF = [
    ["Larkspur Handbook", "Returns", "Items can be returned within 45 days of delivery.",
     "Keep the receipt with the item.", "1"],
    ["Larkspur Handbook", "Refunds take 5 business days after the item arrives.", "Shipping",
     "Standard shipping costs 4.95 dollars.", "2"],
    ["Larkspur Handbook", "Express shipping costs 14.50 dollars.", "3"],
]


def blank_pdf(path, password: str | None = None, owner: str | None = None) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    if password is not None:
        writer.encrypt(password, owner_password=owner)
    with open(path, "wb") as handle:
        writer.write(handle)


def handbook_docx(path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Larkspur Handbook", style="Title")
    document.add_paragraph("Read this first.")
    document.add_paragraph("Shipping", style="Heading 1")
    document.add_paragraph("Express shipping costs 14.50 dollars.")
    document.add_paragraph("International", style="Heading 2")
    document.add_paragraph("Customs fees are paid by the buyer.")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Kind", "Price"), ("Express", "14.50")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.add_paragraph("Returns", style="Heading 1")
    document.add_paragraph("Returns are free.")
    document.save(str(path))


# ---------------------------------------------------------------- readers


def test_markdown_headings_nest_and_the_text_stays_verbatim(tmp_path):
    (tmp_path / "handbook.md").write_text(HANDBOOK_MD, encoding="utf-8")
    doc = read_document(tmp_path / "handbook.md")
    assert doc.name == "handbook.md" and doc.language == "en"
    assert [(s.heading, s.page) for s in doc.sections] == [
        (None, None), ("Handbook", None), ("Handbook > Returns", None),
        ("Handbook > Returns > Refunds", None), ("Handbook > 退货政策", None),
    ]
    assert doc.sections[0].text == "Read this first."  # the front matter is skipped
    assert doc.sections[2].text == (
        "Items can be returned within 45 days of delivery. Keep the receipt!\n\n"
        "- unopened items: full refund\n- opened items: store credit\n\n"
        "| Kind | Days |\n|------|------|\n| Lamp | 45 |"
    )
    assert "# a comment in code, not a heading\necho refund" in doc.sections[3].text
    assert doc.sections[4].text == "退货期限是45天。请保留收据。运费由顾客承担！"
    assert doc.text == "\n\n".join(s.text for s in doc.sections)
    assert doc.text_with_headings.startswith("Read this first.\n\nHandbook\nWelcome")


def test_a_chinese_document_is_zh_and_text_files_split_into_paragraphs(tmp_path):
    (tmp_path / "政策.txt").write_bytes("\ufeff退货期限是45天。\r\n请保留收据。\r\n\r\n运费由顾客承担。\r\n".encode())
    doc = read_document(tmp_path / "政策.txt")
    assert doc.language == "zh"
    assert doc.sections == [Section(None, "退货期限是45天。\n请保留收据。\n\n运费由顾客承担。", None)]


def test_html_drops_scripts_navigation_and_furniture(tmp_path):
    (tmp_path / "shipping.html").write_text(
        "<html><head><title>Shipping</title><script>var secret = 'SCRIPT';</script></head><body>"
        "<nav>Home | NAVLINK</nav><header>SITE HEADER</header><noscript>NOSCRIPT</noscript>"
        "<h1>Shipping</h1><p>Standard   shipping\n costs 4.95.<br>Express costs 14.50.</p>"
        "<ul><li>One <b>bold</b> item</li><li>Two<ul><li>Nested</li></ul></li></ul>"
        "<h2>Rates</h2><table><tr><th>Kind</th><th>Price</th></tr><tr><td>Express</td><td>14.50</td></tr></table>"
        "<!-- COMMENT --><pre>  indented\n    code</pre><style>p { color: red }</style>"
        "<h1>Contact</h1><dl><dt>Phone</dt><dd>555-0100</dd></dl><footer>FOOTER</footer></body></html>",
        encoding="utf-8",
    )
    doc = read_document(tmp_path / "shipping.html")
    for hidden in ("SCRIPT", "NAVLINK", "SITE HEADER", "NOSCRIPT", "COMMENT", "color", "FOOTER", "<"):
        assert hidden not in doc.text
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Shipping", "Standard shipping costs 4.95.\nExpress costs 14.50.\n\nOne bold item\nTwo\nNested"),
        ("Shipping > Rates", "Kind | Price\nExpress | 14.50\n\n  indented\n    code"),
        ("Contact", "Phone\n555-0100"),
    ]


def test_pdf_pages_headings_and_running_heads(tmp_path):
    (tmp_path / "handbook.pdf").write_bytes(text_pdf(HANDBOOK_PDF))
    doc = read_document(tmp_path / "handbook.pdf")
    # the running head "Larkspur Handbook" and the page numbers open / close every page: dropped
    assert [(s.heading, s.page, s.text) for s in doc.sections] == [
        ("Returns", 1, "Items can be returned within 45 days of delivery.\nKeep the receipt with the item."),
        ("Returns", 2, "Refunds take 5 business days after the item arrives."),
        ("Shipping", 2, "Standard shipping costs 4.95 dollars."),
        ("Shipping", 3, "Express shipping costs 14.50 dollars."),
    ]
    chunks = chunk_document(doc, chunk_tokens=20, overlap=5)
    assert [(c.id, c.page, c.heading) for c in chunks] == [
        ("handbook.pdf#p1.c1", 1, "Returns"), ("handbook.pdf#p2.c2", 2, "Returns"),
        ("handbook.pdf#p2.c3", 2, "Shipping"), ("handbook.pdf#p3.c4", 3, "Shipping"),
    ]
    # with a larger budget the 10-token page-2 part of "Returns" is tiny and "Shipping" joins it; a new
    # page still starts a new chunk, so every chunk has one page
    chunks = chunk_document(doc, chunk_tokens=50, overlap=5)
    assert [(c.id, c.text) for c in chunks] == [
        ("handbook.pdf#p1.c1", "Returns\nItems can be returned within 45 days of delivery.\nKeep the receipt with "
                               "the item."),
        ("handbook.pdf#p2.c2", "Returns\nRefunds take 5 business days after the item arrives.\n\n"
                               "Shipping\nStandard shipping costs 4.95 dollars."),
        ("handbook.pdf#p3.c3", "Shipping\nExpress shipping costs 14.50 dollars."),
    ]


def test_pdf_heading_rules():
    """Short, unpunctuated, after a paragraph end and before text: a heading; else a line of text."""
    from seektune.docs.read import _pdf_page_sections, _Sections

    builder = _Sections()
    _pdf_page_sections(builder, 1, ["Chapter One", "Returns", "Returns are free.", "the next line, not a heading",
                                    "Items ship in 2 days.", "Express 14.50", "Costs apply.", "Trailing Line"])
    assert [(s.heading, s.text) for s in builder.sections] == [
        ("Chapter One > Returns",
         "Returns are free.\nthe next line, not a heading\nItems ship in 2 days.\nExpress 14.50\nCosts apply.\n"
         "Trailing Line"),
    ]


def test_pdf_with_an_empty_user_password_reads(tmp_path):
    blank_pdf(tmp_path / "open.pdf", password="", owner="owner-secret")
    with pytest.raises(DocumentError) as err:  # it opens, and then holds only a blank page
        read_document(tmp_path / "open.pdf")
    assert err.value.reason == "image_only"


def test_docx_headings_title_and_tables(tmp_path):
    handbook_docx(tmp_path / "handbook.docx")
    doc = read_document(tmp_path / "handbook.docx")
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Larkspur Handbook", "Read this first."),
        ("Larkspur Handbook > Shipping", "Express shipping costs 14.50 dollars."),
        ("Larkspur Handbook > Shipping > International", "Customs fees are paid by the buyer.\n\nKind | Price\n"
                                                        "Express | 14.50"),
        ("Larkspur Handbook > Returns", "Returns are free."),
    ]


def test_read_documents_reports_each_bad_file_and_reads_the_rest(tmp_path):
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "handbook.md").write_text(HANDBOOK_MD, encoding="utf-8")
    (docs / "shipping.html").write_text("<h1>Shipping</h1><p>It ships.</p>", encoding="utf-8")
    (docs / "policy.pdf").write_bytes(text_pdf(HANDBOOK_PDF))
    handbook_docx(docs / "handbook.docx")
    blank_pdf(docs / "locked.pdf", password="secret")
    blank_pdf(docs / "scan.pdf")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a PDF")
    (docs / "broken.docx").write_bytes(b"PK not a zip")
    (docs / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (docs / "latin1.txt").write_bytes("line one\nprix: 4,95 \u20ac\nCaf\xe9\n".encode("latin-1", "replace"))
    (docs / "notes.xyz").write_text("not a document type")
    (docs / "empty.md").write_text("  \n\n")
    (docs / "only-script.html").write_text("<script>alert(1)</script>")
    (docs / ".DS_Store").write_bytes(b"\x00\x01")
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD").write_text("ref")
    documents, failures = read_documents([docs, tmp_path / "missing"])
    assert [d.name for d in documents] == ["guides/handbook.md", "handbook.docx", "policy.pdf", "shipping.html"]
    reasons = {f["document"]: f["reason"] for f in failures}
    assert reasons == {
        "broken.docx": "unreadable", "broken.pdf": "unreadable", "empty.md": "empty", "image.md": "binary",
        "latin1.txt": "invalid_utf8", "locked.pdf": "encrypted", "notes.xyz": "unsupported_type",
        "only-script.html": "empty", "scan.pdf": "image_only", str(tmp_path / "missing"): "not_found",
    }
    details = {f["document"]: f["detail"] for f in failures}
    assert "line 3" in details["latin1.txt"] and "0xe9" in details["latin1.txt"]
    assert "password" in details["locked.pdf"]
    assert all(f["detail"] for f in failures)
    found = find_documents([docs, docs / "notes.xyz"])  # a file named twice is listed once
    assert [name for _, name in found][:3] == ["broken.docx", "broken.pdf", "empty.md"] and len(found) == 13
    with pytest.raises(DocumentError) as err:
        find_documents([tmp_path / "missing"])
    assert err.value.reason == "not_found"


def test_prepare_reads_documents_with_precise_reject_codes(tmp_path):
    from seektune.data.io import RawRow, Reject, read_file

    (tmp_path / "handbook.md").write_text(HANDBOOK_MD, encoding="utf-8")
    (tmp_path / "page.htm").write_text("<h1>Shipping</h1><p>It ships.</p>", encoding="utf-8")
    blank_pdf(tmp_path / "scan.pdf")
    [row] = read_file(tmp_path / "handbook.md")
    assert isinstance(row, RawRow) and row.origin == "handbook.md" and row.data["document"] is True
    assert "Handbook > Returns\nItems can be returned" in row.data["text"]
    assert [r.data["text"] for r in read_file(tmp_path / "page.htm")] == ["Shipping\nIt ships."]
    [reject] = read_file(tmp_path / "scan.pdf")
    assert isinstance(reject, Reject)
    assert (reject.origin, reject.step, reject.reason) == ("scan.pdf", "read", "image_only")


# ---------------------------------------------------------------- chunking


def long_document() -> Document:
    """Nested headings, a tiny section, long English sections of short sentences and a Chinese one."""
    english = " ".join(f"Rule {i} says that item {i} ships within {i % 7 + 2} days." for i in range(40))
    lists = "\n".join(f"- option {i}: keep the box" for i in range(12))
    chinese = "".join(f"第{i}条规定商品在{i % 5 + 1}天内发货。" for i in range(30))
    sections = [
        Section(None, "Read this first."),
        Section("Handbook", "Welcome."),
        Section("Handbook > Shipping", english + "\n\n" + lists + "\n\nShort closing paragraph."),
        Section("Handbook > 发货", chinese),
        Section("Handbook > Returns", "Returns are free. Keep the receipt!\n\nRefunds take 5 days?"),
    ]
    return Document("handbook.md", None, sections, "en")  # type: ignore[arg-type]


def overlap_tokens(previous: str, current: str, counter) -> int:
    """Tokens of the longest tail of ``previous`` that opens ``current``'s body (after the heading line)."""
    body = current.split("\n", 1)[1] if "\n" in current else current
    best = ""
    for start in range(len(previous)):
        tail = previous[start:]
        if tail.strip() and body.startswith(tail):
            best = tail
            break
    return counter(best) if best else 0


def check_invariants(doc: Document, chunks, count, chunk_tokens: int, overlap: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.id for c in chunks] == [f"{doc.name}#c{k}" for k in range(1, len(chunks) + 1)]
    for chunk in chunks:
        assert count(chunk.text) <= chunk_tokens, chunk.text
        assert chunk.sha256 == hashlib.sha256(chunk.text.encode("utf-8")).hexdigest()
        assert chunk.document == doc.name
        if chunk.heading is not None:
            assert chunk.text.split("\n", 1)[0] == chunk.heading
    for section in doc.sections:  # nothing lost: every sentence (each line of a list) is in some chunk
        for start, end in sentences(section.text):
            for line in section.text[start:end].split("\n"):
                assert any(line in c.text for c in chunks), line
    shared = []
    for previous, current in zip(chunks, chunks[1:]):
        if previous.heading == current.heading:
            shared.append(overlap_tokens(previous.text, current.text, count))
    assert max(shared) <= overlap and max(shared) > 0


@pytest.mark.parametrize("chunk_tokens,overlap", [(60, 12), (40, 0), (25, 12)])
def test_chunks_respect_budget_overlap_and_lose_nothing(chunk_tokens, overlap):
    doc = long_document()
    chunks = chunk_document(doc, chunk_tokens=chunk_tokens, overlap=overlap)
    if overlap:
        check_invariants(doc, chunks, count_tokens, chunk_tokens, overlap)
    else:
        assert all(count_tokens(c.text) <= chunk_tokens for c in chunks)
        for previous, current in zip(chunks, chunks[1:]):
            assert overlap_tokens(previous.text, current.text, count_tokens) == 0
    # tiny sections merge: the intro and "Welcome." open the first chunk with the next heading inside it
    assert chunks[0].heading is None and chunks[0].text.startswith("Read this first.\n\nHandbook\nWelcome.")


def test_chunks_with_a_real_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    doc = long_document()
    chunks = chunk_document(doc, tokenizer, chunk_tokens=120, overlap=30)

    def count(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    check_invariants(doc, chunks, count, 120, 30)


def test_chinese_chunks_cut_at_sentence_ends_and_count_characters():
    chinese = "".join(f"第{i}条规定商品在{i % 5 + 1}天内发货。" for i in range(30))
    doc = Document("政策.txt", None, [Section(None, chinese)], "zh")  # type: ignore[arg-type]
    assert count_tokens("退货期限是45天。") == 8  # ideographs one each, "45" and "。" one each
    chunks = chunk_document(doc, chunk_tokens=50, overlap=15)
    assert len(chunks) > 5
    assert all(c.text.endswith("。") and c.text.startswith("第") for c in chunks)
    assert all(count_tokens(c.text) <= 50 for c in chunks)
    assert chunks[1].text.startswith(chunks[0].text.split("。")[-2] + "。")  # the last sentence repeats


def test_a_long_run_without_sentence_ends_is_cut_by_tokens():
    words = " ".join(f"w{i}" for i in range(95))
    doc = Document("x.txt", None, [Section("Log", words), Section("Blob", "x" * 5000)], "en")  # type: ignore[arg-type]
    chunks = chunk_document(doc, chunk_tokens=20, overlap=4)
    log = [c for c in chunks if c.heading == "Log"]
    assert all(count_tokens(c.text) <= 20 for c in log)
    assert " ".join(c.text.split("\n", 1)[1] for c in log) == words  # verbatim, in order, no overlap (no sentences)
    assert [c.text for c in chunks if c.heading == "Blob"] == ["Blob\n" + "x" * 5000]  # one unsplittable token


def test_a_heading_starts_a_new_chunk_unless_the_chunk_is_tiny():
    doc = Document("d.md", None, [  # type: ignore[arg-type]
        Section("A", "one two three four five six seven eight nine."),  # 10 tokens with its heading: 40 / 4
        Section("B", "tiny."),
        Section("C", "also short here."),
    ], "en")
    chunks = chunk_document(doc, chunk_tokens=40, overlap=5)
    assert [(c.heading, c.text) for c in chunks] == [
        ("A", "A\none two three four five six seven eight nine."),
        ("B", "B\ntiny.\n\nC\nalso short here."),
    ]


def test_bad_chunk_settings_are_refused():
    doc = long_document()
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(doc, chunk_tokens=10, overlap=10)
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_document(doc, chunk_tokens=0, overlap=0)
