"""Per-layer embeddings stored on disk at full width, encoded once and reused by every dim and index type.

A store is a folder of raw memmaps (`layer_<L>.npy`, [n, hidden]) plus `meta.json`. Its key hashes everything
that changes the vectors: model weights, pooling, max length, prompt, dtype, storage dtype, and the ids and
texts (MTEB's cache keys on text alone and mixes query and document prompts; we do not). Rows are written batch by
batch as they are encoded, so memory stays bounded for corpora of any size (MS MARCO's 8.8M passages).

Safe under concurrency and crashes: a writer holds the store's lock (`.lock`, see elasticir.locking) and writes
each layer to a temporary file named for its process, renamed into place when complete; a layer counts as stored
only when `meta.json` lists it (written last) and its file has the expected shape and dtype. A second run asking
for the same texts waits for the first and then reuses its layers; temporaries of a killed writer are removed by
the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elasticir.encoders.model import ElasticEncoder
from elasticir.io import atomic_write
from elasticir.locking import exclusive


def store_key(encoder: ElasticEncoder, ids: Sequence[str], texts: Sequence[str], prompt: str, dtype: str) -> str:
    """The backend (torch / onnx) is deliberately not hashed: in float32 both give the same vectors to ~1e-6
    (tested to 1e-5 per layer), which cannot move a metric at its fourth decimal, so either reuses the other's."""
    digest = hashlib.sha256()
    info = encoder.info
    for part in (info.weights_sha256, info.pooling, str(info.max_length), prompt, str(encoder.dtype), dtype):
        digest.update(part.encode() + b"\0")
    for doc_id, text in zip(ids, texts):
        digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:20]


class EmbeddingStore:
    """Full-width pooled embeddings per layer for one list of texts, on disk."""

    def __init__(self, root: Path, encoder: ElasticEncoder, ids: Sequence[str], texts: Sequence[str], *,
                 prompt: str = "", dtype: str = "float32") -> None:
        self.encoder, self.ids, self.texts, self.prompt, self.dtype = encoder, ids, texts, prompt, np.dtype(dtype)
        self.dir = Path(root) / store_key(encoder, ids, texts, prompt, self.dtype.name)

    def _meta(self) -> dict:
        path = self.dir / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {"layers": []}

    def _path(self, layer: int) -> Path:
        return self.dir / f"layer_{layer}.npy"

    def _complete(self, layer: int) -> bool:
        """The layer's file is whole: a readable .npy of [count, hidden] in the store's dtype."""
        try:
            array = np.load(self._path(layer), mmap_mode="r")
        except (OSError, ValueError):
            return False
        return array.shape == (len(self.texts), self.encoder.hidden_size) and array.dtype == self.dtype

    def missing(self, layers: Sequence[int]) -> list[int]:
        done = set(self._meta()["layers"])
        return [layer for layer in sorted(set(layers)) if layer not in done or not self._complete(layer)]

    def ensure(self, layers: Sequence[int], *, batch_size: int = 64, show_progress: bool = True,
               desc: str = "encoding") -> bool:
        """Encode the layers not stored yet in one early-exiting pass; True if anything was encoded."""
        if not self.missing(layers):
            return False
        with exclusive(self.dir.parent / f"{self.dir.name}.lock", f"the embedding cache {self.dir}"):
            todo = self.missing(layers)  # another run may have stored them while this one waited
            if not todo:
                return False
            self._encode(todo, batch_size=batch_size, show_progress=show_progress, desc=desc)
        return True

    def _encode(self, todo: list[int], *, batch_size: int, show_progress: bool, desc: str) -> None:
        """Write `todo` under the lock: stale temporaries first, then each layer via its own temporary file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".layer_*.tmp"):  # left by a killed writer (we hold the lock)
            stale.unlink(missing_ok=True)
        token = f"{os.getpid()}.{secrets.token_hex(4)}"
        temporary = {layer: self.dir / f".layer_{layer}.{token}.tmp" for layer in todo}
        shape = (len(self.texts), self.encoder.hidden_size)
        outputs = {layer: np.lib.format.open_memmap(temporary[layer], mode="w+", dtype=self.dtype, shape=shape)
                   for layer in todo}
        try:
            for rows, pooled in self.encoder.iter_encode(self.texts, todo, batch_size=batch_size,
                                                         prompt=self.prompt, show_progress=show_progress,
                                                         desc=desc):
                for layer in todo:
                    outputs[layer][rows] = pooled[layer]
            for layer in todo:
                outputs[layer].flush()
            outputs.clear()
            for layer in todo:
                temporary[layer].replace(self._path(layer))
        finally:
            outputs.clear()
            for path in temporary.values():
                path.unlink(missing_ok=True)
        meta = self._meta()
        meta.update(layers=sorted(set(meta["layers"]) | set(todo)), count=len(self.texts),
                    hidden_size=self.encoder.hidden_size, model=self.encoder.info.as_dict(), prompt=self.prompt,
                    dtype=self.dtype.name)
        atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2))

    def layer(self, layer: int) -> np.ndarray:
        """A read-only memmap [n, hidden] of one stored layer."""
        if self.missing([layer]):
            raise KeyError(f"layer {layer} is not stored in {self.dir}; call ensure() first")
        return np.load(self._path(layer), mmap_mode="r")
