"""The customer-service handbook (examples/customer-service/docs/) states every fact of the FAQ.

`seektune synth` turns these documents into training rows, and a model trained on those rows alone
must answer the FAQ's questions, so each `facts` string of faq_en.jsonl must occur verbatim in
handbook.md and in the text pypdf extracts from handbook.pdf, and each of faq_zh.jsonl in
handbook_zh.md. Case-sensitive; runs of whitespace count as one space (a PDF line wrap may also
split a fact, hence the whitespace-free fallback for the PDF).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "customer-service"
DOCS = EXAMPLE / "docs"


def _facts(name: str) -> list[str]:
    facts: set[str] = set()
    with (EXAMPLE / "data" / name).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                facts.update(json.loads(line)["facts"])
    return sorted(facts)


def _spaced(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _unspaced(text: str) -> str:
    return re.sub(r"\s+", "", text)


@cache
def _pdf_text() -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(DOCS / "handbook.pdf").pages)


EN_FACTS = _facts("faq_en.jsonl")
ZH_FACTS = _facts("faq_zh.jsonl")


def test_fact_lists_are_the_faq_s():
    assert len(EN_FACTS) >= 80  # 69 fact groups, 1-2 facts each
    assert len(ZH_FACTS) >= 14
    assert "45 days" in EN_FACTS and "45天" in ZH_FACTS


@pytest.mark.parametrize(("document", "facts"), [("handbook.md", EN_FACTS), ("handbook_zh.md", ZH_FACTS)])
def test_markdown_handbook_states_every_fact(document, facts):
    text = _spaced((DOCS / document).read_text(encoding="utf-8"))
    missing = [fact for fact in facts if _spaced(fact) not in text]
    assert not missing, f"{document} lacks FAQ facts: {missing}"


def test_pdf_handbook_states_every_english_fact():
    text = _pdf_text()
    spaced, unspaced = _spaced(text), _unspaced(text)
    missing = [f for f in EN_FACTS if _spaced(f) not in spaced and _unspaced(f) not in unspaced]
    assert not missing, f"handbook.pdf lacks FAQ facts (rerun make_pdf.py?): {missing}"


def test_handbooks_have_headings_and_length():
    english = (DOCS / "handbook.md").read_text(encoding="utf-8")
    chinese = (DOCS / "handbook_zh.md").read_text(encoding="utf-8")
    assert english.startswith("# ") and english.count("\n## ") >= 8 and "\n### " in english
    assert chinese.startswith("# ") and chinese.count("\n## ") >= 8
    assert 2000 <= len(english.split()) <= 4500
    assert len(re.findall(r"[\u4e00-\u9fff]", chinese)) >= 3000
