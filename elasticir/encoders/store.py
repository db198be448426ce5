"""Per-layer embeddings stored on disk at full width, encoded once and reused by every dim and index type.

A store is a folder of raw memmaps (`layer_<L>.npy`, [n, hidden]) plus `meta.json`. Its key hashes everything
that changes the vectors: model weights, pooling, max length, prompt, dtype, storage dtype, and the ids and
texts (MTEB's cache keys on text alone and mixes query and document prompts; we do not). Rows are written batch by
batch as they are encoded, so memory stays bounded for corpora of any size (MS MARCO's 8.8M passages).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elasticir.encoders.model import ElasticEncoder
from elasticir.io import atomic_write


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

    def missing(self, layers: Sequence[int]) -> list[int]:
        done = set(self._meta()["layers"])
        return [layer for layer in sorted(set(layers)) if layer not in done or not self._path(layer).is_file()]

    def ensure(self, layers: Sequence[int], *, batch_size: int = 64, show_progress: bool = True,
               desc: str = "encoding") -> bool:
        """Encode the layers not stored yet in one early-exiting pass; True if anything was encoded."""
        todo = self.missing(layers)
        if not todo:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        shape = (len(self.texts), self.encoder.hidden_size)
        outputs = {layer: np.lib.format.open_memmap(self._path(layer).with_suffix(".tmp"), mode="w+",
                                                    dtype=self.dtype, shape=shape) for layer in todo}
        for rows, pooled in self.encoder.iter_encode(self.texts, todo, batch_size=batch_size, prompt=self.prompt,
                                                     show_progress=show_progress, desc=desc):
            for layer in todo:
                outputs[layer][rows] = pooled[layer]
        for layer, array in outputs.items():
            array.flush()
            del array
            self._path(layer).with_suffix(".tmp").replace(self._path(layer))
        meta = self._meta()
        meta.update(layers=sorted(set(meta["layers"]) | set(todo)), count=len(self.texts),
                    hidden_size=self.encoder.hidden_size, model=self.encoder.info.as_dict(), prompt=self.prompt,
                    dtype=self.dtype.name)
        atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2))
        return True

    def layer(self, layer: int) -> np.ndarray:
        """A read-only memmap [n, hidden] of one stored layer."""
        if self.missing([layer]):
            raise KeyError(f"layer {layer} is not stored in {self.dir}; call ensure() first")
        return np.load(self._path(layer), mmap_mode="r")
