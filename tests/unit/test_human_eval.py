"""Blind human-eval sheets: export, blinding, HTML safety, import, un-blinding and agreement."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from seektune.evaluate.human import DEFAULT_CRITERIA, export_sheets, import_sheets, score_columns, sheet_columns
from tests.unit.test_report import assert_self_contained

# Texts avoid the words the blinding test looks for, so any hit would come from the sheet itself.
SAMPLES = [
    {"origin": "faq_en.jsonl:1", "question": "How long do refunds take?", "reference": "Refunds arrive within 5 days.",
     "facts": ["5 days"], "tuned": "Refunds arrive within 5 days.", "base": "Refunds are instant.",
     "category": "refund"},
    {"origin": "faq_en.jsonl:2", "question": "Can I change my address?", "reference": "Yes, until the order ships.",
     "facts": [], "tuned": "Yes, until the order ships.", "base": '<script>alert("pwned")</script> & more'},
    {"origin": "faq_en.jsonl:3", "question": "Do you ship abroad?", "reference": "We ship to 40 countries.",
     "facts": ["40"], "tuned": "We ship to 40 countries.\nDuties are paid on delivery.", "base": "No."},
    {"origin": "faq_zh.jsonl:4", "question": "退货要多久？", "reference": "退款在5天内到账。",
     "facts": ["5天"], "tuned": "退款在5天内到账。", "base": "我不知道。"},
    {"origin": "faq_en.jsonl:5", "question": "Is gift wrap free?", "reference": "Gift wrap costs $3.",
     "facts": ["$3"], "tuned": "- Gift wrap costs $3.\n- Pick it at checkout.", "base": "=1+1"},
    {"origin": "faq_en.jsonl:6", "question": "Opening hours?", "reference": "9 to 5 on weekdays.",
     "facts": [], "tuned": "9 to 5 on weekdays.", "base": "Always open, day and night."},
]
LABELS = {"base": "ModelAlpha-7b-chat", "tuned": "ModelOmega-ft"}


def make_run(root: Path, samples=SAMPLES, labels=LABELS) -> Path:
    run = root / "run"
    (run / "eval").mkdir(parents=True)
    with (run / "eval" / "samples.jsonl").open("w", encoding="utf-8") as handle:
        for row in samples:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if labels is not None:
        (run / "eval" / "metrics.json").write_text(json.dumps({"systems": labels}), encoding="utf-8")
    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def load_key(run: Path) -> dict:
    return json.loads((run / "human_eval" / "key.json").read_text(encoding="utf-8"))


def fill(path: Path, key: dict, score, preferred=lambda rater, item_id, at: "", delimiter=",") -> None:
    """Fill a sheet as a rater would: ``score(rater, item_id, system, criterion)`` -> int or None."""
    rows = read_csv(path)
    for row in rows:
        at = key["raters"][row["rater"]][row["item_id"]]
        for position in "12":
            for criterion in key["criteria"]:
                value = score(row["rater"], row["item_id"], at[position], criterion)
                row[f"answer{position}_{criterion}"] = "" if value is None else str(value)
        row["preferred"] = preferred(row["rater"], row["item_id"], at)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def set_cell(path: Path, item_no: int, column: str, value: str) -> int:
    """Put ``value`` into one cell; returns the line where that item's row starts."""
    rows = read_csv(path)
    for row in rows:
        if row["item_no"] == str(item_no):
            row[column] = value
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(f"r1,{item_no},"))


@pytest.fixture
def exported(tmp_path):
    run = make_run(tmp_path)
    files = export_sheets(run, raters=3, seed=0)
    return run, files


# ---------------------------------------------------------------- export


def test_export_writes_sheets_key_and_readme(exported):
    run, files = exported
    out = run / "human_eval"
    names = [p.name for p in files]
    assert names == ["sheet-r1.csv", "sheet-r1.html", "sheet-r2.csv", "sheet-r2.html", "sheet-r3.csv",
                     "sheet-r3.html", "key.json", "README.txt"]
    assert all(p.is_file() and p.parent == out for p in files)
    key = load_key(run)
    assert key["criteria"] == list(DEFAULT_CRITERIA)
    assert key["system_labels"] == LABELS
    assert [item["origin"] for item in key["items"].values()] == [s["origin"] for s in SAMPLES]
    for rater in ("r1", "r2", "r3"):
        rows = read_csv(out / f"sheet-{rater}.csv")
        assert list(rows[0]) == sheet_columns(DEFAULT_CRITERIA)
        assert list(rows[0])[7:10] == ["answer1_accuracy", "answer1_relevance", "answer1_completeness"]
        assert list(rows[0])[-3:] == ["answer2_safety", "preferred", "comment"]
        assert {row["rater"] for row in rows} == {rater}
        assert [row["item_no"] for row in rows] == [str(i) for i in range(1, 7)]
        assert sorted(row["item_id"] for row in rows) == sorted(key["items"])
        scored = [c for c in rows[0] if c.startswith(("answer1_", "answer2_"))] + ["preferred", "comment"]
        assert all(row[c] == "" for row in rows for c in scored)
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "seektune human-eval import" in readme and "key.json" in readme


def test_blinding_key_matches_sheets_and_positions_are_mixed(exported):
    run, _ = exported
    key = load_key(run)
    by_question = {s["question"]: s for s in SAMPLES}
    orders = []
    for rater, assignment in key["raters"].items():
        assert set(assignment) == set(key["items"])
        for positions in assignment.values():
            assert sorted(positions.values()) == ["base", "tuned"]  # each system exactly once
        # balanced: the tuned system is Answer 1 on exactly half of each rater's items
        assert sum(positions["1"] == "tuned" for positions in assignment.values()) == 3
        rows = read_csv(run / "human_eval" / f"sheet-{rater}.csv")
        orders.append([row["item_id"] for row in rows])
        for row in rows:  # the text shown as Answer 1/2 is the system the key names
            sample = by_question[row["question"]]
            for position in "12":
                shown = row[f"answer{position}"]
                assert shown.lstrip("'") == sample[assignment[row["item_id"]][position]]
    assert len({tuple(order) for order in orders}) == 3  # each rater sees their own item order
    assignments = [tuple(key["raters"][r][i]["1"] for i in key["items"]) for r in key["raters"]]
    assert len(set(assignments)) > 1  # and, for some item, a different answer first
    # nor does the first answer follow a pattern down the sheet that raters share
    in_sheet_order = [tuple(key["raters"][r][i]["1"] for i in order) for r, order in zip(key["raters"], orders)]
    assert len(set(in_sheet_order)) > 1


def test_sheets_never_name_the_systems(exported):
    run, _ = exported
    for path in sorted((run / "human_eval").glob("sheet-*")):
        text = path.read_text(encoding="utf-8-sig").lower()
        for word in ("base", "tuned", *(label.lower() for label in LABELS.values())):
            assert word not in text, f"{path.name} contains {word!r}"


def test_html_is_escaped_self_contained_and_points_to_the_csv(exported):
    run, _ = exported
    doc = assert_self_contained((run / "human_eval" / "sheet-r2.html").read_text(encoding="utf-8"))
    instructions = doc.find_all("div", cls="instructions")[0].text
    assert "Record your ratings in the file sheet-r2.csv: only that CSV file is collected." in instructions
    assert [row[0] for row in doc.find_all("table")[0].table()[1:]] == list(DEFAULT_CRITERIA)

    # The page shows the CSV's items in the CSV's order, with the exact texts (no spreadsheet guard).
    items = doc.find_all("section", cls="item")
    rows = read_csv(run / "human_eval" / "sheet-r2.csv")
    assert len(items) == len(rows) == 6
    for item, row in zip(items, rows):
        assert item.find_all("h2")[0].text.startswith(f"Item {row['item_no']}")
        assert item.find_all("span", cls="item-id")[0].text == f"item_id {row['item_id']}"
        question, reference, *answers = [p.raw_text for p in item.find_all("p", cls="text")]
        assert [question, reference] == [row["question"], row["reference"]]
        sample = next(s for s in SAMPLES if s["question"] == question)
        assert sorted(answers) == sorted([sample["base"], sample["tuned"]])
        assert [a.lstrip("'") for a in (row["answer1"], row["answer2"])] == answers
        # The buttons mirror the CSV's columns: a 1-5 choice per answer and criterion, then the preference.
        names = {(i.attrs["name"], i.attrs["value"]) for i in item.find_all("input")}
        expected = {(f"{row['item_id']}-{column}", str(v)) for column in score_columns(DEFAULT_CRITERIA)
                    for v in range(1, 6)}
        assert names == expected | {(f"{row['item_id']}-preferred", v) for v in ("1", "2", "tie")}
    shown = {p.raw_text for p in doc.find_all("p", cls="text")}
    assert '<script>alert("pwned")</script> & more' in shown  # model output is text on the page, never markup
    assert "退款在5天内到账。" in shown
    assert "- Gift wrap costs $3.\n- Pick it at checkout." in shown and "=1+1" in shown


def test_csv_text_that_looks_like_a_formula_is_guarded(exported):
    run, _ = exported
    rows = read_csv(run / "human_eval" / "sheet-r1.csv")
    gift = next(row for row in rows if row["question"] == "Is gift wrap free?")
    assert {gift["answer1"], gift["answer2"]} == {"'=1+1", "'- Gift wrap costs $3.\n- Pick it at checkout."}


def test_export_is_reproducible_and_the_seed_matters(tmp_path):
    run = make_run(tmp_path)
    export_sheets(run, raters=2, seed=5)
    first = {p.name: p.read_bytes() for p in (run / "human_eval").iterdir()}
    export_sheets(run, raters=2, seed=5)  # unfilled sheets may be replaced
    assert {p.name: p.read_bytes() for p in (run / "human_eval").iterdir()} == first
    export_sheets(run, raters=2, seed=6)
    assert set(load_key(run)["items"]).isdisjoint(json.loads(first["key.json"])["items"])


def test_max_items_picks_the_same_subset_for_every_rater(tmp_path):
    run = make_run(tmp_path)
    export_sheets(run, raters=2, max_items=4)
    key = load_key(run)
    assert len(key["items"]) == 4
    assert all(set(assignment) == set(key["items"]) for assignment in key["raters"].values())
    assert len(read_csv(run / "human_eval" / "sheet-r2.csv")) == 4


def test_export_needs_two_systems(tmp_path):
    run = make_run(tmp_path, [{k: v for k, v in s.items() if k != "base"} for s in SAMPLES])
    with pytest.raises(ValueError, match="needs two"):
        export_sheets(run)
    assert not (run / "human_eval").exists()


def test_export_names_the_line_of_a_sample_without_an_answer(tmp_path):
    samples = [dict(s) for s in SAMPLES]
    del samples[3]["base"]
    with pytest.raises(ValueError, match=r"samples\.jsonl:4: 'base' is missing"):
        export_sheets(make_run(tmp_path, samples))


def test_export_rejects_bad_arguments(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match="raters"):
        export_sheets(run, raters=0)
    with pytest.raises(ValueError, match="criterion"):
        export_sheets(run, criteria=["Accuracy!"])
    with pytest.raises(FileNotFoundError, match="seektune eval"):
        export_sheets(tmp_path / "nowhere")


def test_export_refuses_to_replace_filled_sheets_unless_forced(exported):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    set_cell(sheet, 2, "answer2_safety", "4")
    with pytest.raises(FileExistsError, match="sheet-r1.csv"):
        export_sheets(run, raters=3, seed=1)
    assert read_csv(sheet)[1]["answer2_safety"] == "4"  # untouched
    export_sheets(run, raters=2, seed=1, force=True)
    assert all(row["answer2_safety"] == "" for row in read_csv(sheet))
    assert not (run / "human_eval" / "sheet-r3.csv").exists()  # the old export's files are gone


# ---------------------------------------------------------------- import


def agreeing_score(rater, item_id, system, criterion):
    """Every rater gives the same score: tuned 4-5, base 1-2, varying by item and criterion."""
    bump = (int(item_id[1:], 16) + DEFAULT_CRITERIA.index(criterion)) % 2
    return 4 + bump if system == "tuned" else 1 + bump


def prefer_tuned(rater, item_id, at):
    return "1" if at["1"] == "tuned" else "2"


def test_import_unblinds_means_preferences_and_high_agreement(exported):
    run, _ = exported
    key = load_key(run)
    sheets = [run / "human_eval" / f"sheet-r{n}.csv" for n in (1, 2, 3)]
    for sheet in sheets:
        fill(sheet, key, agreeing_score, prefer_tuned)
    results = import_sheets(run, sheets)

    expected = {system: {c: np.mean([agreeing_score(r, i, system, c) for r in key["raters"] for i in key["items"]])
                         for c in DEFAULT_CRITERIA} for system in ("base", "tuned")}
    for system in ("base", "tuned"):
        for criterion in DEFAULT_CRITERIA:
            assert results["systems"][system][criterion] == pytest.approx(expected[system][criterion])
        assert results["systems"][system]["overall"] == pytest.approx(np.mean(list(expected[system].values())))
    assert results["systems"]["tuned"]["overall"] > 4 and results["systems"]["base"]["overall"] < 2
    assert results["preference"] == {"tuned": 18, "base": 0, "tie": 0}
    assert results["alpha"] == {c: pytest.approx(1.0) for c in DEFAULT_CRITERIA}
    assert (results["raters"], results["items"]) == (3, 6)
    assert (results["rated_cells"], results["empty_cells"]) == (3 * 6 * 2 * 5, 0)
    assert results["criteria"] == list(DEFAULT_CRITERIA)
    assert results["notes"] == []
    written = json.loads((run / "human_eval" / "results.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(results))


def test_alpha_equals_krippendorff_on_a_hand_built_matrix(exported):
    run, _ = exported
    key = load_key(run)
    items = list(key["items"])
    units = [(item, system) for item in items for system in ("base", "tuned")]
    # two raters who mostly agree, rater 2 skipping two cells
    r1 = [2, 4, 1, 5, 3, 3, 2, 5, 1, 4, 2, 3]
    r2 = [2, 5, 2, 5, None, 3, 1, 4, 1, None, 3, 3]
    table = {"r1": dict(zip(units, r1)), "r2": dict(zip(units, r2))}

    def score(rater, item_id, system, criterion):
        return table[rater][item_id, system] if criterion == "accuracy" else 3

    sheets = [run / "human_eval" / "sheet-r1.csv", run / "human_eval" / "sheet-r2.csv"]
    for sheet in sheets:
        fill(sheet, key, score, lambda *_: "tie")
    results = import_sheets(run, sheets)

    matrix = np.array([r1, [np.nan if v is None else v for v in r2]], dtype=float)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval")
    assert 0.5 < expected < 1
    assert results["alpha"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    # the other criteria are a constant 3 from everyone: alpha is undefined, reported as null with a note
    assert results["alpha"]["safety"] is None
    assert any("safety" in note and "undefined" in note for note in results["notes"])
    base = [v for row in (r1, r2) for v in row[0::2] if v is not None]
    tuned = [v for row in (r1, r2) for v in row[1::2] if v is not None]
    assert base == [2, 1, 3, 2, 1, 2, 2, 2, 1, 1, 3]
    assert results["systems"]["base"]["accuracy"] == pytest.approx(np.mean(base))
    assert results["systems"]["tuned"]["accuracy"] == pytest.approx(np.mean(tuned))
    assert (results["rated_cells"], results["empty_cells"]) == (2 * 6 * 2 * 5 - 2, 2)
    assert results["preference"] == {"tuned": 0, "base": 0, "tie": 12}


def test_random_scores_give_alpha_near_zero(tmp_path):
    samples = [{"origin": f"faq.jsonl:{i}", "question": f"Question {i}?", "reference": f"Reply {i}.",
                "tuned": f"Reply {i}.", "base": f"Other {i}."} for i in range(60)]
    run = make_run(tmp_path, samples, labels=None)
    export_sheets(run, raters=3)
    key = load_key(run)
    rng = random.Random(0)
    draws = {}

    def score(rater, item_id, system, criterion):
        return draws.setdefault((rater, item_id, system, criterion), rng.randint(1, 5))

    sheets = [run / "human_eval" / f"sheet-r{n}.csv" for n in (1, 2, 3)]
    for sheet in sheets:
        fill(sheet, key, score)
    results = import_sheets(run, sheets)
    assert all(abs(alpha) < 0.15 for alpha in results["alpha"].values())
    assert results["systems"]["tuned"]["overall"] == pytest.approx(
        np.mean([v for (_, _, s, _), v in draws.items() if s == "tuned"]))
    assert results["system_labels"] == {}


def test_one_rater_imports_with_alpha_null(exported):
    run, _ = exported
    key = load_key(run)
    sheet = run / "human_eval" / "sheet-r2.csv"
    fill(sheet, key, agreeing_score, prefer_tuned)
    results = import_sheets(run, [sheet])
    assert results["raters"] == 1
    assert results["alpha"] == {c: None for c in DEFAULT_CRITERIA}
    assert any("at least two raters" in note for note in results["notes"])
    assert results["preference"]["tuned"] == 6


def test_a_renamed_semicolon_sheet_with_a_comment_imports(exported, tmp_path):
    run, _ = exported
    key = load_key(run)
    sheet = tmp_path / "anna's ratings.csv"
    sheet.write_bytes((run / "human_eval" / "sheet-r1.csv").read_bytes())
    set_cell(sheet, 1, "comment", "Answer 1 invents a fee")
    fill(sheet, key, agreeing_score, prefer_tuned, delimiter=";")
    results = import_sheets(run, [sheet])
    assert results["rated_cells"] == 60
    [comment] = results["comments"]
    first = read_csv(run / "human_eval" / "sheet-r1.csv")[0]["item_id"]
    assert comment["item_id"] == first and comment["comment"] == "Answer 1 invents a fee"
    assert comment["answer1"] == key["raters"]["r1"][first]["1"]


@pytest.mark.parametrize("bad", ["7", "abc", "0", "4.5", "-3"])
def test_a_bad_score_names_file_line_column_and_value(exported, bad):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    fill(sheet, load_key(run), agreeing_score)
    line = set_cell(sheet, 5, "answer2_completeness", bad)
    with pytest.raises(ValueError, match=rf"sheet-r1\.csv:{line}: column answer2_completeness: '{re.escape(bad)}'"):
        import_sheets(run, [sheet])
    assert not (run / "human_eval" / "results.json").exists()


def test_line_numbers_count_multi_line_cells(exported):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    rows = read_csv(sheet)
    last = len(rows)
    line = set_cell(sheet, last, "answer1_accuracy", "9")
    assert line > last + 1  # the two multi-line answers push the last row down
    with pytest.raises(ValueError, match=rf"sheet-r1\.csv:{line}: column answer1_accuracy: '9'"):
        import_sheets(run, [sheet])


def test_a_bad_preference_is_an_error(exported):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    line = set_cell(sheet, 2, "preferred", "A")
    with pytest.raises(ValueError, match=rf"sheet-r1\.csv:{line}: column preferred: 'A'"):
        import_sheets(run, [sheet])


def test_unknown_item_rater_or_duplicate_rows_are_errors(exported):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    original = sheet.read_bytes()
    line = set_cell(sheet, 3, "item_id", "q0000000000")
    with pytest.raises(ValueError, match=rf"sheet-r1\.csv:{line}: item_id 'q0000000000' is not in rater r1's key"):
        import_sheets(run, [sheet])

    sheet.write_bytes(original)
    rows = read_csv(sheet)
    rows[0]["rater"] = "r9"
    with sheet.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"sheet-r1\.csv:2: rater 'r9' is not in"):
        import_sheets(run, [sheet])

    sheet.write_bytes(original)
    with pytest.raises(ValueError, match=r"sheet-r1\.csv:2: rater r1 rated item q\w+ already at"):
        import_sheets(run, [sheet, sheet])


def test_import_needs_the_key_sheets_and_their_columns(exported, tmp_path):
    run, _ = exported
    sheet = run / "human_eval" / "sheet-r1.csv"
    with pytest.raises(ValueError, match="at least one"):
        import_sheets(run, [])
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        import_sheets(run, [tmp_path / "missing.csv"])
    broken = tmp_path / "broken.csv"
    broken.write_text("rater,item_id,answer1_accuracy\nr1,x,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.csv:1: the header lacks column\(s\) answer1_relevance"):
        import_sheets(run, [broken])
    (run / "human_eval" / "key.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"key\.json not found"):
        import_sheets(run, [sheet])


def test_format_results_shows_means_alpha_and_preferences(exported):
    from seektune.evaluate.human import format_results

    run, _ = exported
    key = load_key(run)
    sheets = [run / "human_eval" / f"sheet-r{n}.csv" for n in (1, 2)]
    for sheet in sheets:
        fill(sheet, key, lambda r, i, system, c: 5 if system == "tuned" else 2, prefer_tuned)
    text = format_results(import_sheets(run, sheets))
    assert text.splitlines() == [
        "2 rater(s), 6 item(s), 120 scores (0 empty)",
        "criterion        base  tuned   alpha",
        *(f"{c:<14}   2.00   5.00   1.000" for c in DEFAULT_CRITERIA),
        "overall          2.00   5.00",
        "preferred: tuned 12, base 0, tie 0",
    ]
    one = format_results(import_sheets(run, sheets[:1]))
    assert "accuracy         2.00   5.00       -" in one and "note: alpha for accuracy needs at least two" in one
