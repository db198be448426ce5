"""Texts tokenized once into a memory-mapped store: flat int32 ids + int64 offsets, keyed by tokenizer and texts.

Why: on an accelerator the host side (tokenizing, building id arrays) can cost as much as the model itself, and
every model that shares a tokenizer, and every later run over the same texts, would redo the same work. A store
is tokenized once, read back as a memory map (pages come from the OS page cache; nothing is held as Python
objects), and windows of rows are gathered from it with a few numpy operations.

Key: the sha256 of the standalone Rust tokenizer's JSON (vocabulary, normaliser, pre-tokeniser, post-processor
and its truncation settings: max length, strategy, side; see `tokens.standalone_tokenizer`), so every model
whose tokenizer gives the same ids at that length shares one store, plus a streamed sha256 of the texts (each
length-prefixed, in order, so a reordered or edited corpus gets a store of its own). Layout under the cache:
`<cache>/tokens/<key>/ids.int32` (raw ids), `offsets.npy` (n + 1 int64 offsets), `meta.json`. It is written
into a temporary folder and renamed into place under an exclusive lock, so readers see a whole store or none,
and two runs building the same store build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from elasticir.encoders import tokens
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write
from elasticir.locking import exclusive

FORMAT = 1
BUILD_WINDOW = 1 << 16  # texts tokenized per step while building (bounds the ids held in memory)


def tokenizer_key(standalone) -> str:
    """The tokenizer part of a store's key: sha256 of the Rust tokenizer's JSON, truncation included."""
    if standalone is None:
        raise ElasticIRError("a token store needs a fast (Rust) tokenizer that gives the model's own ids; this "
                             "model's tokenizer is slow or adds ids in Python: encode without a token store")
    return hashlib.sha256(standalone.to_str().encode()).hexdigest()


def texts_key(texts: Iterable[str]) -> str:
    """The texts part of a store's key: sha256 over the texts in order, each prefixed by its byte length."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class TokenStore:
    """An opened store: `len(store)` texts, `store.arrays(rows)` their ids as (flat int32 ids, int64 lengths)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "meta.json").read_text())
            self.offsets = np.load(self.folder / "offsets.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ElasticIRError(f"token store {self.folder} is unreadable ({exc}); delete the folder and it is "
                                 "rebuilt on the next run") from None
        total = int(self.offsets[-1])
        self.ids = (np.memmap(self.folder / "ids.int32", dtype=np.int32, mode="r", shape=(total,)) if total
                    else np.zeros(0, dtype=np.int32))  # numpy cannot map an empty file

    @property
    def tokenizer_key(self) -> str:
        return self.meta["tokenizer"]

    @property
    def texts_key(self) -> str:
        return self.meta["texts"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def arrays(self, rows: np.ndarray) -> tokens.TokenArrays:
        """The ids of texts `rows` (in that order), as `tokens.encode_arrays` gives them: one gather."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets[rows])
        lengths = np.asarray(self.offsets[rows + 1]) - starts
        new_starts = np.cumsum(lengths) - lengths
        source = np.repeat(starts - new_starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return np.asarray(self.ids[source], dtype=np.int32), lengths

    def check(self, standalone, texts: Sequence[str]) -> None:
        """Refuse to serve ids made by another tokenizer or for other texts (one error saying which)."""
        if tokenizer_key(standalone) != self.tokenizer_key:
            raise ElasticIRError(f"token store {self.folder} was made by another tokenizer (or max length) than "
                                 "this model's; build one for this model (encoder.token_store(texts, cache))")
        if len(texts) != len(self) or texts_key(texts) != self.texts_key:
            raise ElasticIRError(f"token store {self.folder} holds other texts than the {len(texts)} given (a "
                                 "prompt changes the texts too); build one for these texts")


def store_folder(cache: Path, standalone, texts: Sequence[str]) -> Path:
    key = hashlib.sha256(f"{tokenizer_key(standalone)}:{texts_key(texts)}".encode()).hexdigest()[:32]
    return Path(cache) / "tokens" / key


def open_or_build(cache: Path, standalone, texts: Sequence[str], *, workers: int = 0) -> TokenStore:
    """The store of `texts` under `standalone` in `cache`: opened if it exists, else tokenized once (in
    `workers` forked processes when > 0, see `tokens`) and published atomically."""
    folder = store_folder(cache, standalone, texts)
    if (folder / "meta.json").is_file():
        return TokenStore(folder)
    with exclusive(folder.with_name(folder.name + ".lock"), f"the token store {folder}"):
        if not (folder / "meta.json").is_file():  # another run may have built it while we waited
            _build(folder, standalone, texts, workers)
    return TokenStore(folder)


def _build(folder: Path, standalone, texts: Sequence[str], workers: int) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        windows = range(0, len(texts), BUILD_WINDOW)
        with open(scratch / "ids.int32", "wb") as out, \
                tokens.window_submitter(lambda chunk: tokens.encode_arrays(standalone, chunk), standalone,
                                        workers) as (submit, _ahead):
            futures = [submit(list(texts[start:start + BUILD_WINDOW])) for start in windows[:1]]
            for index, start in enumerate(windows):
                ids, lengths = futures.pop(0).result()
                if index + 1 < len(windows):  # the next window is tokenized while this one is written
                    futures.append(submit(list(texts[windows[index + 1]:windows[index + 1] + BUILD_WINDOW])))
                out.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
                offsets[start + 1:start + 1 + len(lengths)] = offsets[start] + np.cumsum(lengths)
            out.flush()
            os.fsync(out.fileno())
        np.save(scratch / "offsets.npy", offsets)
        atomic_write(scratch / "meta.json", json.dumps({"format": FORMAT, "tokenizer": tokenizer_key(standalone),
                                                        "texts": texts_key(texts), "count": len(texts),
                                                        "tokens": int(offsets[-1])}, indent=1))
        os.replace(scratch, folder)
    except OSError as exc:
        raise ElasticIRError(f"cannot write the token store {folder}: {exc.strerror or exc}; free space or "
                             "choose another cache folder") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["TokenStore", "open_or_build", "store_folder", "texts_key", "tokenizer_key"]
