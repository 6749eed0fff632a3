import json

import pytest

from seektune.data import prepare
from seektune.data.io import DataPathError, RawRow, Reject, read_file, read_rows
from seektune.recipe import load_recipe


def _items(path):
    return list(read_file(path))


def test_jsonl_bad_line_is_reported_with_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n\n[1, 2]\n{"a": 3}\n', encoding="utf-8")
    items = _items(path)
    assert [i.origin for i in items if isinstance(i, RawRow)] == ["d.jsonl:1", "d.jsonl:5"]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.origin, r.reason) for r in rejects] == [("d.jsonl:2", "invalid_json"), ("d.jsonl:4", "not_an_object")]


def test_encodings_bom_utf16_crlf_and_invalid_bytes(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"a": "x"}\r\n{"a": "y"}\r\n')
    assert [i.data for i in _items(bom)] == [{"a": "x"}, {"a": "y"}]
    utf16 = tmp_path / "u16.jsonl"
    utf16.write_bytes('{"a": "退货"}\n'.encode("utf-16"))
    assert [i.data for i in _items(utf16)] == [{"a": "退货"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": "ok"}\n{"a": "\xff\xfe broken"}\n{"a": "fine"}\n')
    items = _items(bad)
    assert [i.data["a"] for i in items if isinstance(i, RawRow)] == ["ok", "fine"]
    assert [(i.origin, i.reason) for i in items if isinstance(i, Reject)] == [("bad.jsonl:2", "invalid_utf8")]


def test_json_array_and_object_of_arrays(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [{"a": 1}, 5], "more": [{"a": 2}]}), encoding="utf-8")
    items = _items(path)
    assert [i.origin for i in items] == ["d.json:#0", "d.json:#1", "d.json:#2"]
    assert isinstance(items[1], Reject) and items[1].reason == "not_an_object"


def test_csv_rows_carry_line_numbers_including_multiline_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\nq1,"a1\nstill a1"\nq2,a2\nq3,a3,extra\n', encoding="utf-8")
    items = _items(path)
    assert [(i.origin, type(i).__name__) for i in items] == [
        ("d.csv:2", "RawRow"), ("d.csv:4", "RawRow"), ("d.csv:5", "Reject")]
    assert items[0].data == {"question": "q1", "answer": "a1\nstill a1"}


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataPathError, match="nope.jsonl"):
        list(read_rows([tmp_path / "nope.jsonl"]))


def test_prepare_reports_bad_rows_and_keeps_valid_ones(tmp_path, tiny_llama):
    data = tmp_path / "faq.jsonl"
    good = [{"question": f"question {i}?", "answer": f"answer {i}.", "facts": [str(i)]} for i in range(10)]
    lines = [json.dumps(r) for r in good[:4]]
    lines += ['{"question": "broken json", ', json.dumps({"question": "no answer"}),
              json.dumps({"question": "empty", "answer": "  "})]
    lines += [json.dumps(r) for r in good[4:]]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe_file = tmp_path / "recipe.yaml"
    # the tiny fixture's tokenizer for the length checks: the default model would be converted from GGUF first
    recipe_file.write_text(
        f"model: {tiny_llama}\n"
        f"data:\n  paths: [{data.name}]\n  columns: {{user: question, assistant: answer}}\n"
        f"output_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    run_dir = prepare.run(load_recipe(recipe_file))
    rejects = prepare.rejects_of(run_dir)
    assert [(r["origin"], r["reason"]) for r in rejects] == [
        ("faq.jsonl:5", "invalid_json"), ("faq.jsonl:6", "missing_field"), ("faq.jsonl:7", "empty_answer")]
    kept = []
    for split in ("train", "val", "test"):
        kept += [json.loads(l) for l in (run_dir / "data" / f"{split}.jsonl").read_text().splitlines()]
    assert sorted(r["messages"][-1]["content"] for r in kept) == sorted(r["answer"] for r in good)
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["read"] == 13 and summary["kept"] == 10 and summary["rejected"] == 3
    card = json.loads((run_dir / "data" / "card.json").read_text())
    assert card["accounting"] == {"read": 13, "added": 0, "kept": 10, "rejected": 3}
    assert card["token_unit"] == "tokens"  # the length check ran with the model's tokenizer
    assert (run_dir / "recipe.resolved.yaml").is_file()


def test_broken_csv_quote_rejects_that_row_and_reading_resumes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\nq1,a1\nq2,"a2" trailing\nq3,a3\nq4,"unterminated\n', encoding="utf-8")
    items = _items(path)
    assert [(i.origin, type(i).__name__, getattr(i, "reason", None)) for i in items] == [
        ("d.csv:2", "RawRow", None), ("d.csv:3", "Reject", "broken_csv"), ("d.csv:4", "RawRow", None),
        ("d.csv:5", "Reject", "broken_csv")]


def test_rows_rejected_after_prepare_keep_the_accounting_and_count_once(tmp_path):
    """Training rejects rows prepare kept (too long once rendered): they join rejects.jsonl and the summary,
    kept + rejected == read + added still holds, and rendering again replaces them instead of adding twice."""
    from seektune.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.data.mkdir(parents=True)
    early = Reject("faq.jsonl:3", "filter", "too_long", "300 tokens > 256", {"text": "x"}).to_dict()
    run.rejects.write_text(json.dumps(early) + "\n", encoding="utf-8")
    summary = {"read": 10, "added": 2, "kept": 11, "rejected": 1, "rejected_by_reason": {"too_long": 1},
               "splits": {"train": 8, "val": 2, "test": 1}}
    run.data_summary.write_text(json.dumps(summary), encoding="utf-8")

    def reject(origin, split, reason="render_failed"):
        return Reject(origin, f"render:{split}", reason, "detail", {"messages": []})

    late = [reject("faq.jsonl:5", "train"), reject("faq.jsonl:7", "val"), reject("faq.jsonl:9", "train.distilled")]
    for _ in range(2):  # a second training run of the same data counts each row once
        prepare.record_late_rejects(run, "render", late)
        got = json.loads(run.data_summary.read_text(encoding="utf-8"))
        assert got["splits"] == {"train": 7, "val": 1, "test": 1}
        assert got["kept"] == 9 and got["rejected"] == 3 and got["kept"] + got["rejected"] == 10 + 2
        assert got["rejected_by_reason"] == {"too_long": 1, "render_failed": 2}
        assert got["derived_rejects"] == {"train.distilled": 1}  # a derived split is listed, not counted
        assert [r["origin"] for r in prepare.rejects_of(run)] == ["faq.jsonl:3", "faq.jsonl:5", "faq.jsonl:7",
                                                                  "faq.jsonl:9"]
    prepare.record_late_rejects(run, "render", [])  # the rows render now: the accounting goes back
    got = json.loads(run.data_summary.read_text(encoding="utf-8"))
    assert got == summary
    assert [r["origin"] for r in prepare.rejects_of(run)] == ["faq.jsonl:3"]
