"""JSON-lines reading that names the file and line of every problem.

`json.loads` on a bad line says "Expecting value: line 1 column 1"; users need "corpus.jsonl line 812".
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elasticir.errors import InputFormatError


def open_text(path: Path):
    """Open a plain or gzipped text file (by suffix) for reading as UTF-8; a leading byte-order mark (common
    in files saved on Windows) is skipped rather than taken for the first character of the first line."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _decode(raw: bytes, path: Path, number: int) -> str:
    """One line's bytes as text; a byte that is not UTF-8 is an error naming its line and column (in
    characters, counted from 1), not the byte offset in the whole (decompressed) file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
        raise InputFormatError(
            f"{path} line {number}: byte 0x{raw[exc.start]:02x} at column {column} is not UTF-8 ({exc.reason}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8) or fix that line"
        ) from None


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain or gzipped file read as bytes and decoded line by line, so a decoding
    error can name its line; a leading byte-order mark is dropped. Lines end at "\n" only (as `wc -l` and editors
    count them): text mode's universal newlines would also split at a lone "\r" inside a text and shift every
    later line number and column."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, _decode(raw, path, number)


def parse_line(line: str, path: Path, number: int, required: tuple[str, ...] = ()) -> dict | None:
    """One JSON-lines line as an object (None when blank); raise naming file and line on a bad one."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        column = exc.pos + 1  # in characters of this line (no BOM, no line break), from 1
        raise InputFormatError(
            f"{path} line {number}: not valid JSON at column {column} ({exc.msg}); "
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
    return row


@contextmanager
def _read_errors(path: Path):
    """A file that cannot be opened or decompressed is one error naming it."""
    try:
        yield
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputFormatError(f"{path}: file not found") from None
        raise InputFormatError(f"{path}: cannot be read as (gzipped) UTF-8 JSON lines: {exc}") from None


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line; raise naming file and line on a bad one."""
    with _read_errors(path):
        for number, line in numbered_lines(path):
            row = parse_line(line, path, number, required)
            if row is not None:
                yield number, row


def scan_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, bytes, int, dict]]:
    """Yield (line number, raw bytes, byte offset of the object in the decompressed stream, object) for every
    non-blank line, checked as `read_jsonl` checks it: what a byte-offset index of the file is built from (the
    offset skips a leading byte-order mark, so reading `len(raw)` bytes there gives the line back)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with _read_errors(path), opener(path, "rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            start, size = offset, len(raw)
            offset += size
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw, start = raw[3:], start + 3
            row = parse_line(_decode(raw, path, number), path, number, required)
            if row is not None:
                yield number, raw, start, row
