"""Read JSONL / JSON / CSV / TSV files (or directories of them) row by row, keeping each row's origin.

A row that cannot be read (bad JSON, broken CSV, not an object) becomes a reject
``{"origin", "step": "read", "reason", "detail", "row"}`` instead of stopping the run, so
the valid rows around it are unaffected and the user is told exactly where to look.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seektune.docs import DOCUMENT_SUFFIXES, DocumentError
from seektune.docs import read_document as read_sections

TABLE_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}
REVIEW_SUFFIXES = {".sqlite", ".sqlite3"}  # a review store (seektune/data/review.py): its accepted and edited pairs
SUPPORTED_SUFFIXES = TABLE_SUFFIXES | DOCUMENT_SUFFIXES | REVIEW_SUFFIXES


@dataclass
class RawRow:
    origin: str  # "file:line" for JSONL/CSV, "file:#index" for JSON arrays
    data: dict[str, Any]


@dataclass
class Reject:
    origin: str
    step: str
    reason: str
    detail: str
    row: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "step": self.step, "reason": self.reason, "detail": self.detail, "row": self.row}


class DataPathError(FileNotFoundError):
    """A data path that does not exist or holds nothing readable."""


def _walk(directory: Path) -> list[Path]:
    """Supported files under a directory; a saved HF dataset inside it counts as one source."""
    if is_saved_dataset(directory):
        return [directory]
    found: list[Path] = []
    for child in sorted(directory.iterdir()):
        if child.is_dir():
            found.extend(_walk(child))
        elif child.suffix.lower() in SUPPORTED_SUFFIXES:
            found.append(child)
    return found


def list_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _walk(path)
            if not found:
                raise DataPathError(
                    f"data directory {path} holds no {', '.join(sorted(SUPPORTED_SUFFIXES))} files or saved datasets"
                )
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise DataPathError(
                    f"data file {path}: unsupported type {path.suffix!r}; use one of {sorted(SUPPORTED_SUFFIXES)}"
                )
            files.append(path)
        else:
            raise DataPathError(f"data path not found: {path}")
    return files


def _lines(text: str) -> list[str]:
    """Split on newlines only: str.splitlines() also splits on U+2028 etc., which JSON strings may hold."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _decode(path: Path) -> tuple[str, set[int]]:
    """Bytes -> text: strips a UTF-8 BOM, reads UTF-16 with a BOM, and returns the numbers of
    lines holding invalid UTF-8 (decoded with U+FFFD) so their rows are reported, not crashed on."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), set()
    text = raw.decode("utf-8-sig", errors="replace")
    bad: set[int] = set()
    if "\ufffd" in text:
        for number, (decoded, original) in enumerate(zip(_lines(text), raw.split(b"\n")), 1):
            if "\ufffd" in decoded and b"\xef\xbf\xbd" not in original:
                bad.add(number)
    return text, bad


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``datasets.Dataset.save_to_disk`` (or a DatasetDict's)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _read_saved_dataset(path: Path) -> Iterator[RawRow | Reject]:
    from datasets import Dataset, DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    for split, dataset in parts:
        assert isinstance(dataset, Dataset)
        prefix = f"{path.name}/{split}" if split else path.name
        for index, row in enumerate(dataset):
            yield RawRow(f"{prefix}:#{index}", dict(row))


def _read_parquet(path: Path) -> Iterator[RawRow | Reject]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield Reject(path.name, "read", "broken_parquet", str(exc), None)
        return
    for index, row in enumerate(table.to_pylist()):
        yield RawRow(f"{path.name}:row{index + 1}", row)


def read_document(path: Path) -> str:
    """Plain text of a document (seektune.docs reads it), each heading path a line above its section's text.

    Raises :class:`seektune.docs.DocumentError` with a reason code (empty, encrypted, image_only, binary,
    invalid_utf8, unreadable, ...) when the document cannot be read.
    """
    return read_sections(path).text_with_headings


def read_file(path: Path) -> Iterator[RawRow | Reject]:
    if path.is_dir():
        yield from _read_saved_dataset(path)
        return
    suffix = path.suffix.lower()
    name = path.name
    if suffix == ".parquet":
        yield from _read_parquet(path)
        return
    if suffix in REVIEW_SUFFIXES:
        from seektune.data.review import training_rows

        try:
            for origin, row in training_rows(path):
                yield RawRow(origin, row)
        except Exception as exc:  # noqa: BLE001 - not a review store, or a damaged one: say so, read the rest
            yield Reject(name, "read", "unreadable_review_store", f"{type(exc).__name__}: {exc}", None)
        return
    if suffix in DOCUMENT_SUFFIXES:
        try:
            text = read_document(path)
        except DocumentError as err:  # a damaged, empty or scanned document must not stop the other files
            yield Reject(name, "read", err.reason, err.detail, None)
            return
        yield RawRow(name, {"text": text, "document": True})
        return
    text, bad_lines = _decode(path)
    if suffix == ".jsonl":
        for number, line in enumerate(_lines(text), 1):
            origin = f"{name}:{number}"
            if number in bad_lines:
                yield Reject(origin, "read", "invalid_utf8", "the line holds bytes that are not valid UTF-8", line)
                continue
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Reject(origin, "read", "invalid_json", f"{exc.msg} at column {exc.colno}", line)
                continue
            if not isinstance(data, dict):
                yield Reject(origin, "read", "not_an_object", f"expected a JSON object, got {type(data).__name__}", data)
                continue
            yield RawRow(origin, data)
    elif suffix == ".json":
        if bad_lines:
            yield Reject(f"{name}:{min(bad_lines)}", "read", "invalid_utf8", "the file holds invalid UTF-8", None)
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Reject(f"{name}:{exc.lineno}", "read", "invalid_json", exc.msg, None)
            return
        items = data if isinstance(data, list) else None
        if isinstance(data, dict):  # an object of arrays, e.g. {"train": [...]}
            items = [row for value in data.values() if isinstance(value, list) for row in value]
        if items is None:
            yield Reject(f"{name}", "read", "not_an_array", "a .json file must hold an array of rows", None)
            return
        for index, row in enumerate(items):
            origin = f"{name}:#{index}"
            if isinstance(row, dict):
                yield RawRow(origin, row)
            else:
                yield Reject(origin, "read", "not_an_object", f"expected a JSON object, got {type(row).__name__}", row)
    else:
        yield from _read_csv(text, name, "\t" if suffix == ".tsv" else ",", bad_lines)


def _read_csv(text: str, name: str, delimiter: str, bad_lines: set[int]) -> Iterator[RawRow | Reject]:
    """CSV/TSV rows with the line each starts on. A quoting error rejects that row and reading
    resumes on the next line, so one broken quote does not swallow the rest of the file."""
    lines = text.split("\n")
    header: list[str] | None = None
    offset = 0  # physical line index where the current reader starts
    while offset < len(lines):
        reader = csv.reader(io.StringIO("\n".join(lines[offset:]), newline=""), delimiter=delimiter, strict=True)
        while True:
            start = offset + reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raw = lines[start - 1] if start - 1 < len(lines) else ""
                yield Reject(f"{name}:{start}", "read", "broken_csv", f"CSV quoting error: {exc}", raw)
                offset = start  # resume on the line after the broken row's first line
                break
            if header is None:
                header = [c.strip().lstrip("\ufeff") for c in cells]
                continue
            if not any(c.strip() for c in cells):
                continue
            origin = f"{name}:{start}"
            if any(start <= n <= offset + reader.line_num for n in bad_lines):
                yield Reject(origin, "read", "invalid_utf8", "the row holds bytes that are not valid UTF-8", cells)
                continue
            if len(cells) != len(header):
                yield Reject(
                    origin, "read", "wrong_column_count", f"expected {len(header)} columns, got {len(cells)}", cells
                )
                continue
            yield RawRow(origin, {key: value.removesuffix("\r") for key, value in zip(header, cells)})
        else:
            return


def read_rows(paths: list[str | Path]) -> Iterator[RawRow | Reject]:
    for path in list_files(paths):
        yield from read_file(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSONL file that seektune wrote (splits, samples, caches); a bad line raises naming file:line."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
    return rows
