"""JSON-lines reading that names the file and line of every problem.

`json.loads` on a bad line says "Expecting value: line 1 column 1"; users need "corpus.jsonl line 812".
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from elasticir.errors import InputFormatError


def open_text(path: Path):
    """Open a plain or gzipped text file (by suffix) for reading as UTF-8; a leading byte-order mark (common
    in files saved on Windows) is skipped rather than taken for the first character of the first line."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line; raise naming file and line on a bad one."""
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFormatError(
                        f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        "each line must be one JSON object - fix or remove that line"
                    ) from None
                if not isinstance(row, dict):
                    raise InputFormatError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
                missing = [key for key in required if key not in row]
                if missing:
                    raise InputFormatError(
                        f"{path} line {number}: missing field(s) {', '.join(missing)}; "
                        f"every line needs {', '.join(required)}"
                    )
                yield number, row
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputFormatError(f"{path}: file not found") from None
        raise InputFormatError(f"{path}: cannot be read as (gzipped) UTF-8 JSON lines: {exc}") from None
