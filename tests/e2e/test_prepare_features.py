"""prepare end to end: every input kind, documents, balance, group split, leakage audit, augmentation, card."""

import json

import pytest
import yaml

from seektune.data import prepare
from seektune.data.io import read_jsonl
from seektune.recipe import load_recipe


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with one line of text, xref offsets computed (no PDF library needed to write it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def run_prepare(tmp_path, model_dir, data: dict, **extra):
    recipe = {"model": str(model_dir), "data": data, "output_dir": str(tmp_path / "run")}
    recipe.update(extra)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    run_dir = prepare.run(load_recipe(tmp_path / "recipe.yaml"))
    splits = {s: read_jsonl(run_dir / "data" / f"{s}.jsonl") for s in ("train", "val", "test")}
    return run_dir, splits


def test_every_input_kind_is_read_with_its_origin(tmp_path, tiny_llama):
    import docx
    from datasets import Dataset

    data = tmp_path / "in"
    data.mkdir()
    rows = [{"instruction": f"Question {w}?", "output": f"Answer about {w}."} for w in
            ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")]
    Dataset.from_list(rows[:2]).to_parquet(str(data / "t.parquet"))
    Dataset.from_list(rows[2:4]).save_to_disk(str(data / "saved"))
    (data / "t.tsv").write_text("instruction\toutput\n" + "".join(f"{r['instruction']}\t{r['output']}\n" for r in rows[4:]))
    (data / "notes.md").write_text("# Returns\n\nLarkspur accepts returns within 45 days.\n\nKeep the receipt.\n")
    (data / "policy.pdf").write_bytes(minimal_pdf("Warranty lasts 18 months"))
    document = docx.Document()
    document.add_paragraph("Express shipping costs 14.50 dollars.")
    document.save(str(data / "shipping.docx"))
    (data / "broken.pdf").write_bytes(b"%PDF-1.4 not really")

    run_dir, splits = run_prepare(tmp_path, tiny_llama, {"paths": ["in"], "split": {"train": 1.0, "val": 0.0, "test": 0.0}})
    kept = {r["meta"]["origin"]: r for r in splits["train"]}
    assert {"t.parquet:row1", "t.parquet:row2", "saved:#0", "saved:#1", "t.tsv:2", "t.tsv:3"} <= set(kept)
    texts = {origin: r.get("text") for origin, r in kept.items() if "text" in r}
    assert any("45 days" in t for t in texts.values()) and any(o.startswith("notes.md#chunk") for o in texts)
    assert any("Warranty lasts 18 months" in t for t in texts.values())
    assert any("14.50" in t for o, t in texts.items() if o.startswith("shipping.docx"))
    rejects = read_jsonl(run_dir / "data" / "rejects.jsonl")
    assert [(r["origin"], r["reason"]) for r in rejects] == [("broken.pdf", "unreadable")]


def test_group_split_leakage_audit_and_card(tmp_path, tiny_llama):
    rows = []
    for conv in range(30):
        for turn in range(3):
            rows.append({"question": f"Conversation {conv} turn {turn}: what about item {conv * 7 + turn}?",
                         "answer": f"Item {conv * 7 + turn} ships in {turn + 2} days from depot {conv}.",
                         "conv": f"c{conv}", "category": "a" if conv % 2 else "b"})
    # a leak planted across conversations: the same question and answer in two groups
    rows.append({"question": rows[0]["question"], "answer": rows[0]["answer"] + " ", "conv": "c99", "category": "a"})
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"paths": [str(path)], "columns": {"user": "question", "assistant": "answer"},
            "meta_fields": ["conv", "category"], "dedup": {"exact": False, "near": False},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2, "group_by": "conv", "seed": 3}}
    run_dir, splits = run_prepare(tmp_path, tiny_llama, data)
    owner = {}
    for split, records in splits.items():
        for r in records:
            assert owner.setdefault(r["meta"]["conv"], split) == split
    card = json.loads((run_dir / "data" / "card.json").read_text())
    leaked_origins = {"chat.jsonl:1", "chat.jsonl:91"}
    if owner.get("c0") != owner.get("c99"):
        assert len(card["leakage"]) == 1 and {card["leakage"][0]["origin"], card["leakage"][0]["other_origin"]} == leaked_origins
        rejects = read_jsonl(run_dir / "data" / "rejects.jsonl")
        assert rejects[0]["step"] == "leakage" and rejects[0]["origin"] in leaked_origins
    assert card["accounting"]["kept"] + card["accounting"]["rejected"] == card["accounting"]["read"]
    assert [s["step"] for s in card["steps"]][:2] == ["read", "format"]
    assert set(card["splits"]) == {"train", "val", "test"} and card["splits"]["train"]["tokens"]["count"] > 0


def test_balance_augment_and_pii_in_one_recipe(tmp_path, tiny_llama):
    rows = [{"question": f"Billing question {i} from a{i}@example.com?", "answer": f"Billing answer {i}.", "category": "billing"}
            for i in range(40)]
    rows += [{"question": f"Can I return the {w}?", "answer": f"Yes, the {w} can be returned.", "category": "returns"}
             for w in ("lamp", "sofa", "tent", "grill", "rug", "desk", "chair", "fan", "kettle", "clock")]
    path = tmp_path / "faq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"paths": [str(path)], "columns": {"user": "question", "assistant": "answer"}, "meta_fields": ["category"],
            "clean": ["whitespace", {"pii": {"types": ["email"]}}],
            "balance": {"by": "category", "ratios": {"billing": 1.5, "returns": 1}, "mode": "down"},
            "augment": {"synonyms": {"return": ["send back"]}},
            "split": {"train": 0.8, "val": 0.0, "test": 0.2, "seed": 0}}
    run_dir, splits = run_prepare(tmp_path, tiny_llama, data)
    every = [r for records in splits.values() for r in records]
    assert all("@" not in r["messages"][0]["content"] for r in every)
    assert any("[EMAIL]" in r["messages"][0]["content"] for r in every)
    original = [r for r in every if "augment" not in r["meta"]]
    assert sum(r["meta"]["category"] == "billing" for r in original) == 15
    augmented = [r for r in splits["train"] if r["meta"].get("augment") == "synonym"]
    assert augmented and all("send back" in r["messages"][0]["content"] for r in augmented)
    assert not [r for r in splits["test"] if "augment" in r["meta"]]  # augmentation never reaches test
    rejects = read_jsonl(run_dir / "data" / "rejects.jsonl")
    assert sum(r["reason"] == "downsampled" for r in rejects) == 25
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["kept"] + summary["rejected"] == summary["read"] + summary["added"]


def test_paraphrase_without_a_generator_says_so(tmp_path, tiny_llama, faq_file):
    data = {"paths": [str(faq_file)], "columns": {"user": "question", "assistant": "answer"},
            "augment": {"paraphrase": {"per_row": 1}}}
    with pytest.raises(ValueError, match="paraphrase needs a generator"):
        run_prepare(tmp_path, tiny_llama, data)


def test_overlength_error_policy_names_the_row(tmp_path, tiny_llama):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "q", "output": " ".join(f"w{i}" for i in range(300))}) + "\n")
    with pytest.raises(prepare.OverlengthError, match="d.jsonl:1"):
        run_prepare(tmp_path, tiny_llama, {"paths": [str(path)], "max_length": 64,
                                           "filters": {"overlength": "error"}})


def test_truncated_rows_are_counted_and_the_card_shows_lengths_after_truncation(tmp_path, tiny_llama):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": f"question {i}", "output": " ".join(f"w{j}" for j in range(10 + 190 * (i % 2)))}
            for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir, splits = run_prepare(tmp_path, tiny_llama, {"paths": [str(path)], "max_length": 96,
                                                         "filters": {"overlength": "truncate"},
                                                         "dedup": {"exact": False, "near": False}})
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    card = json.loads((run_dir / "data" / "card.json").read_text())
    flagged = {s: sum(bool(r["meta"].get("truncated")) for r in rows) for s, rows in splits.items()}
    assert sum(flagged.values()) >= 4  # the long half of the rows (the leakage audit may take a few)
    assert {s: part["rows"] for s, part in summary["truncated"].items()} == flagged
    assert all(part["tokens_cut"] > 0 for s, part in summary["truncated"].items() if flagged[s])
    assert all(info["tokens"].get("max", 0) <= 96 for info in card["splits"].values())  # what training sees
    html = (run_dir / "data" / "card.html").read_text()
    assert "truncated rows" in html and "tokens cut" in html


def test_a_language_the_tokenizer_fits_badly_is_measured_and_warned_about(tmp_path, tiny_llama):
    """The tiny byte-level tokenizer spends several tokens per Chinese character: most Chinese rows pass
    max_length, the English ones do not; the card and summary say so, with what to do."""
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": f"退货期限是多少天{i}？", "output": "退货期限是四十五天。运费由顾客承担，退款在五个工作日内到账。"
                                                             "商品需保持完好并附上发票，赠品一并退回。"} for i in range(8)]
    rows += [{"instruction": f"question {i}", "output": "Returns are accepted within 45 days."} for i in range(8)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run_dir, _ = run_prepare(tmp_path, tiny_llama, {"paths": [str(path)], "max_length": 96,
                                                    "dedup": {"exact": False, "near": False}})
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    fit = summary["length_fit"]
    assert fit["zh"]["rows"] == 8 and fit["en"]["rows"] == 8
    assert fit["zh"]["tokens_per_char"] > 2 * fit["en"]["tokens_per_char"]
    assert fit["zh"]["over_max_length"] == 8 and fit["en"]["over_max_length"] == 0
    assert summary["rejected_by_reason"] == {"too_long_rendered": 8}
    html = (run_dir / "data" / "card.html").read_text()
    assert "Length fit of" in html and "8 of 8 zh rows (100%) are longer than data.max_length 96" in html
    assert "were dropped" in html and "en rows" not in html


def test_all_rows_rejected_is_an_error_that_points_at_rejects(tmp_path, tiny_llama):
    path = tmp_path / "d.jsonl"
    path.write_text('{"broken": \n' + json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(ValueError, match="all 2 were rejected") as info:
        run_prepare(tmp_path, tiny_llama, {"paths": [str(path)]})
    assert "rejects.jsonl" in str(info.value) and (tmp_path / "run" / "data" / "rejects.jsonl").is_file()


def test_paraphrase_with_a_local_model_tags_new_rows(tmp_path, tiny_llama, faq_file):
    data = {"paths": [str(faq_file)], "columns": {"user": "question", "assistant": "answer"},
            "dedup": {"exact": False, "near": False}, "leakage": {"check": False},
            "augment": {"paraphrase": {"model": str(tiny_llama), "per_row": 1}},
            "split": {"train": 0.5, "val": 0.0, "test": 0.5, "seed": 0}}
    run_dir, splits = run_prepare(tmp_path, tiny_llama, data)
    new = [r for r in splits["train"] if r["meta"].get("augment") == "para"]
    assert new, "the random tiny model still writes some text for most rows"
    assert all(r["meta"]["origin"].endswith("+para1") and r["meta"]["augmented_from"] for r in new)
    originals = {r["meta"]["origin"]: r for r in splits["train"] if "augment" not in r["meta"]}
    for r in new:  # the answer is never rewritten
        assert r["messages"][-1] == originals[r["meta"]["augmented_from"]]["messages"][-1]
