from collections import Counter

import pytest

from seektune.data.augment import expand_terms, fill_templates, paraphrase, swap_synonyms
from seektune.data.balance import balance
from seektune.data.documents import chunk_text


def rec(question, answer="A.", category=None, origin="f.jsonl:1"):
    meta = {"origin": origin}
    if category:
        meta["category"] = category
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "meta": meta}


def test_downsampling_meets_ratio_and_reports_dropped_rows():
    rows = [rec(f"q{i}", category="a", origin=f"f:{i}") for i in range(50)]
    rows += [rec(f"r{i}", category="b", origin=f"g:{i}") for i in range(100)]
    kept, dropped, added = balance(rows, "category", {"a": 1, "b": 1.2}, "down", seed=0)
    counts = Counter(r["meta"]["category"] for r in kept)
    assert counts == {"a": 50, "b": 60} and len(dropped) == 40 and not added
    assert len(kept) + len(dropped) == len(rows)


def test_upsampling_repeats_small_categories_and_tags_copies():
    rows = [rec(f"q{i}", category="a") for i in range(10)] + [rec(f"r{i}", category="b") for i in range(30)]
    kept, dropped, added = balance(rows, "category", {"a": 1, "b": 1}, "up", seed=0)
    assert Counter(r["meta"]["category"] for r in kept) == {"a": 30, "b": 30}
    assert len(added) == 20 and all("upsampled_from" in r["meta"] for r in added) and not dropped


def test_balance_names_missing_category():
    with pytest.raises(ValueError, match="no rows with category = c"):
        balance([rec("q", category="a")], "category", {"a": 1, "c": 1})


def test_template_filling_expands_placeholders_and_rejects_unknown_ones():
    rows = [rec("Can I return a {product} after {days} days?", "Yes."), rec("plain question"),
            rec("What about {colour}?")]
    out, rejects = fill_templates(rows, {"product": ["lamp", "sofa"], "days": ["10", "20"]})
    questions = [r["messages"][0]["content"] for r in out]
    assert "Can I return a sofa after 20 days?" in questions and "plain question" in questions and len(out) == 5
    assert all(r["meta"]["augmented_from"] == "f.jsonl:1" for r in out if "augment" in r["meta"])
    assert [(reason) for _, reason, _ in rejects] == ["unknown_placeholder"]


def test_term_expansion_and_synonyms_change_questions_only():
    rows = [rec("患者可以退货吗？", "可以，45天内。")]
    new = expand_terms(rows, {"患者": ["糖尿病患者", "高血压患者"]}, per_row=2, seed=0)
    assert sorted(r["messages"][0]["content"] for r in new) == ["糖尿病患者可以退货吗？", "高血压患者可以退货吗？"]
    assert all(r["messages"][1]["content"] == "可以，45天内。" for r in new)
    en = swap_synonyms([rec("Can I return my order?", "Within 45 days.")], {"return": ["send back"]}, 1, 0)
    assert en[0]["messages"][0]["content"] == "Can I send back my order?" and en[0]["meta"]["augment"] == "synonym"


def test_paraphrase_uses_the_generator_and_reports_failures():
    rows = [rec("How long is the return window?", origin="f:1"), rec("boom", origin="f:2")]

    def fake(prompt):
        if "boom" in prompt:
            raise RuntimeError("endpoint down")
        return "What is the time limit for returns?"

    new, failures = paraphrase(rows, fake, per_row=1)
    assert [r["messages"][0]["content"] for r in new] == ["What is the time limit for returns?"]
    assert new[0]["meta"]["origin"] == "f:1+para1"
    assert failures[0][1] == "paraphrase_failed" and "endpoint down" in failures[0][2]


def test_chunking_bounds_chunk_size_and_keeps_paragraphs():
    text = "\n\n".join(f"paragraph {i} " + "word " * 30 for i in range(10)) + "\n\n" + "long " * 300
    chunks = chunk_text(text, None, chunk_tokens=100, overlap=10)
    assert all(len(c.split()) <= 100 for c in chunks)
    assert "paragraph 0" in chunks[0] and chunks[-1].startswith("long")
    joined = " ".join(chunks)
    assert all(f"paragraph {i} " in joined for i in range(10))
