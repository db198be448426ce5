"""Cells, grids and pair lists: the vocabulary of elastic encoders, defined once.

A cell (L, d) runs the first L transformer layers, pools, and keeps the first d coordinates. A grid is a layer
list crossed with a dim list; a pair list (the Starbucks "diagonal") zips the two, small to large.

A cell has exactly two written forms, both defined here: `str(cell)` = "(6,384)" wherever people read it (tables,
figures, messages) and `cell.slug` = "L6_d384" wherever a name must be a file name or a token (run files, run
tags, model folders, experiment names). `Cell.parse` reads either, and "6:384" as typed on the command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from elasticir.errors import ElasticIRError

_CELL_FORMS = (
    re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$"),  # 6:384 (command line, YAML)
    re.compile(r"^\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$"),  # (6,384) (str)
    re.compile(r"^\s*L(\d+)_d(\d+)\s*$"),  # L6_d384 (slug)
)


class Cell(NamedTuple):
    layer: int
    dim: int

    def __str__(self) -> str:
        return f"({self.layer},{self.dim})"

    @property
    def slug(self) -> str:
        """The cell as a file-name / token: L6_d384."""
        return f"L{self.layer}_d{self.dim}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        """A cell from "6:384", "(6,384)" or "L6_d384"."""
        for form in _CELL_FORMS:
            if match := form.match(str(text)):
                return cls(int(match[1]), int(match[2]))
        raise ElasticIRError(f"{text!r} is not a cell; write LAYER:DIM, such as 6:384")


def layer_label(layer: int) -> str:
    """A layer as a row header of layer x dim tables and figures."""
    return f"L={layer}"


def dim_label(dim: int) -> str:
    """A dim as a column header of layer x dim tables and figures."""
    return f"d={dim}"


def default_layers(num_layers: int) -> list[int]:
    """Every layer: cells are cheap to evaluate once one pass has produced all of them."""
    return list(range(1, num_layers + 1))


def default_dims(hidden_size: int, smallest: int = 32) -> list[int]:
    """Powers of two from `smallest` up to the width, plus the width itself (384 -> 32,64,128,256,384)."""
    dims, d = [], smallest
    while d < hidden_size:
        dims.append(d)
        d *= 2
    dims.append(hidden_size)
    return dims


def default_pairs(num_layers: int, hidden_size: int) -> list[Cell]:
    """The diagonal derived from the model shape, full cell last.

    Starbucks' 12 x 768 list is (2,32) (4,64) (6,128) (8,256) (10,512) (12,768): min(N, 6) evenly spaced layers
    ending at N, and widths that are the powers of two below H, halving backwards, then H itself.
    For 6 x 384 this gives (1,16) (2,32) (3,64) (4,128) (5,256) (6,384).
    """
    count = min(num_layers, 6)
    layers = [round(num_layers * (i + 1) / count) for i in range(count)]
    below = 1 << ((hidden_size - 1).bit_length() - 1)  # largest power of two < H
    dims = [max(1, below >> (count - 2 - i)) for i in range(count - 1)] + [hidden_size]
    return [Cell(layer, dim) for layer, dim in zip(layers, dims)]


def parse_int_list(text: str | Iterable[int] | None, what: str) -> list[int] | None:
    """Parse a comma list such as "1,2,6" (CLI input); None stays None (= use the default)."""
    if text is None:
        return None
    if not isinstance(text, str):
        return [int(x) for x in text]
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ElasticIRError(f"--{what} must be a comma list of integers such as 1,2,6; got {text!r}") from None
    if not values:
        raise ElasticIRError(f"--{what} is empty; give a comma list of integers such as 1,2,6")
    return values


def parse_pairs(text: str) -> list[Cell]:
    """Parse a pair list such as "2:32,4:64,6:384"."""
    try:
        return [Cell.parse(part) for part in text.split(",")]
    except ElasticIRError as exc:
        raise ElasticIRError(f"pair list {text!r}: {exc}; write pairs like 2:32,4:64,6:384") from None


@dataclass(frozen=True)
class Grid:
    """Layers x dims for one model, validated against its shape."""

    layers: tuple[int, ...]
    dims: tuple[int, ...]

    @classmethod
    def for_model(
        cls, num_layers: int, hidden_size: int, layers: Iterable[int] | None = None, dims: Iterable[int] | None = None
    ) -> Grid:
        grid = cls(
            tuple(sorted(set(layers))) if layers is not None else tuple(default_layers(num_layers)),
            tuple(sorted(set(dims))) if dims is not None else tuple(default_dims(hidden_size)),
        )
        grid.validate(num_layers, hidden_size)
        return grid

    def validate(self, num_layers: int, hidden_size: int) -> None:
        validate_cells(self.cells, num_layers, hidden_size)

    @property
    def cells(self) -> list[Cell]:
        return [Cell(layer, dim) for layer in self.layers for dim in self.dims]

    @property
    def deepest(self) -> int:
        return max(self.layers)


def cell_range_error(layer: int, dim: int, num_layers: int, hidden_size: int) -> str | None:
    """The one message for a layer or dim outside a model's shape (None when the cell exists)."""
    if not 1 <= layer <= num_layers:
        return (f"layer {layer} is out of range: this model has layers 1..{num_layers} "
                "(layer L = the output of the L-th transformer layer; 0, the embedding output, is not a cell)")
    if not 1 <= dim <= hidden_size:
        return f"dim {dim} is out of range: this model's embeddings have 1..{hidden_size} dims"
    return None


def validate_cells(cells: Iterable[Cell], num_layers: int, hidden_size: int) -> None:
    """Refuse a layer or dim the model does not have, naming the valid range."""
    for layer, dim in cells:
        if message := cell_range_error(layer, dim, num_layers, hidden_size):
            raise ElasticIRError(message)


def validate_dim(dim: int, hidden_size: int) -> None:
    """Refuse a width the embeddings do not have (the range check of `validate_cells`, for dims alone)."""
    validate_cells([Cell(1, dim)], 1, hidden_size)


def layer_pairs(layers: Iterable[int], num_layers: int, query_layers: Iterable[int] | None = None,
                doc_layers: Iterable[int] | None = None) -> list[tuple[int, int]]:
    """The asymmetric pairs (query layer, doc layer) of a retrieval grid besides its own (L, L): every query
    layer with every doc layer, the side not given taking the grid's `layers`; none when neither is given.
    A layer the model lacks is refused naming its flag."""
    if query_layers is None and doc_layers is None:
        return []
    sides = {}
    for flag, given in (("--query-layers", query_layers), ("--doc-layers", doc_layers)):
        sides[flag] = sorted(set(layers if given is None else given))
        for layer in sides[flag]:
            if message := cell_range_error(layer, 1, num_layers, 1):
                raise ElasticIRError(f"{flag} {','.join(map(str, sides[flag]))}: {message}")
    return [(q, d) for q in sides["--query-layers"] for d in sides["--doc-layers"] if q != d]
