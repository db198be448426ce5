"""The registry of embedding precisions: every place that needs to know a precision asks here.

A precision is one record: its name (what --precisions and a funnel's stage 1 spell), its place in reports,
its file-name token, how its index is built, how its search work is counted (multiply-adds and Hamming bit
operations per query, the funnel's cost model) and its bytes per vector. Config validation (`check_precisions`),
the index builder, run-file names, funnel costs and the report's precision order all read this one list, so a
new precision is one `register` call next to its index (elasticir/index/quantized.py registers the built-in
ones) and nothing else has to learn its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elasticir.errors import ElasticIRError


@dataclass(frozen=True)
class Precision:
    """One precision.

    `build(docs_full, dim, *, normalize, index, flat_backend, device)` returns the searchable index of one
    (cell, precision) (search, latency_ms, nbytes, build_s, backend). `store(docs_full, dim, normalize, chunk)`
    returns the quantised codes a QuantizedIndex searches (encode, search, nbytes, backend); None where `build`
    needs none (float32 is the dense CellIndex). `search_madds(n_docs, k, dim)` and `hamming_bits(n_docs, dim)`
    count one query's search work over n_docs documents with a shortlist of k (a funnel's stage 1).
    `tie_margin`: extra candidates the store's search fetches so ties at the k-th score are ordered by doc id."""

    name: str
    order: int  # position in reports (tables, legends): the report sorts by it
    slug: str  # file-name token ("binary-rescore"): run files L4_d8_<slug>, figures heatmap_<dataset>_<slug>
    build: Callable[..., Any]
    bytes_per_vector: Callable[[int], float]
    search_madds: Callable[[int, int, int], float]
    hamming_bits: Callable[[int, int], float] = lambda n_docs, dim: 0.0
    store: Callable[..., Any] | None = None
    tie_margin: int = 0


_REGISTRY: dict[str, Precision] = {}
DEFAULT = "float32"  # the unquantised precision: its run files keep names without a precision token


def register(precision: Precision) -> Precision:
    """Add a precision (refused if its name or slug is taken: two precisions would share run files)."""
    taken = [p.name for p in _REGISTRY.values() if precision.slug == p.slug or precision.name == p.name]
    if taken:
        raise ElasticIRError(f"precision {precision.name!r} (slug {precision.slug!r}) is already registered as "
                             f"{taken[0]!r}; give it a name and slug of its own")
    _REGISTRY[precision.name] = precision
    return precision


def unregister(name: str) -> None:
    """Remove a registered precision (tests that register one leave the registry as they found it)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every precision in registration order (float32 first): how errors and help list them."""
    return tuple(_REGISTRY)


def report_order() -> tuple[str, ...]:
    """Every precision in report order (float32, float16, int8, binary+rescore, binary, then added ones)."""
    return tuple(sorted(_REGISTRY, key=lambda name: _REGISTRY[name].order))


def lookup(name: str) -> Precision:
    """The precision called `name`, or one error naming the known ones."""
    if name not in _REGISTRY:
        raise ElasticIRError(f"precision {name!r}: use one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def precision_slug(precision: str) -> str:
    """The precision as a file-name suffix ('' for float32, so float32 run files keep their names)."""
    return "" if precision == DEFAULT else "_" + lookup(precision).slug


def check_precisions(precisions, flag: str = "--precisions") -> list[str]:
    """The precision list, or one error naming the unknown names and the known ones."""
    known = ", ".join(names())
    precisions = list(precisions or [])
    if not precisions:
        raise ElasticIRError(f"{flag} is empty; give a comma list of {known}")
    if any(not isinstance(p, str) or not p.strip() for p in precisions):
        raise ElasticIRError(f"{flag}: an item is empty; give a comma list of {known} without empty items")
    unknown = [p for p in precisions if p not in _REGISTRY]
    if unknown:
        raise ElasticIRError(f"{flag}: unknown precision(s) {', '.join(map(repr, unknown))}; "
                             f"use a comma list of {known}")
    if len(set(precisions)) != len(precisions):
        twice = sorted({p for p in precisions if precisions.count(p) > 1})
        raise ElasticIRError(f"{flag} {','.join(precisions)}: {', '.join(twice)} listed twice; give each "
                             "precision once")
    return precisions
