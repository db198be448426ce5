"""Per-layer embeddings stored on disk, encoded once and reused by every dim and index type.

A store is a folder of raw memmaps (`layer_<L>.npy`, [n, width]) plus `meta.json`. Its key hashes everything
that changes the vectors: model weights, pooling, max length, prompt, dtype, storage dtype, and the ids and
texts (MTEB's cache keys on text alone and mixes query and document prompts; we do not). `width` is the prefix
kept per layer (the widest dim the grid reads; a later run that needs more columns rewrites the layer). Rows
are written batch by batch as they are encoded, so memory stays bounded for corpora of any size (MS MARCO's
8.8M passages).

Sharded: the rows are encoded in row ranges ("pieces"), by this process, by Ray actors (elasticir.execution.ray)
or by separate `--shard i/n` processes, each writing its rows in place into the layer files. A piece counts as
written only when its marker `shards/L<layer>.<start>-<stop>.done` exists, created after its rows are flushed,
so a killed writer's piece is simply encoded again; a re-run encodes only the rows no marker covers (whatever cut wrote them).

Safe under concurrency and crashes: layer files are created (and the stale temporaries of a killed writer
removed) under the store's lock (`.lock`, see elasticir.locking); an in-process or Ray encode holds it to the
end, a `--shard` process only while creating the files (then the lock of its own piece). A layer counts as
stored only when `meta.json` lists it (written last, once every row is covered) and its file has the expected
shape and dtype, and its content is what was written: `meta.json` records each layer file's sha256 when the
layer is listed, and a reused layer whose file no longer matches (edited, truncated, or from a store written
before checksums were recorded) is encoded again, with a note. A second run asking for the same texts waits for
the first and then reuses its layers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from elasticir.encoders.model import ElasticEncoder
from elasticir.io import atomic_write, sha256_of_files
from elasticir.locking import exclusive

_NOTED: set[tuple[Path, int]] = set()  # (store, layer) mismatches already reported by this process
FORMAT = 2  # meta.json "format": 2 = row-range pieces with done markers (readers of format 1 stores unchanged)


def store_key(encoder: ElasticEncoder, ids: Sequence[str], texts: Sequence[str], prompt: str, dtype: str) -> str:
    """The backend (torch / onnx) is deliberately not hashed: in float32 both give the same vectors to ~1e-6
    (tested to 1e-5 per layer), which cannot move a metric at its fourth decimal, so either reuses the other's."""
    digest = hashlib.sha256()
    info = encoder.info
    head = ["|".join(info.head)] if info.head else []
    # "output": the rows are the model's output embedding (after every module, Normalize included); stores
    # written before held the pooled vector, so they are not reused
    # a precision whose vectors the dtype does not tell apart (CPU autocast, int8) adds its tag: float32 keys stay
    tag = [encoder.precision.tag] if encoder.precision.tag else []
    for part in ("output", info.weights_sha256, info.pooling, str(info.max_length), prompt, str(encoder.dtype), dtype,
                 *head, *tag):
        digest.update(part.encode() + b"\0")
    for doc_id, text in zip(ids, texts):
        digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of the texts, to be encoded at `layers`."""

    start: int
    stop: int
    layers: tuple[int, ...]


def shard_range(count: int, index: int, shards: int) -> tuple[int, int]:
    """Rows of shard `index` of `shards` (equal contiguous ranges, the first ones shorter by at most one)."""
    return count * index // shards, count * (index + 1) // shards


def marker_path(folder: Path, layer: int, start: int, stop: int) -> Path:
    return folder / "shards" / f"L{layer}.{start}-{stop}.done"


def lock_path(folder: Path) -> Path:
    return folder.parent / f"{folder.name}.lock"


def _read_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of the .npy behind an open handle, left at the first data byte."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(handle)


def _map(handle, mode: str) -> np.ndarray:
    """A memmap of the .npy behind an open handle (so of that file, whatever the path names later)."""
    shape, fortran, dtype = _read_header(handle)
    return np.memmap(handle, dtype=dtype, mode=mode, offset=handle.tell(), shape=shape,
                     order="F" if fortran else "C")


def read_layer(folder: Path, layer: int) -> np.ndarray | None:
    """A read-only memmap of `layer_<layer>.npy`, or None unless meta.json lists the layer. The file is opened
    first and mapped from that handle, then meta.json is read: a run widening the layer replaces the file
    (zero-filled until its rows are written) only after unlisting it, so a listed layer's mapping is whole,
    while checking meta.json first and opening the path second could map the new, still empty file."""
    try:
        with open(folder / f"layer_{layer}.npy", "rb") as handle:
            array = _map(handle, "r")
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return array if layer in meta.get("layers", []) else None


def wait_for_layer(folder: Path, layer: int) -> np.ndarray | None:
    """read_layer, or, when the layer is not listed (a run may be rewriting it), read_layer again once that
    run releases the store's lock."""
    array = read_layer(folder, layer)
    if array is None and folder.is_dir():
        with exclusive(lock_path(folder), f"the embedding cache {folder}"):
            array = read_layer(folder, layer)
    return array


class StoredLayers:
    """A store's layers by folder alone: what a worker process reads (it holds paths, not an EmbeddingStore)."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)

    def layer(self, layer: int) -> np.ndarray:
        """A read-only memmap of a stored layer (see wait_for_layer), or KeyError if the store lacks it."""
        array = wait_for_layer(self.dir, layer)
        if array is None:
            raise KeyError(f"layer {layer} is no longer stored in {self.dir}")
        return array


def write_rows(folder: Path, encoder: ElasticEncoder, texts: Sequence[str], piece: Piece, *, prompt: str,
               batch_size: int, show_progress: bool = False, desc: str = "encoding",
               after_batch: Callable[[], None] | None = None) -> None:
    """Encode `texts` (the rows of `piece`) into the existing layer files, sync them, then mark the piece done.
    A function of paths, not of an EmbeddingStore, so a Ray actor or a `--shard` process calls it directly.
    A layer whose file a wider run replaced meanwhile (prepare) keeps no marker: these rows went to the old file.
    """
    writers: dict[int, _RowWriter] = {}
    try:
        for layer in piece.layers:
            writers[layer] = _RowWriter(folder / f"layer_{layer}.npy")
        for rows, pooled in encoder.iter_encode(texts, piece.layers, batch_size=batch_size, prompt=prompt,
                                                show_progress=show_progress, desc=desc):
            for layer, writer in writers.items():
                writer.write(rows + piece.start, pooled[layer])
            if after_batch is not None:
                after_batch()
        for writer in writers.values():
            writer.sync()
    finally:
        for writer in writers.values():
            writer.close()
    for layer in piece.layers:  # marker first, then the check: prepare replaces the file, then unlinks markers
        marker = marker_path(folder, layer, piece.start, piece.stop)
        atomic_write(marker, "")
        if _inode(folder / f"layer_{layer}.npy") != writers[layer].inode:
            marker.unlink(missing_ok=True)  # at worst a valid marker of the new file: its rows are encoded again


class _RowWriter:
    """Rows written into an open .npy layer file with pwrite, not through a memory map.

    Batches are formed from texts sorted by length, so a batch's rows are scattered over the whole file; written
    through a shared mapping, every page they touch stays in the process's RSS until unmapped (the whole store
    of a piece: 2 x 256 MB for 1M passages at 64 floats). pwrite puts them in the page cache only, where the
    kernel may drop them. Consecutive rows go in one call. The file is the one opened here, whatever its path
    names later (see the inode check of write_rows)."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "r+b")  # noqa: SIM115 - closed by close()
        shape, fortran, self.dtype = _read_header(self.handle)
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: not a C-ordered 2-d layer file")
        self.offset, self.width = self.handle.tell(), shape[1]
        self.row_bytes = self.width * self.dtype.itemsize
        self.inode = os.fstat(self.handle.fileno()).st_ino

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(rows, kind="stable")
        rows = np.asarray(rows)[order]
        block = np.ascontiguousarray(np.asarray(values)[order, : self.width], dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows
        for start, stop in pairwise([0, *breaks.tolist(), len(rows)]):
            os.pwrite(self.handle.fileno(), block[start:stop].tobytes(),
                      self.offset + int(rows[start]) * self.row_bytes)

    def sync(self) -> None:
        os.fsync(self.handle.fileno())  # what msync of the mapping did: the rows are on disk before the marker

    def close(self) -> None:
        self.handle.close()


def write_pieces(store: EmbeddingStore, pieces: Sequence[Piece], batch_size: int, *, show_progress: bool = True,
                 desc: str = "encoding") -> None:
    """Every piece of `store` encoded in this process, one after the other (EmbeddingStore.ensure's default)."""
    for piece in pieces:
        write_rows(store.dir, store.encoder, store.texts[piece.start:piece.stop], piece, prompt=store.prompt,
                   batch_size=batch_size, show_progress=show_progress, desc=desc)


_HASHES: dict[tuple, str] = {}


def layer_sha256(path: Path, *, fresh: bool = False) -> str:
    """sha256 of a layer file, remembered per process by (path, inode, size, mtime); `fresh` hashes it anew
    (right after its rows were written, when a memory map's writes may not have moved its mtime yet)."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if fresh or key not in _HASHES:
        _HASHES[key] = sha256_of_files([path])
    return _HASHES[key]


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


class EmbeddingStore:
    """Pooled embeddings per layer (the first `width` columns) for one list of texts, on disk."""

    def __init__(self, root: Path, encoder: ElasticEncoder, ids: Sequence[str], texts: Sequence[str], *,
                 prompt: str = "", dtype: str = "float32", width: int | None = None) -> None:
        self.encoder, self.ids, self.texts, self.prompt, self.dtype = encoder, ids, texts, prompt, np.dtype(dtype)
        self.width = min(width or encoder.hidden_size, encoder.hidden_size)
        self.dir = Path(root) / store_key(encoder, ids, texts, prompt, self.dtype.name)

    def _meta(self) -> dict:
        path = self.dir / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {"layers": []}

    def _path(self, layer: int) -> Path:
        return self.dir / f"layer_{layer}.npy"

    def _complete(self, layer: int) -> bool:
        """The layer's file is whole: a readable .npy of [count, >= width] in the store's dtype."""
        try:
            array = np.load(self._path(layer), mmap_mode="r")
        except (OSError, ValueError):
            return False
        return (array.ndim == 2 and array.shape[0] == len(self.texts) and self.width <= array.shape[1]
                and array.dtype == self.dtype)

    def _matches(self, layer: int, meta: dict) -> bool:
        """The layer file's sha256 equals the one meta.json recorded when the layer was listed."""
        recorded = meta.get("sha256", {}).get(str(layer))
        try:
            return recorded is not None and layer_sha256(self._path(layer)) == recorded
        except OSError:
            return False

    def missing(self, layers: Sequence[int]) -> list[int]:
        """Layers to (re-)encode: not listed, not whole, or whose file no longer has its recorded sha256."""
        meta = self._meta()
        done = set(meta["layers"])
        todo = []
        for layer in sorted(set(layers)):
            if layer not in done or not self._complete(layer):
                todo.append(layer)
            elif not self._matches(layer, meta):
                todo.append(layer)
                if (self.dir, layer) not in _NOTED:
                    _NOTED.add((self.dir, layer))
                    from elasticir.progress import stage

                    stage(f"note: the embedding cache {self._path(layer)} does not match the sha256 recorded in "
                          "its meta.json (changed since, or written without one); encoding that layer again")
        return todo

    def bytes_for(self, layers: Sequence[int]) -> int:
        """Disk the given layers take in this store (count x width x dtype each)."""
        return len(set(layers)) * len(self.texts) * self.width * self.dtype.itemsize

    def ensure(self, layers: Sequence[int], *, batch_size: int = 64, show_progress: bool = True,
               desc: str = "encoding", shards: int = 1, encode_pieces: Callable[..., None] = write_pieces) -> bool:
        """Encode what is not stored yet; True if anything was encoded. The missing rows are cut into `shards`
        pieces, each encoded in one early-exiting pass by
        `encode_pieces(store, pieces, batch_size, show_progress=..., desc=...)`: in this process by default,
        by actors under the Ray executor (elasticir.execution)."""
        if not self.missing(layers):
            return False
        with exclusive(lock_path(self.dir), f"the embedding cache {self.dir}"):
            todo = self.missing(layers)  # another run may have stored them while this one waited
            if not todo:
                return False
            self.prepare(todo, desc=desc)
            pieces = self.pending(todo, shards)
            if pieces:
                encode_pieces(self, pieces, batch_size, show_progress=show_progress, desc=desc)
            self._finish(todo)
        return True

    def encode_shard(self, layers: Sequence[int], index: int, shards: int, *, batch_size: int = 64,
                     show_progress: bool = True, desc: str = "encoding") -> bool:
        """Encode rows `shard_range(index, shards)` of the missing layers and return (`--shard i/n`); the plain
        command later finds them marked. Runs beside the other shards: the store lock only to create the files."""
        with exclusive(lock_path(self.dir), f"the embedding cache {self.dir}"):
            todo = self.missing(layers)
            if todo:
                self.prepare(todo, desc=desc)
        start, stop = shard_range(len(self.texts), index, shards)
        with exclusive(self.dir / "shards" / f"{start}-{stop}.lock", f"shard {index}/{shards} of {self.dir}"):
            pieces = [p for p in self.pending(todo, shards) if p.start >= start and p.stop <= stop]
            for piece in pieces:
                write_rows(self.dir, self.encoder, self.texts[piece.start:piece.stop], piece, prompt=self.prompt,
                           batch_size=batch_size, show_progress=show_progress, desc=f"{desc} shard {index}/{shards}")
        return bool(pieces)

    def prepare(self, todo: list[int], *, desc: str = "encoding") -> None:
        """Under the lock: check the disk, remove a killed writer's temporaries, and create every layer file of
        `todo` that is absent or of the wrong shape (atomically, zero-filled; its markers removed with it)."""
        from elasticir.disk import check_free_space

        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".layer_*.tmp"):  # left by a killed writer (we hold the lock)
            stale.unlink(missing_ok=True)
        create = [layer for layer in todo if not self._complete(layer)]
        check_free_space(self.dir, self.bytes_for(create), f"{desc}: {len(create)} layer(s) x {len(self.texts):,} "
                         f"texts x {self.width} dims in {self.dtype.name}", existing=self.bytes_for(todo))
        meta = self._meta()
        # listed yet missing: unreadable, narrower than now needed, or not its recorded checksum: rewritten whole
        create += [layer for layer in todo if layer in meta["layers"] and layer not in create]
        if set(meta["layers"]) & set(create):
            meta["layers"] = sorted(set(meta["layers"]) - set(create))
            meta["sha256"] = {k: v for k, v in meta.get("sha256", {}).items() if int(k) not in create}
            atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2))
        token = f"{os.getpid()}.{secrets.token_hex(4)}"
        for layer in create:
            temporary = self.dir / f".layer_{layer}.{token}.tmp"
            np.lib.format.open_memmap(temporary, mode="w+", dtype=self.dtype,
                                      shape=(len(self.texts), self.width)).flush()  # sparse: no disk used yet
            temporary.replace(self._path(layer))
            for marker in (self.dir / "shards").glob(f"L{layer}.*.done"):  # after the replace (see write_rows)
                marker.unlink(missing_ok=True)

    def covered(self, layer: int) -> list[tuple[int, int]]:
        """Row ranges of `layer` that done markers cover, merged and sorted."""
        ranges = []
        for marker in (self.dir / "shards").glob(f"L{layer}.*.done"):
            start, stop = marker.name.removesuffix(".done").split(".", 1)[1].split("-")
            ranges.append((int(start), int(stop)))
        merged: list[list[int]] = []
        for start, stop in sorted(ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b) for a, b in merged]

    def pending(self, todo: list[int], shards: int) -> list[Piece]:
        """The pieces still to encode: within each of the `shards` equal ranges, every stretch of rows that the
        markers of a layer leave uncovered, at those layers. Markers of another cut (`--shard i/n` jobs, Ray's
        pieces) count wherever they fall, so a plain run after a failed shard encodes only that shard's rows."""
        count = len(self.texts)
        covered = {layer: self.covered(layer) for layer in todo}
        starts = {shard_range(count, index, shards)[0] for index in range(shards)}
        edges = sorted(starts | {count} | {edge for ranges in covered.values() for a, b in ranges
                                           for edge in (a, b) if edge <= count})
        pieces: list[Piece] = []
        for start, stop in pairwise(edges):
            layers = tuple(layer for layer in todo if not any(a <= start and stop <= b for a, b in covered[layer]))
            if layers and pieces and pieces[-1].stop == start and pieces[-1].layers == layers and start not in starts:
                pieces[-1] = Piece(pieces[-1].start, stop, layers)
            elif layers:
                pieces.append(Piece(start, stop, layers))
        return pieces

    def _finish(self, todo: list[int]) -> None:
        """List the layers in meta.json once markers cover every row of them (written last)."""
        for layer in todo:
            if self.covered(layer) != [(0, len(self.texts))] and len(self.texts):
                raise RuntimeError(f"{self.dir}: layer {layer} has rows no finished piece covers")
        meta = self._meta()
        sha256 = {**meta.get("sha256", {}), **{str(layer): layer_sha256(self._path(layer), fresh=True) for layer in todo}}
        meta.update(layers=sorted(set(meta["layers"]) | set(todo)), sha256=sha256, count=len(self.texts), format=FORMAT,
                    hidden_size=self.encoder.hidden_size, width=self.width, model=self.encoder.info.as_dict(),
                    prompt=self.prompt, dtype=self.dtype.name)
        atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2))

    def layer(self, layer: int) -> np.ndarray:
        """A read-only memmap [n, >= width] of one stored layer (safe while another run widens it, see
        read_layer)."""
        array = wait_for_layer(self.dir, layer)
        if (array is None or array.ndim != 2 or array.shape[0] != len(self.texts) or array.shape[1] < self.width
                or array.dtype != self.dtype):
            raise KeyError(f"layer {layer} is not stored in {self.dir}; call ensure() first")
        return array
