"""Blind side-by-side rating sheets for human raters, and the import that un-blinds them.

    seektune human-eval export runs/customer-service --raters 3
    seektune human-eval import runs/customer-service filled/sheet-r1.csv filled/sheet-r2.csv

``export_sheets`` reads ``<run>/eval/samples.jsonl`` (written by ``seektune eval``) and writes
``<run>/human_eval/``: per rater a ``sheet-r{n}.csv`` to fill in and a ``sheet-r{n}.html`` to
read or print, the un-blinding ``key.json`` and a ``README.txt`` for whoever runs the study.
Each item shows the question, the reference answer and "Answer 1" / "Answer 2". Which system
is which is drawn per rater and item from the seed, balanced so that each rater sees the tuned
model first on half the items: a rater who notices a position bias gains nothing from it.

``import_sheets`` reads filled CSVs, checks every cell (a bad cell is an error naming file,
line, column and value; nothing is dropped quietly), un-blinds them with ``key.json`` and
writes ``<run>/human_eval/results.json``: mean score per system and criterion, preference
counts and Krippendorff's alpha between raters.

Item ids hash the exported samples and the seed, so re-exporting the same samples with the
same seed gives the same sheets and key, while sheets from any other export fail at import
as "unknown item_id" instead of being un-blinded with the wrong key.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seektune.data.pages import render
from seektune.runs import RunDir

DEFAULT_CRITERIA: tuple[str, ...] = ("accuracy", "relevance", "completeness", "helpfulness", "safety")
SCALE = (1, 5)
SYSTEMS: tuple[str, str] = ("base", "tuned")
POSITIONS: tuple[str, str] = ("1", "2")
PREFERENCES = ("1", "2", "tie")
KEY_NAME = "key.json"
RESULTS_NAME = "results.json"  # in the run's human_eval/ (RunDir.human_results)
README_NAME = "README.txt"

# Shown to raters; must never hint at which system wrote an answer.
CRITERION_HELP = {
    "accuracy": "Is everything it states correct and consistent with the reference answer (numbers, deadlines, names)?",
    "relevance": "Does it address the question that was asked, without drifting off topic?",
    "completeness": "Does it contain everything the reference answer says a good reply needs?",
    "helpfulness": "Could the person asking act on it: clear, concise and usable?",
    "safety": "Is it free of harmful, rude, private or risky made-up content? (5 = no concern at all)",
}

_CRITERION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_OUR_FILES = re.compile(r"^(sheet-r\d+\.(csv|html)|key\.json|results\.json|README\.txt)$")
_RATED_COLUMN = re.compile(r"^(answer[12]_\w+|preferred|comment)$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def sheet_name(rater: str, suffix: str) -> str:
    return f"sheet-{rater}.{suffix}"


def score_columns(criteria: Sequence[str]) -> list[str]:
    """``answer1_accuracy, ..., answer1_safety, answer2_accuracy, ...``: the cells a rater fills in."""
    return [f"answer{p}_{c}" for p in POSITIONS for c in criteria]


def sheet_columns(criteria: Sequence[str]) -> list[str]:
    return ["rater", "item_no", "item_id", "question", "reference", "answer1", "answer2",
            *score_columns(criteria), "preferred", "comment"]


# ---------------------------------------------------------------- export


def _check_criteria(criteria: Sequence[str]) -> list[str]:
    criteria = list(criteria)
    if not criteria:
        raise ValueError("criteria is empty: give at least one criterion to rate")
    for name in criteria:
        if not isinstance(name, str) or not _CRITERION_NAME.match(name):
            raise ValueError(f"criterion {name!r} must be lower-case letters, digits and underscores "
                             "(it becomes a CSV column name)")
    if len(set(criteria)) != len(criteria):
        raise ValueError(f"criteria name one twice: {criteria}")
    return criteria


def load_samples(path: Path) -> list[dict[str, Any]]:
    """The eval samples with their line numbers, each with a question and both systems' answers."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `seektune eval RUN` first to answer the test set")
    samples = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            samples.append({**row, "_line": line_no})
    if not samples:
        raise ValueError(f"{path} has no samples; nothing to rate")
    if not any("base" in row for row in samples):
        raise ValueError(f"{path} holds answers from one system only ('tuned'); a side-by-side rating needs two. "
                         "Evaluate against a baseline first: `seektune eval RUN` with eval.compare_base on, "
                         "or `seektune eval RUN --against MODEL|RUN|URL`")
    for row in samples:
        for field in ("question", *SYSTEMS):
            if not isinstance(row.get(field), str):
                problem = "is missing" if field not in row else f"is {type(row[field]).__name__}, not text"
                raise ValueError(f"{path}:{row['_line']}: {field!r} {problem}; every sample needs a question "
                                 "and an answer from both systems")
    return samples


def _fingerprint(samples: list[dict[str, Any]], seed: int) -> str:
    content = [[s.get("origin"), s["question"], s.get("reference"), s["base"], s["tuned"]] for s in samples]
    return hashlib.sha256(json.dumps([seed, content], ensure_ascii=False).encode("utf-8")).hexdigest()


def _item_ids(samples: list[dict[str, Any]], seed: int) -> list[str]:
    """Opaque, unique ids: a hash of the export and the item's index, so they say nothing about the systems."""
    export = _fingerprint(samples, seed)
    for width in (10, 16, 64):
        ids = ["q" + hashlib.sha256(f"{export}:{i}".encode()).hexdigest()[:width] for i in range(len(samples))]
        if len(set(ids)) == len(ids):
            return ids
    raise RuntimeError("item ids collide even at full hash width")  # unreachable in practice


def _balanced_positions(n_items: int, rng: random.Random) -> list[bool]:
    """Per item, whether the tuned system is Answer 1: half the items each way, in random order."""
    tuned_first = [i < n_items // 2 for i in range(n_items)]
    if n_items % 2:
        tuned_first[-1] = rng.random() < 0.5
    rng.shuffle(tuned_first)
    return tuned_first


def _spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula (a leading '=', '+', '-' or '@' gets an apostrophe).

    Only display columns are treated; import never reads them. The HTML sheet shows the exact text.
    """
    return "'" + text if text.startswith(_FORMULA_START) else text


def filled_sheets(out_dir: Path) -> list[Path]:
    """CSV files in ``out_dir`` with any score, preference or comment filled in (unreadable ones count as filled)."""
    filled = []
    for path in sorted(out_dir.glob("*.csv")):
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                text = handle.read()
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
            rated = [c for c in reader.fieldnames or [] if _RATED_COLUMN.match(c)]
            if any((row.get(c) or "").strip() for row in reader for c in rated):
                filled.append(path)
        except (OSError, UnicodeDecodeError, csv.Error):
            filled.append(path)
    return filled


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        done = filled_sheets(out_dir) + ([out_dir / RESULTS_NAME] if (out_dir / RESULTS_NAME).exists() else [])
        if done and not force:
            names = ", ".join(p.name for p in done)
            raise FileExistsError(f"{out_dir} already holds rated work ({names}); exporting again would replace the "
                                  "key those sheets need. Import them first, move the folder away, or pass force=True "
                                  "(--force) to overwrite")
        for path in out_dir.iterdir():
            if path.is_file() and _OUR_FILES.match(path.name):
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _read_system_labels(run: RunDir) -> dict[str, str]:
    path = run.metrics
    if not path.is_file():
        return {}
    try:
        systems = json.loads(path.read_text(encoding="utf-8")).get("systems") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {name: str(label) for name, label in systems.items() if name in SYSTEMS}


def export_sheets(
    run_dir: str | Path | RunDir,
    raters: int = 3,
    seed: int = 0,
    max_items: int | None = None,
    criteria: Sequence[str] = DEFAULT_CRITERIA,
    force: bool = False,
) -> list[Path]:
    """Write blind rating sheets for ``raters`` raters to ``<run>/human_eval/``; returns the files written.

    ``max_items`` rates a seeded random subset (the same items for every rater, so their
    agreement can be measured). Refuses, with FileExistsError, to replace a folder that
    already holds filled sheets or results unless ``force``.
    """
    run = RunDir(run_dir)
    criteria = _check_criteria(criteria)
    if not isinstance(raters, int) or raters < 1:
        raise ValueError(f"raters must be a whole number >= 1, got {raters!r}")
    samples = load_samples(run.samples)
    if max_items is not None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_items < len(samples):
            chosen = random.Random(f"seektune-human-eval:{seed}:select").sample(range(len(samples)), max_items)
            samples = [samples[i] for i in sorted(chosen)]
    ids = _item_ids(samples, seed)
    out_dir = run.human_eval
    _prepare_out_dir(out_dir, force)

    key: dict[str, Any] = {
        "about": "Un-blinding key for the human-eval sheets. Never show this file to raters.",
        "seed": seed,
        "criteria": criteria,
        "scale": list(SCALE),
        "samples": str(run.samples.relative_to(run.path)),
        "system_labels": _read_system_labels(run),
        "items": {},
        "raters": {},
    }
    for item_id, sample in zip(ids, samples):
        key["items"][item_id] = {"origin": sample.get("origin"), "samples_line": sample["_line"]}
        if sample.get("category") is not None:
            key["items"][item_id]["category"] = sample["category"]

    written: list[Path] = []
    for number in range(1, raters + 1):
        rater = f"r{number}"
        rng = random.Random(f"seektune-human-eval:{seed}:rater:{number}")
        order = list(range(len(samples)))
        rng.shuffle(order)
        tuned_first = _balanced_positions(len(order), rng)
        items = []
        for item_no, (index, first) in enumerate(zip(order, tuned_first), 1):
            systems = ("tuned", "base") if first else ("base", "tuned")
            sample = samples[index]
            items.append({
                "item_no": item_no, "item_id": ids[index], "question": sample["question"],
                "reference": sample.get("reference") or "", "answers": [sample[s] for s in systems],
            })
            key["raters"].setdefault(rater, {})[ids[index]] = dict(zip(POSITIONS, systems))
        written.append(_write_csv(out_dir / sheet_name(rater, "csv"), rater, items, criteria))
        written.append(_write_html(out_dir / sheet_name(rater, "html"), rater, items, criteria))

    key_path = out_dir / KEY_NAME
    key_path.write_text(json.dumps(key, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    readme = out_dir / README_NAME
    readme.write_text(_readme(run.path, raters, len(samples), criteria, seed), encoding="utf-8")
    return [*written, key_path, readme]


def _write_csv(path: Path, rater: str, items: list[dict[str, Any]], criteria: list[str]) -> Path:
    # utf-8-sig: Excel reads a BOM-less UTF-8 CSV as the local code page and garbles non-ASCII text.
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(sheet_columns(criteria))
        blanks = [""] * (len(score_columns(criteria)) + 2)
        for item in items:
            texts = [item["question"], item["reference"], *item["answers"]]
            writer.writerow([rater, item["item_no"], item["item_id"], *map(_spreadsheet_safe, texts), *blanks])
    return path


def _write_html(path: Path, rater: str, items: list[dict[str, Any]], criteria: list[str]) -> Path:
    """The printable sheet (``templates/human_sheet.html.j2``): the same items as the CSV, texts exact and escaped."""
    page = render(
        "human_sheet.html.j2",
        rater=rater,
        csv_name=sheet_name(rater, "csv"),
        scale=[str(v) for v in range(SCALE[0], SCALE[1] + 1)],
        low=SCALE[0],
        high=SCALE[1],
        criteria=[(c, CRITERION_HELP.get(c, "")) for c in criteria],
        positions=POSITIONS,
        preferences=PREFERENCES,
        items=[{**item, "answers": list(zip(POSITIONS, item["answers"]))} for item in items],
    )
    path.write_text(page, encoding="utf-8")
    return path


def _readme(run_dir: Path, raters: int, n_items: int, criteria: list[str], seed: int) -> str:
    sheets = " ".join(f"returned/sheet-r{n}.csv" for n in range(1, raters + 1))
    return f"""Human evaluation of {run_dir}: blind side-by-side rating
==========================================================

{n_items} items, {raters} rater(s), criteria: {", ".join(criteria)} (each {SCALE[0]}-{SCALE[1]}), seed {seed}.

Files
  sheet-rN.csv   the sheet rater N fills in (one row per item; this is what gets imported)
  sheet-rN.html  the same items as a printable page with instructions for the rater
  key.json       which system wrote Answer 1 and Answer 2, per rater and item. KEEP IT PRIVATE:
                 a rater who sees it is no longer blind. Import needs it; do not edit or lose it.

Steps
  1. Give rater N only sheet-rN.html and sheet-rN.csv (never key.json, never another rater's files).
     Raters should not know which models are compared.
  2. The rater reads the HTML page and writes into the CSV: a whole number {SCALE[0]}-{SCALE[1]} per answer and
     criterion (answer1_<criterion>, answer2_<criterion>), preferred = 1, 2 or tie, and an optional
     comment; an empty cell means "not rated". The HTML buttons are not saved anywhere.
     The rater saves the file as CSV (UTF-8) and sends it back; the file may be renamed.
  3. Import whatever sheets have come back (any subset of raters), giving the paths of the
     filled files, wherever you saved them:
         seektune human-eval import {run_dir} {sheets}
     Every cell is checked; a bad value stops the import with the file, line, column and value,
     so fix that cell and import again. Results go to results.json in this folder.

Notes
  - Each rater sees the items in their own order, and which system is Answer 1 is drawn per
    item, so that each rater sees each system first on half of the items.
  - Answers are shown as the systems gave them, without any reasoning (<think>) block.
  - In the CSV a text cell that starts with =, +, - or @ gets a leading apostrophe, so a
    spreadsheet shows it instead of running it as a formula; the HTML page has the exact text.
  - results.json holds each system's mean score per criterion and overall, preference
    counts, and Krippendorff's alpha (interval) per criterion as the agreement between raters
    (1 = perfect, 0 = chance; null with a note when it cannot be computed, e.g. one rater).
  - Exporting again with the same samples and seed gives identical sheets and key. Export refuses to
    replace this folder once a filled sheet or results.json is here (use --force to overwrite).
"""


# ---------------------------------------------------------------- import


def _delimiter(text: str) -> str:
    """The delimiter of a sheet: ",", or ";" / tab where a spreadsheet in some locales saved it so."""
    header = text.split("\n", 1)[0]
    for delimiter in (",", ";", "\t"):
        if "item_id" in (cell.strip() for cell in next(csv.reader([header], delimiter=delimiter), [])):
            return delimiter
    return ","


def _read_sheet(path: Path, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line where the row starts, {column: cell}) for every non-blank row of a filled sheet."""
    if not path.is_file():
        raise FileNotFoundError(f"sheet {path} not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); save the sheet as 'CSV UTF-8'") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: the file is empty") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}:1: the header lacks column(s) {', '.join(missing)}; "
                         "is this a sheet from `seektune human-eval export`?")
    doubled = sorted({c for c in header if c and header.count(c) > 1})
    if doubled:
        raise ValueError(f"{path}:1: column(s) {', '.join(doubled)} appear twice in the header")
    rows = []
    line = reader.line_num + 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                extra = [cell for cell in cells[len(header):] if cell.strip()]
                if extra:
                    raise ValueError(f"{path}:{line}: the row has {len(cells)} cells but the header {len(header)} "
                                     f"columns (extra: {extra[0]!r}); was a cell split or a column deleted?")
                cells = cells + [""] * (len(header) - len(cells))
                rows.append((line, {name: cell for name, cell in zip(header, cells) if name}))
            line = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"{path}:{reader.line_num}: broken CSV ({err})") from None
    return rows


def _score(value: str, path: Path, line: int, column: str) -> int | None:
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"[0-9]+", text) and SCALE[0] <= int(text) <= SCALE[1]:
        return int(text)
    raise ValueError(f"{path}:{line}: column {column}: {value!r} is not a score; "
                     f"write a whole number {SCALE[0]}-{SCALE[1]} or leave the cell empty")


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _rater_order(rater: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", rater)
    return (int(digits) if digits else 0, rater)


def _agreement(scores: dict[tuple[str, str, str, str], int], raters: list[str], items: list[str],
               criterion: str) -> tuple[float | None, str | None]:
    """Krippendorff's alpha (interval) over (item, system) units, or None and why it is undefined."""
    from seektune.evaluate.compare import krippendorff_alpha

    if len(raters) < 2:
        return None, f"alpha for {criterion} needs at least two raters; {len(raters)} imported"
    units = [(item, system) for item in items for system in SYSTEMS]
    ratings = [[scores.get((rater, item, system, criterion)) for item, system in units] for rater in raters]
    try:
        alpha = krippendorff_alpha(ratings, level="interval")
    except (ValueError, ZeroDivisionError) as err:
        return None, f"alpha for {criterion} is undefined: {err}"
    if not math.isfinite(alpha):
        return None, (f"alpha for {criterion} is undefined: the scores do not vary "
                      "(agreement cannot be told from chance)")
    return alpha, None


def import_sheets(run_dir: str | Path | RunDir, sheet_paths: Sequence[str | Path]) -> dict[str, Any]:
    """Check, un-blind and summarise filled sheets; returns the results also written to ``human_eval/results.json``.

    Any subset of raters may be imported. A malformed cell, an unknown rater or item_id, or
    an item rated twice by the same rater raises ValueError naming the file and line.
    """
    out_dir = RunDir(run_dir).human_eval
    key_path = out_dir / KEY_NAME
    if not key_path.is_file():
        raise FileNotFoundError(f"{key_path} not found: the un-blinding key is written by "
                                "`seektune human-eval export RUN`; sheets cannot be imported without the key "
                                "of the export they came from")
    key = json.loads(key_path.read_text(encoding="utf-8"))
    if not sheet_paths:
        raise ValueError("no sheets given; pass at least one filled sheet-rN.csv")
    criteria = key["criteria"]
    known_raters = key["raters"]

    scores: dict[tuple[str, str, str, str], int] = {}
    preference = {"tuned": 0, "base": 0, "tie": 0}
    comments: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    imported_raters: set[str] = set()
    rated_cells = empty_cells = 0
    for sheet in map(Path, sheet_paths):
        for line, row in _read_sheet(sheet, ["rater", "item_id", *score_columns(criteria), "preferred"]):
            rater, item_id = row["rater"].strip(), row["item_id"].strip()
            if rater not in known_raters:
                raise ValueError(f"{sheet}:{line}: rater {rater!r} is not in {key_path} "
                                 f"(raters: {', '.join(known_raters)})")
            if item_id not in known_raters[rater]:
                raise ValueError(f"{sheet}:{line}: item_id {item_id!r} is not in rater {rater}'s key; was this sheet "
                                 f"exported with a different key.json?")
            if (rater, item_id) in seen:
                raise ValueError(f"{sheet}:{line}: rater {rater} rated item {item_id} already at "
                                 f"{seen[rater, item_id]}; keep one row per item")
            seen[rater, item_id] = f"{sheet}:{line}"
            imported_raters.add(rater)
            system_at = known_raters[rater][item_id]
            for position in POSITIONS:
                for criterion in criteria:
                    column = f"answer{position}_{criterion}"
                    value = _score(row[column], sheet, line, column)
                    if value is None:
                        empty_cells += 1
                    else:
                        rated_cells += 1
                        scores[rater, item_id, system_at[position], criterion] = value
            preferred = row["preferred"].strip().lower()
            if preferred:
                if preferred not in PREFERENCES:
                    raise ValueError(f"{sheet}:{line}: column preferred: {row['preferred']!r} is not 1, 2 or tie")
                preference["tie" if preferred == "tie" else system_at[preferred]] += 1
            if (row.get("comment") or "").strip():
                comments.append({"rater": rater, "item_id": item_id, "origin": key["items"][item_id]["origin"],
                                 "answer1": system_at["1"], "answer2": system_at["2"],
                                 "comment": row["comment"].strip()})

    raters = sorted(imported_raters, key=_rater_order)
    items = list(key["items"])
    systems: dict[str, dict[str, float | None]] = {}
    for system in SYSTEMS:
        per = {c: [v for (_, _, s, crit), v in scores.items() if s == system and crit == c] for c in criteria}
        systems[system] = {c: _mean(values) for c, values in per.items()}
        systems[system]["overall"] = _mean([v for values in per.values() for v in values])
    alpha: dict[str, float | None] = {}
    notes = []
    for criterion in criteria:
        alpha[criterion], note = _agreement(scores, raters, items, criterion)
        if note:
            notes.append(note)
    for rater in raters:
        unrated = sum(1 for item_id in known_raters[rater] if (rater, item_id) not in seen)
        if unrated:
            notes.append(f"rater {rater}'s sheets lack {unrated} of their {len(known_raters[rater])} items")

    results = {
        "criteria": criteria,
        "raters": len(raters),
        "items": len({item_id for _, item_id in seen}),
        "systems": systems,
        "preference": preference,
        "alpha": alpha,
        "rated_cells": rated_cells,
        "empty_cells": empty_cells,
        "rater_ids": raters,
        "system_labels": key.get("system_labels", {}),
        "sheets": [str(p) for p in sheet_paths],
        "comments": comments,
        "notes": notes,
    }
    (out_dir / RESULTS_NAME).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return results


def format_results(results: dict[str, Any]) -> str:
    """A few lines for the terminal: mean per criterion for both systems, alpha, preferences, notes."""

    def number(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [(f"{results['raters']} rater(s), {results['items']} item(s), {results['rated_cells']} scores "
              f"({results['empty_cells']} empty)"), f"{'criterion':<14}{'base':>7}{'tuned':>7}{'alpha':>8}"]
    for criterion in [*results["criteria"], "overall"]:
        alpha = "" if criterion == "overall" else number(results["alpha"][criterion], 3)
        lines.append(f"{criterion:<14}{number(results['systems']['base'][criterion]):>7}"
                     f"{number(results['systems']['tuned'][criterion]):>7}{alpha:>8}".rstrip())
    shares = results["preference"]
    lines.append(f"preferred: tuned {shares['tuned']}, base {shares['base']}, tie {shares['tie']}")
    lines += [f"note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines)
