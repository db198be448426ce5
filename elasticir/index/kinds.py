"""The registry of index kinds: what --index names, how such an index is built, and what it checks up front.

Every --index value is one kind: a registered name (flat, hnsw, sq8, ivfpq, or one added with `register`), or
else a FAISS factory string (the "factory" kind). A kind owns three things: `build`, the searchable index of
one float32 cell (search, latency_ms, nbytes, build_s, backend: what the retrieval evaluation reads),
`check`, which refuses what it cannot build before any encoding, and `factory`, its FAISS factory string at a
corpus size and dim (None for a kind that is not a FAISS index). The built-in kinds are registered next to
their index (elasticir/index/dense.py); a new kind is one `register` call and nothing else learns its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from elasticir.errors import ElasticIRError

FACTORY = "factory"  # the kind of every --index value that is not a registered name: a FAISS factory string


@dataclass(frozen=True)
class IndexKind:
    """One index kind.

    `build(docs_full, dim, *, normalize, index, flat_backend, device)`: the index of one cell (`index` is the
    --index value as given, which the factory kind parses). `check(index, dims, n_docs, *, flat_backend)`:
    raise ElasticIRError for what the grid cannot build (n_docs None when the corpus size is not known yet).
    `factory(index, n_docs, dim)`: the FAISS factory string, or None."""

    name: str
    build: Callable[..., Any]
    check: Callable[..., None]
    factory: Callable[[str, int, int], str] | None = None


_REGISTRY: dict[str, IndexKind] = {}


def register(kind: IndexKind) -> IndexKind:
    """Add an index kind (refused if the name is taken)."""
    if kind.name in _REGISTRY:
        raise ElasticIRError(f"index kind {kind.name!r} is already registered; give it a name of its own")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a registered kind (tests that register one leave the registry as they found it)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The named kinds, in registration order (the factory kind, which takes any other string, not listed)."""
    return tuple(name for name in _REGISTRY if name != FACTORY)


def choices() -> str:
    """The --index choices as help and errors spell them: "flat, hnsw, sq8, ivfpq or a FAISS factory string"."""
    return f"{', '.join(names())} or a FAISS factory string"


def lookup(index: str) -> IndexKind:
    """The kind of an --index value: its registered name, or else the FAISS factory-string kind."""
    return _REGISTRY.get(index, _REGISTRY[FACTORY])


def build(docs_full, dim: int, *, normalize: bool, index: str = "flat", flat_backend: str = "torch",
          device: str = "cpu"):
    """The float32 index of one cell, built by the kind --index names."""
    return lookup(index).build(docs_full, dim, normalize=normalize, index=index, flat_backend=flat_backend,
                               device=device)


def check_index(index: str, dims: Sequence[int], n_docs: int | None = None, *, flat_backend: str = "torch") -> None:
    """Refuse an --index the grid cannot build, before any encoding: each kind checks its own."""
    if not isinstance(index, str) or not index.strip():
        raise ElasticIRError(f"--index is empty; use {choices()}")
    lookup(index).check(index, dims, n_docs, flat_backend=flat_backend)
