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

SUPPORTED_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv"}


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


def list_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file())
            if not found:
                raise DataPathError(f"data directory {path} holds no {', '.join(sorted(SUPPORTED_SUFFIXES))} files")
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


def read_file(path: Path) -> Iterator[RawRow | Reject]:
    text, bad_lines = _decode(path)
    suffix = path.suffix.lower()
    name = path.name
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
        delimiter = "\t" if suffix == ".tsv" else ","
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield Reject(f"{name}:{start}", "read", "broken_csv", f"{exc}; rows after it were not read", None)
                break  # the csv module cannot resynchronise after a quoting error
            if header is None:
                header = [c.strip() for c in cells]
                continue
            if not any(c.strip() for c in cells):
                continue
            origin = f"{name}:{start}"
            if any(start <= n <= reader.line_num for n in bad_lines):
                yield Reject(origin, "read", "invalid_utf8", "the row holds bytes that are not valid UTF-8", cells)
                continue
            if len(cells) != len(header):
                yield Reject(
                    origin, "read", "wrong_column_count", f"expected {len(header)} columns, got {len(cells)}", cells
                )
                continue
            yield RawRow(origin, dict(zip(header, cells)))


def read_rows(paths: list[str | Path]) -> Iterator[RawRow | Reject]:
    for path in list_files(paths):
        yield from read_file(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
