"""Issue #3 acceptance: 14 kinds of bad input mixed into valid rows; every bad row is reported
with its origin and reason, no valid row is lost, valid rows change only by the configured cleaning."""

import json

import yaml

from seektune.data import prepare
from seektune.data.io import read_jsonl
from seektune.recipe import load_recipe


ITEMS = ["lamp", "sofa", "grill", "tent", "rug", "kettle", "chair", "desk", "lantern", "blanket", "shelf",
         "mirror", "stool", "hammock", "cooler", "planter", "clock", "bench", "fan", "heater", "easel", "crate",
         "ladder", "cushion", "vase"]
VERBS = ["return", "exchange", "repair", "ship", "insure", "assemble", "store", "clean", "gift", "resell"]


def qa(i):
    item, verb = ITEMS[i % len(ITEMS)], VERBS[i % len(VERBS)]
    category = ["returns", "shipping", "warranty"][i % 3]
    return {"question": f"Can I {verb} my {item} bought in week {i}?",
            "answer": f"Yes: a {item} can be {verb}ed within {i + 10} days for ${i}.95 under plan {item.upper()}-{i}.",
            "category": category}


def test_fourteen_kinds_of_bad_rows(tmp_path, tiny_llama):
    data = tmp_path / "data"
    data.mkdir()
    valid: dict[str, dict] = {}  # origin -> row

    lines = []
    for i in range(12):
        lines.append(json.dumps(qa(i)))
        valid[f"main.jsonl:{len(lines)}"] = qa(i)
    bad = {
        "invalid_json": '{"question": "broken", "answer": ',
        "nul": '{"question": "nul\x00byte", "answer": "x"}',  # a raw NUL inside a JSON string is invalid JSON
        "missing_field": json.dumps({"question": "where is the answer?"}),
        "wrong_type": json.dumps({"question": "typed?", "answer": 42}),
        "empty_answer": json.dumps({"question": "empty?", "answer": "   "}),
        "bad_role_order": json.dumps({"messages": [{"role": "assistant", "content": "hi"},
                                                   {"role": "user", "content": "hello"}]}),
        "odd_turn_count": json.dumps({"messages": [{"role": "user", "content": "a"},
                                                   {"role": "assistant", "content": "b"},
                                                   {"role": "user", "content": "c"}]}),
        "over_length": json.dumps({"question": "long one?", "answer": " ".join(f"w{n}" for n in range(400))}),
        "duplicate": json.dumps(qa(0)),
    }
    bad_lines = {}
    for kind, line in bad.items():
        lines.append(line)
        bad_lines[kind] = f"main.jsonl:{len(lines)}"
    lines.append(json.dumps(qa(12)))
    valid[f"main.jsonl:{len(lines)}"] = qa(12)
    (data / "main.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))  # CRLF

    (data / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (json.dumps(qa(20)) + "\n").encode())
    valid["bom.jsonl:1"] = qa(20)
    (data / "utf16.jsonl").write_bytes((json.dumps(qa(21), ensure_ascii=False) + "\n").encode("utf-16"))
    valid["utf16.jsonl:1"] = qa(21)
    (data / "bytes.jsonl").write_bytes(json.dumps(qa(22)).encode() + b"\n" + b'{"question": "bad \xff\xfe", "answer": "x"}\n')
    valid["bytes.jsonl:1"] = qa(22)
    csv_rows = ["question,answer,category", f'"{qa(23)["question"]}","{qa(23)["answer"]}",{qa(23)["category"]}',
                'q,"broken "quote,returns', f'"{qa(24)["question"]}","{qa(24)["answer"]}",{qa(24)["category"]}']
    (data / "sheet.csv").write_text("\n".join(csv_rows) + "\n", encoding="utf-8")
    valid["sheet.csv:2"] = qa(23)
    valid["sheet.csv:4"] = qa(24)

    recipe = {
        "model": str(tiny_llama),
        "data": {"paths": ["data"], "columns": {"user": "question", "assistant": "answer"}, "max_length": 128,
                 "meta_fields": ["category"], "dedup": {"near": True},
                 "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0}},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run_dir = prepare.run(load_recipe(tmp_path / "recipe.yaml"))

    rejects = {r["origin"]: r for r in read_jsonl(run_dir / "data" / "rejects.jsonl")}
    expected = {
        bad_lines["invalid_json"]: "invalid_json", bad_lines["nul"]: "invalid_json",
        bad_lines["missing_field"]: "missing_field", bad_lines["wrong_type"]: "wrong_type",
        bad_lines["empty_answer"]: "empty_answer", bad_lines["bad_role_order"]: "bad_role_order",
        bad_lines["odd_turn_count"]: "odd_turn_count", bad_lines["over_length"]: "too_long_rendered",
        bad_lines["duplicate"]: "exact_duplicate", "bytes.jsonl:2": "invalid_utf8", "sheet.csv:3": "broken_csv",
    }
    assert {origin: r["reason"] for origin, r in rejects.items()} == expected
    assert all(r["step"] and r["detail"] for r in rejects.values())

    kept = {}
    for split in ("train", "val", "test"):
        for record in read_jsonl(run_dir / "data" / f"{split}.jsonl"):
            kept[record["meta"]["origin"]] = record
    assert set(kept) == set(valid), "every valid row (BOM, UTF-16, CRLF files included) is kept"
    for origin, row in valid.items():
        messages = kept[origin]["messages"]
        assert messages[0]["content"] == row["question"] and messages[1]["content"] == row["answer"]
        assert kept[origin]["meta"]["category"] == row["category"]
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["kept"] + summary["rejected"] == summary["read"] + summary["added"]
    card = json.loads((run_dir / "data" / "card.json").read_text())
    assert card["duplicates"]["exact"] == 1 and card["accounting"]["kept"] == len(valid)
    assert "<img" in (run_dir / "data" / "card.html").read_text()
