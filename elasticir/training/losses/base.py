"""The common part of the elastic losses: every method is a base loss applied to cells of one forward pass.

Why not sentence-transformers' `Matryoshka2dLoss` / `AdaptiveLayerLoss` as they are? They take the layers
from `output_hidden_states=True`, so every layer runs even when the deepest trained layer is shallower; since
version 6 they also sample the embedding output as if it were a layer (up to version 5 they did not); they
cannot express the Starbucks pair list or its KLs.
What we keep is their mechanism: one cached pass per input column, then the base loss called again on each
truncated view of it - through the base loss's own `compute_loss_from_embeddings`, so the MNRL / CoSENT
formulas are sentence-transformers' own. The pass exits early as `ElasticEncoder.forward_layers` does (hooks
on the blocks) and runs the model's own module stack (encoders.stack), so a cell is trained exactly as it is
evaluated: the output of the first L blocks through every module after the Transformer - Pooling, any Dense
head, Normalize - (`sentence_embedding`, the point sentence-transformers and both Starbucks codes read), cut
to d dims, L2-normalised again (unless normalize=False, for dot-product models).

Every KL reads the embedding at `kl_point`: "output" (default) is that `sentence_embedding`, as the
originals read it; "pooled" is the Pooling output before any later module, which on a model with a Normalize module
makes the KL tens of times stronger (the softmax of a unit vector is nearly flat, of a raw one is not).

Every loss is an `nn.Module` that wraps a base loss and is called with `(sentence_features, labels)`, as the
sentence-transformers losses are; `terms()` gives the named, already weighted terms that `forward` sums.
Each method lives in a module of its own with its config model (`LossConfig`: the keys it reads) and is
registered by name (losses.registry), as sentence-transformers keeps one file per loss.
Limits: one process (a DDP wrapper is not unwrapped, and early exit leaves the layers above the deepest
trained cell unused), and base losses with `compute_loss_from_embeddings` (not the gradient-cached ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from elasticir.cells import Cell, default_pairs, validate_cells
from elasticir.encoders import run_layers, transformer_blocks
from elasticir.encoders.stack import ModuleStack
from elasticir.errors import ElasticIRError

KL_VARIANTS = ("scores", "embedding", "none")
KL_POINTS = ("output", "pooled")
SCHEDULES = ("random", "cyclic")
LAYER_WEIGHTINGS = ("uniform", "inverse", "log")
Columns = list[dict[int, Tensor]]  # per input column: {layer: pooled full-width embedding}
Features = Iterable[dict[str, Tensor]]  # one tokenised batch per input column, as the trainer passes them
Labels = Tensor | None


def kl_div(student: Tensor, teacher: Tensor) -> Tensor:
    """`F.kl_div(log_softmax(student), softmax(teacher))` over the last axis, batchmean, as both reference
    codes compute it (i.e. KL(teacher || student)). Callers detach the teacher where the method says so."""
    return F.kl_div(F.log_softmax(student, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")


def in_batch_scores(embeddings: list[Tensor]) -> Tensor:
    """Query (first column) x candidate (all later columns) scores: one [queries x candidates] matmul per
    cell, never a [layers x queries x docs x hidden] tensor."""
    if len(embeddings) < 2:
        raise ElasticIRError(
            "kl='scores' needs a query column and at least one candidate column (pairs or triplets); "
            "use kl='embedding' or kl='none' for single-column data"
        )
    return embeddings[0] @ torch.cat(embeddings[1:]).T


def validate_pairs(pairs: Iterable[Sequence[int]], num_layers: int, hidden_size: int) -> list[Cell]:
    """A Starbucks pair list: cells the model has, each with more layers and more dims than the one before."""
    cells = [Cell(*pair) for pair in pairs]
    if not cells:
        raise ElasticIRError("the pair list is empty; give pairs small to large, such as 2:32,4:64,6:384")
    validate_cells(cells, num_layers, hidden_size)
    for small, large in pairwise(cells):
        if not (small.layer < large.layer and small.dim < large.dim):
            raise ElasticIRError(
                f"pair list {' '.join(map(str, cells))}: {large} does not grow from {small}; every pair "
                "needs more layers and more dims than the one before, e.g. (2,32) (4,64) (6,128) "
                "(the full-grid loss trains several dims of one layer)"
            )
    return cells


def _elastic_parts(model: nn.Module):
    """The Transformer and the module stack after it (encoders.stack.ModuleStack: Pooling in any mode, Dense
    heads, LayerNorm, Normalize, ...), the same stack the evaluation applies at every layer; a module without a
    layer-wise meaning is refused there, with its reason."""
    stack = ModuleStack.of(model)
    return model[0], stack


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ElasticIRError(f"{name}={value!r}: choose one of {', '.join(allowed)}")
    return value

class LossConfig(BaseModel):
    """The keys one loss reads, with the loss's own defaults: the trainer fills it from the TrainConfig keys of
    the same names (a key left None takes the default here), so each method validates exactly its keys."""

    model_config = ConfigDict(extra="forbid")

    normalize: bool = True  # L2-normalise each cell again after the cut (off for dot-product models)


class KLConfig(LossConfig):
    """Keys of the losses with a KL term: where an embedding KL reads (`ElasticLoss.at_kl_point`)."""

    kl_point: Literal["output", "pooled"] = "output"


class ElasticLoss(nn.Module):
    """Base class: one early-exiting pass per input column, then `loss` on cells of it.

    Subclasses say which weighted terms a step has (`terms`; `forward` sums them), which cells the method
    puts a loss on (`trained_cells`) and which pair list a report of the trained model should draw
    (`report_pairs`).
    """

    def __init__(
        self, model: nn.Module, loss: nn.Module, *, normalize: bool = True, kl_point: str = "output"
    ) -> None:
        super().__init__()
        if not callable(getattr(loss, "compute_loss_from_embeddings", None)):
            raise ElasticIRError(
                f"base loss {type(loss).__name__} has no compute_loss_from_embeddings(embeddings, labels); "
                "use MultipleNegativesRankingLoss, CoSENTLoss or another sentence-transformers loss with it"
            )
        self.model = model  # as sentence-transformers losses keep it: its trainer and model card read it
        self.loss = loss
        self.normalize = normalize
        self.kl_point = check_choice("kl_point", kl_point, KL_POINTS)
        transformer, stack = _elastic_parts(model)
        config = transformer.auto_model.config
        self.num_layers: int = config.num_hidden_layers
        # the output width (a Dense head sets it): the grid's widest dim, as the evaluation's
        self.hidden_size: int = stack.output_width(config.hidden_size)
        # a tuple, so these stay plain references and are not registered twice as submodules of the loss
        blocks = transformer_blocks(transformer.auto_model, self.num_layers)
        self._parts = (transformer, stack, blocks)

    @property
    def full(self) -> Cell:
        return Cell(self.num_layers, self.hidden_size)

    def embed(self, sentence_features: Features, layers: Iterable[int]) -> Columns:
        """Pooled full-width embedding of each needed layer, per column, from one pass per column that stops
        after the deepest needed layer: the blocks above it never run, cost nothing and get no gradient."""
        wanted = sorted(set(layers))
        validate_cells((Cell(layer, 1) for layer in wanted), self.num_layers, self.hidden_size)
        return [self._embed_column(features, wanted) for features in sentence_features]

    def _embed_column(self, features: dict[str, Tensor], layers: list[int]) -> dict[int, Tensor]:
        transformer, stack, blocks = self._parts
        return run_layers(lambda: transformer(dict(features)), blocks, layers,
                          lambda hidden: stack.pool(hidden, features))

    def output(self, pooled: Tensor) -> Tensor:
        """The model's `sentence_embedding` for a pooled vector: every module after Pooling applied (Dense
        heads, Normalize, ...), as the evaluation applies them."""
        return self._parts[1].finish(pooled)

    def at_kl_point(self, columns: Columns, layer: int, dim: int | None = None) -> Tensor:
        """Rows of every column at `kl_point` (output or pooled), cut to `dim`: what an embedding KL reads."""
        rows = [column[layer] if self.kl_point == "pooled" else self.output(column[layer]) for column in columns]
        return torch.cat([row[:, :dim] for row in rows])

    def cell(self, columns: Columns, cell: Cell) -> list[Tensor]:
        """The cell's embedding per column: a prefix of its layer's `sentence_embedding`, never a re-encode,
        L2-normalised again after the cut unless normalize=False (what sentence-transformers' MatryoshkaLoss
        and Tevatron hand their score functions)."""
        prefixes = [self.output(column[cell.layer])[:, : cell.dim] for column in columns]
        return [F.normalize(prefix, dim=-1) for prefix in prefixes] if self.normalize else prefixes

    def base(self, embeddings: list[Tensor], labels: Labels) -> Tensor:
        return self.loss.compute_loss_from_embeddings(embeddings, labels)

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        """Named, weighted terms of one step ("base(L,d)", "kl(L,d)", ...): for logging and per-term tests."""
        raise NotImplementedError

    def trained_cells(self) -> list[Cell]:
        """The cells this method puts a loss on (sampled methods: every cell it can sample)."""
        raise NotImplementedError

    def report_pairs(self) -> list[Cell]:
        """The pair list a report of the trained model should draw: by default the shape's diagonal."""
        return default_pairs(self.num_layers, self.hidden_size)

    def forward(self, sentence_features: Features, labels: Labels) -> Tensor:
        return torch.stack(list(self.terms(sentence_features, labels).values())).sum()

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "normalize": self.normalize, "kl_point": self.kl_point}
