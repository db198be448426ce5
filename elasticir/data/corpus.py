"""A BEIR corpus that stays on disk: ids in a memory-mapped Arrow file, texts read from the JSONL by byte offset.

Held as Python lists, a corpus costs about 2.4 KB of memory per passage (ids, texts, the dicts that checked
them), about 21 GB for MS MARCO's 8.8M passages on every node before any index. Here the file is scanned once,
checked line by line as before (one error naming the file and line), and indexed into a folder keyed by the
file's sha256: `offsets.npy` (where each document's line starts and how long it is), `ids.arrow` and
`meta.json`. A gzipped corpus is decompressed into that folder once, so its lines can be read by offset too.
A later load of the same file reuses the folder. Texts are read with `os.pread`, which goes through the page
cache and not through this process's memory map, so encoding the whole corpus leaves the process's resident
memory where it was; what stays per passage in memory is the offsets and ids the caller touches (16 bytes
plus the id).

`DocIds` and `DocTexts` are read-only sequences over chosen rows of one index (all of them, or a subset's);
a slice or `take` is a view, never a copy. Fancy indexing of ids with an integer array gives the names as an
object array, as numpy would (run files name the documents of a cell's hits that way).
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from elasticir.data.jsonl import scan_jsonl
from elasticir.errors import InputFormatError
from elasticir.io import file_checksum

FORMAT = 1  # bump when the folder's layout changes: old folders are then rebuilt, never misread
_CHUNK = 1 << 14  # rows per read when iterating (one pread of their byte span) and per ids block


def default_cache() -> Path:
    """Beside the dataset cache: never in the user's data folder (which may be read-only or shared)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "elasticir" / "corpus"


def document_text(row: dict) -> str:
    """A BEIR document as BEIR and MTEB encode it: title + " " + text."""
    return f"{row.get('title') or ''} {row.get('text') or ''}".strip()


class CorpusIndex:
    """The on-disk index of one corpus file: offsets, ids and the file the offsets point into."""

    def __init__(self, folder: Path, data_file: Path) -> None:
        self.folder, self.data_file = Path(folder), Path(data_file)
        spans = np.load(self.folder / "offsets.npy", mmap_mode="r")
        self.starts, self.sizes = spans[:, 0], spans[:, 1]
        column = ipc.open_file(pa.memory_map(str(self.folder / "ids.arrow"))).read_all().column(0)
        # one record batch is written: its chunk is a zero-copy view of the mapped file (combining would copy)
        self.ids = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.starts)

    def __reduce__(self):  # Ray and spawned processes reopen the files; nothing but two paths travels
        return CorpusIndex, (self.folder, self.data_file)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.data_file, os.O_RDONLY), os.getpid()
        return self._fd

    def text(self, row: int) -> str:
        raw = os.pread(self._descriptor(), int(self.sizes[row]), int(self.starts[row]))
        return document_text(json.loads(raw))

    def texts(self, rows: np.ndarray) -> Iterator[str]:
        """Texts of `rows` in that order; ascending runs are read with one pread of their byte span."""
        for first in range(0, len(rows), _CHUNK):
            block = np.asarray(rows[first:first + _CHUNK])
            starts, sizes = self.starts[block], self.sizes[block]
            begin, end = int(starts.min()), int((starts + sizes).max())
            if np.all(np.diff(block) > 0) and end - begin <= 4 * int(sizes.sum()) + (1 << 20):
                raw = os.pread(self._descriptor(), end - begin, begin)
                for start, size in zip((starts - begin).tolist(), sizes.tolist()):
                    yield document_text(json.loads(raw[start:start + size]))
            else:
                yield from (self.text(row) for row in block.tolist())


class CorpusView(Sequence):
    """Rows of a CorpusIndex (None: all of them, in file order)."""

    def __init__(self, index: CorpusIndex, rows: np.ndarray | None = None) -> None:
        self.index, self.rows = index, None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index) if self.rows is None else len(self.rows)

    def _row(self, position) -> int:
        position = operator.index(position)
        if not -len(self) <= position < len(self):
            raise IndexError(f"row {position} of a corpus of {len(self)}")
        position %= len(self)
        return position if self.rows is None else int(self.rows[position])

    def _all_rows(self) -> np.ndarray:
        return np.arange(len(self.index), dtype=np.int64) if self.rows is None else self.rows

    def take(self, positions: Iterable[int]):
        """A view of these positions (of this view), in the order given."""
        positions = np.asarray(positions, dtype=np.int64)
        return type(self)(self.index, positions if self.rows is None else self.rows[positions])

    def _slice(self, part: slice):
        if self.rows is None and part.step in (None, 1):
            start, stop, _ = part.indices(len(self))
            return type(self)(self.index, np.arange(start, max(start, stop), dtype=np.int64))
        return type(self)(self.index, self._all_rows()[part])

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self):,} rows of {self.index.data_file}>"


class DocTexts(CorpusView):
    """Document texts (title + " " + text), read from the corpus file when asked for."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._slice(key)
        return self.index.text(self._row(key))

    def __iter__(self) -> Iterator[str]:
        return self.index.texts(self._all_rows())


class DocIds(CorpusView):
    """Document ids, from the memory-mapped Arrow column."""

    def arrow(self) -> pa.Array:
        return self.index.ids if self.rows is None else self.index.ids.take(pa.array(self.rows))

    def __reduce__(self):
        """Pickled (for Ray tasks, perhaps on another node without this cache) as the names themselves: an
        object array, what the evaluation shipped before, from the compact Arrow column."""
        return _object_array, (self.arrow(),)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._slice(key)
        if isinstance(key, np.ndarray | list):
            positions = np.asarray(key, dtype=np.int64)
            rows = positions if self.rows is None else self.rows[positions]
            names = self.index.ids.take(pa.array(rows.ravel())).to_pylist()
            return np.array(names, dtype=object).reshape(positions.shape)
        return self.index.ids[self._row(key)].as_py()

    def __iter__(self) -> Iterator[str]:
        column = self.arrow()
        for start in range(0, len(column), _CHUNK):
            yield from column.slice(start, _CHUNK).to_pylist()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and bool(self.isin([name]).any())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.array(self.arrow().to_pylist(), dtype=object)

    def isin(self, names: Iterable[str]) -> np.ndarray:
        """Per row, whether its id is one of `names`."""
        return pc.is_in(self.arrow(), value_set=pa.array(list(names), pa.large_string())).to_numpy(zero_copy_only=False)

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """Position of each name in this view, -1 where absent. The hash table is built over `names` (a few
        queries or judged ids), not over the corpus: memory in the number of names."""
        names = list(names)
        positions = np.flatnonzero(self.isin(names))
        found = dict(zip(self.arrow().take(pa.array(positions)).to_pylist(), positions.tolist()))
        return np.array([found.get(name, -1) for name in names], dtype=np.int64)

    def tie_ranks(self) -> np.ndarray:
        """index.dense.tie_ranks without a Python string per row: Arrow sorts UTF-8 bytewise, which is code-point
        order, as Python compares str (ids are unique, so the order is total)."""
        order = pc.array_sort_indices(self.arrow(), order="descending").to_numpy()
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(len(order))
        return ranks


def _object_array(column: pa.Array) -> np.ndarray:
    return np.array(column.to_pylist(), dtype=object)


def open_corpus(path: Path, cache: Path | None = None) -> CorpusIndex:
    """The index of `path`, built on first use (checking every line) into `cache` (default_cache())."""
    path = Path(path)
    digest = file_checksum(path)["sha256"] if path.is_file() else None
    if digest is None:
        raise InputFormatError(f"{path}: file not found")
    folder = Path(cache or default_cache()) / f"{digest[:20]}-v{FORMAT}"
    data_file = folder / "corpus.jsonl" if path.suffix == ".gz" else path
    if not (folder / "meta.json").is_file():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        except OSError as exc:
            raise InputFormatError(f"cannot write the index of {path} under {folder.parent} ({exc.strerror or exc}); "
                                   "set XDG_CACHE_HOME to a writable folder") from None
        try:
            _build(path, staging, copy=path.suffix == ".gz")
            try:
                staging.rename(folder)
            except OSError:  # another process built it meanwhile: keep theirs
                if not (folder / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return CorpusIndex(folder, data_file)


def _build(path: Path, folder: Path, *, copy: bool) -> None:
    """One pass over the file: spans, ids (in Arrow blocks, never one Python list), line numbers, empty texts."""
    spans, lines = array("q"), array("q")
    blocks, pending, empty, empty_count = [], [], [], 0
    written = 0
    with open(folder / "corpus.jsonl", "wb") if copy else nullcontext() as out:
        for number, raw, start, row in scan_jsonl(path, required=("_id", "text")):
            if out is not None:
                start = written
                written += out.write(raw)
            spans.extend((start, len(raw)))
            lines.append(number)
            pending.append(str(row["_id"]))
            if not document_text(row):
                empty_count += 1
                if len(empty) < 5:
                    empty.append(pending[-1])
            if len(pending) == _CHUNK:
                blocks.append(pa.array(pending, pa.large_string()))
                pending = []
    blocks.append(pa.array(pending, pa.large_string()))
    ids = pa.chunked_array(blocks, pa.large_string()).combine_chunks()
    _refuse_duplicates(path, ids, np.frombuffer(lines, dtype=np.int64))
    np.save(folder / "offsets.npy", np.frombuffer(spans, dtype=np.int64).reshape(-1, 2))
    with pa.OSFile(str(folder / "ids.arrow"), "wb") as sink, ipc.new_file(sink, pa.schema([("id", ids.type)])) as w:
        w.write_table(pa.table({"id": ids}))
    meta = {"format": FORMAT, "source": str(path), "count": len(ids), "empty": empty_count, "empty_ids": empty}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def _refuse_duplicates(path: Path, ids: pa.Array, lines: np.ndarray) -> None:
    """The first line (in file order) whose id an earlier line has, named with that earlier line, as a scan
    keeping every id in a set would report it; found by a stable sort, so without a Python set of N ids."""
    if len(ids) < 2:
        return
    order = pc.array_sort_indices(ids).to_numpy()  # stable: equal ids keep file order
    ordered = ids.take(pa.array(order))
    same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1)).to_numpy(zero_copy_only=False)
    if not same.any():
        return
    later = order[1:][same]
    row = int(later.min())
    name = ids[row].as_py()
    first = int(np.flatnonzero(pc.equal(ids, name).to_numpy(zero_copy_only=False))[0])
    raise InputFormatError(
        f"{path} line {lines[row]}: duplicate document id {name!r} (first on line {lines[first]}); ids must be unique"
    )


def id_array(ids: Sequence[str]) -> DocIds | np.ndarray:
    """Ids that an integer array of rows indexes (into names): on-disk ids as they are, a list as an object array."""
    return ids if isinstance(ids, DocIds) else np.asarray(ids, dtype=object)


def rows_of(ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Row of each name among `ids`, -1 where absent (remove_self_hits: a query's own document)."""
    if isinstance(ids, DocIds):
        return ids.rows_of(names)
    row_of = {doc: row for row, doc in enumerate(ids)}
    return np.array([row_of.get(name, -1) for name in names], dtype=np.int64)
