"""Training losses for elastic encoders: every method is a base loss applied to cells of one forward pass.

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
Limits: one process (a DDP wrapper is not unwrapped, and early exit leaves the layers above the deepest
trained cell unused), and base losses with `compute_loss_from_embeddings` (not the gradient-cached ones).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elasticir.cells import Cell, Grid, default_dims, default_pairs, validate_cells
from elasticir.encoders import run_layers, transformer_blocks
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
    from elasticir.encoders.stack import ModuleStack

    stack = ModuleStack.of(model)
    return model[0], stack


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ElasticIRError(f"{name}={value!r}: choose one of {', '.join(allowed)}")
    return value


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
        self.kl_point = _choice("kl_point", kl_point, KL_POINTS)
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


class PlainLoss(ElasticLoss):
    """The base loss at one cell.

    Default: the full cell ("plain" fine-tuning; sub-cells are evaluated, never trained). A smaller `cell`
    is the separately trained baseline at exactly (L, d); (L, hidden size) is the weaker Starbucks-STS
    variant that truncates only at evaluation.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, cell: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(model, loss, **kwargs)
        self.target = Cell(*cell) if cell is not None else self.full
        validate_cells([self.target], self.num_layers, self.hidden_size)

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        columns = self.embed(sentence_features, [self.target.layer])
        return {f"base{self.target}": self.base(self.cell(columns, self.target), labels)}

    def trained_cells(self) -> list[Cell]:
        return [self.target]

    def report_pairs(self) -> list[Cell]:
        return [self.target] if self.target != self.full else super().report_pairs()

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "cell": str(self.target)}


class MRLLoss(ElasticLoss):
    """MRL (Kusupati et al. 2022): the base loss at each dim of the last layer, weighted (default 1)."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        dims: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss, **kwargs)
        self.dims = list(dims) if dims is not None else default_dims(self.hidden_size)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.dims)
        if not self.dims or len(set(self.dims)) != len(self.dims) or len(self.weights) != len(self.dims):
            raise ElasticIRError(
                f"MRL dims {self.dims} with weights {self.weights}: give distinct dims and one weight per dim"
            )
        validate_cells((Cell(self.num_layers, dim) for dim in self.dims), self.num_layers, self.hidden_size)

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        columns = self.embed(sentence_features, [self.num_layers])
        return {
            f"base{Cell(self.num_layers, dim)}": weight
            * self.base(self.cell(columns, Cell(self.num_layers, dim)), labels)
            for dim, weight in zip(self.dims, self.weights)
        }

    def trained_cells(self) -> list[Cell]:
        return [Cell(self.num_layers, dim) for dim in self.dims]

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "dims": self.dims, "weights": self.weights}


class _SRL(ElasticLoss):
    """Starbucks SRL over the cells `step_cells` picks each step, with uniform weights.

    loss = base(full) + sum over the other cells [ base(cell) + kl_weight * KL(cell vs full) ].

    kl="scores" (retrieval code, Tevatron): in-batch score distributions (queries x all candidates, softmax
    over candidates) of the same cell embeddings the base loss scores, both divided by `temperature`
    (default: the base loss's own 1 / scale, as Starbucks uses one temperature for both), teacher = the full
    cell's scores, detached unless detach=False; kl_weight 1.
    kl="embedding" (STS code): softmax over the first d coordinates of the cell's layer embedding at
    `kl_point` vs the full model's embedding there cut to d, rows of all columns, teacher NOT detached unless
    detach=True, kl_weight 0.3 (the code's weight 1 x its "temperature" 0.3, a multiplier, not a softmax
    temperature), no temperature. kl="none": base losses only.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        kl: str = "scores",
        kl_weight: float | None = None,
        temperature: float | None = None,
        detach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss, **kwargs)
        self.kl = _choice("kl", kl, KL_VARIANTS)
        if temperature is not None and kl != "scores":
            raise ElasticIRError(
                f"temperature={temperature}: SRL's kl={kl!r} has no softmax temperature (only kl='scores' "
                "divides scores by one); leave temperature unset or use kl_weight"
            )
        self.kl_weight = (
            kl_weight if kl_weight is not None else {"scores": 1.0, "embedding": 0.3}.get(kl, 0.0)
        )
        self.temperature = temperature if temperature is not None else 1.0 / getattr(loss, "scale", 1.0)
        self.detach = detach if detach is not None else kl == "scores"

    def step_cells(self) -> list[Cell]:
        raise NotImplementedError

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        cells = [cell for cell in self.step_cells() if cell != self.full]
        columns = self.embed(sentence_features, [cell.layer for cell in cells] + [self.num_layers])
        full = self.cell(columns, self.full)
        if self.kl == "scores":  # first: single-column data is refused before the base loss trips over it
            teacher = in_batch_scores(full) / self.temperature
        terms = {f"base{self.full}": self.base(full, labels)}
        for cell in cells:
            embeddings = self.cell(columns, cell)
            terms[f"base{cell}"] = self.base(embeddings, labels)
            if self.kl == "scores":
                student = in_batch_scores(embeddings) / self.temperature
            elif self.kl == "embedding":
                student = self.at_kl_point(columns, cell.layer, cell.dim)
                teacher = self.at_kl_point(columns, self.num_layers, cell.dim)
            else:
                continue
            terms[f"kl{cell}"] = self.kl_weight * kl_div(student, teacher.detach() if self.detach else teacher)
        return terms

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "kl": self.kl,
            "kl_weight": self.kl_weight,
            "temperature": self.temperature if self.kl == "scores" else None,
            "detach": self.detach,
        }


class SRLLoss(_SRL):
    """Starbucks SRL on a fixed pair list, all pairs every step (default: `default_pairs` of the model shape).

    The full cell is always trained and is the KL teacher, whether or not the list ends with it.
    """

    def __init__(
        self, model: nn.Module, loss: nn.Module, pairs: Iterable[Sequence[int]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, loss, **kwargs)
        self.pairs = validate_pairs(
            pairs if pairs is not None else default_pairs(self.num_layers, self.hidden_size),
            self.num_layers,
            self.hidden_size,
        )

    def step_cells(self) -> list[Cell]:
        return self.pairs

    def trained_cells(self) -> list[Cell]:
        return sorted({*self.pairs, self.full})

    def report_pairs(self) -> list[Cell]:
        return list(self.pairs)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "pairs": [str(cell) for cell in self.pairs]}


class FullGridSRLLoss(_SRL):
    """SRL over every cell of a grid (default: all layers x `default_dims`), not only the diagonal.

    `cells_per_step` = k samples k of the non-full cells per step from a `random.Random(seed)` of its own,
    so a run is reproducible and leaves other random streams alone; None trains every cell every step.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        grid: Grid | None = None,
        *,
        cells_per_step: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss, **kwargs)
        self.grid = grid if grid is not None else Grid.for_model(self.num_layers, self.hidden_size)
        self.grid.validate(self.num_layers, self.hidden_size)
        self.cells = [cell for cell in self.grid.cells if cell != self.full]
        if cells_per_step is not None and not 1 <= cells_per_step <= len(self.cells):
            raise ElasticIRError(
                f"cells_per_step={cells_per_step}: this grid has {len(self.cells)} cells besides the full "
                f"one; choose 1..{len(self.cells)}, or None for all"
            )
        self.cells_per_step = cells_per_step
        self.seed = seed
        self._rng = random.Random(seed)

    def step_cells(self) -> list[Cell]:
        if self.cells_per_step is None:
            return self.cells
        return sorted(self._rng.sample(self.cells, self.cells_per_step))

    def trained_cells(self) -> list[Cell]:
        return sorted({*self.cells, self.full})

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "layers": list(self.grid.layers),
            "dims": list(self.grid.dims),
            "cells_per_step": self.cells_per_step,
            "seed": self.seed,
        }


class TwoDMSELoss(ElasticLoss):
    """2DMSE (Li et al. 2024; sentence-transformers `Matryoshka2dLoss`), sampled per step.

    Each step: the final layer N plus `layers_per_step` random earlier layers (from `layers`, default 1..N-1:
    the embedding output is never a layer here; sentence-transformers samples it since version 6, not before),
    each at `dims_per_step` random dims (from `dims`; -1 = all of a list).
    loss = sum_d base(N, d) + sum over sampled L [ w(L) / #sampled * sum_d base(L, d) + kl_weight * T * KL ],
    the KL (kl="embedding"; "none" = no KL) between softmaxes of the full-width embeddings at `kl_point` of
    layer L and of layer N divided by T, batchmean over all columns' rows. w: "uniform" (sentence-transformers
    6's default), "inverse" = 1/L (sentence-transformers <= 5, whose layer index 0 was block 1: 1/(1 + index)),
    "log" = 1/(1 + ln(1 + L)) (sentence-transformers 6's "log", the ESE weighting, index L = block L).
    `detach` cuts the teacher from the graph (sentence-transformers 6); detach=False is versions <= 5.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        layers: Sequence[int] | None = None,
        dims: Sequence[int] | None = None,
        *,
        layers_per_step: int = 1,
        dims_per_step: int = 1,
        layer_weighting: str = "uniform",
        kl: str = "embedding",
        detach: bool = True,
        temperature: float = 0.3,
        kl_weight: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss, **kwargs)
        self.layers = sorted(set(layers)) if layers is not None else list(range(1, self.num_layers))
        self.dims = sorted(set(dims)) if dims is not None else default_dims(self.hidden_size)
        validate_cells(
            (Cell(layer, dim) for layer in self.layers for dim in self.dims),
            self.num_layers,
            self.hidden_size,
        )
        if self.num_layers in self.layers:
            raise ElasticIRError(
                f"layers: the final layer {self.num_layers} is always trained; list earlier ones"
            )
        steps = (
            ("layers_per_step", layers_per_step, self.layers, 0),
            ("dims_per_step", dims_per_step, self.dims, 1),
        )
        for name, count, pool, least in steps:  # 0 earlier layers per step = the final layer only
            if count != -1 and not least <= count <= len(pool):
                raise ElasticIRError(f"{name}={count}: choose -1 (all) or {least}..{len(pool)}")
        self.layer_weighting = _choice("layer_weighting", layer_weighting, LAYER_WEIGHTINGS)
        self.kl = _choice("kl (2DMSE)", kl, ("embedding", "none"))
        self.layers_per_step, self.dims_per_step = layers_per_step, dims_per_step
        self.detach, self.temperature, self.kl_weight, self.seed = detach, temperature, kl_weight, seed
        self._rng = random.Random(seed)

    def layer_weight(self, layer: int) -> float:
        if self.layer_weighting == "inverse":
            return 1.0 / layer
        if self.layer_weighting == "log":
            return 1.0 / (1.0 + math.log(1 + layer))
        return 1.0

    def _sample(self, pool: list[int], count: int) -> list[int]:
        return list(pool) if count == -1 else sorted(self._rng.sample(pool, count))

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        final = self.num_layers
        prior = self._sample(self.layers, self.layers_per_step)
        columns = self.embed(sentence_features, prior + [final])
        terms = {
            f"base{Cell(final, dim)}": self.base(self.cell(columns, Cell(final, dim)), labels)
            for dim in self._sample(self.dims, self.dims_per_step)
        }
        teacher = self.at_kl_point(columns, final) / self.temperature
        if self.detach:
            teacher = teacher.detach()
        for layer in prior:
            weight = self.layer_weight(layer) / len(prior)
            for dim in self._sample(self.dims, self.dims_per_step):
                terms[f"base{Cell(layer, dim)}"] = weight * self.base(
                    self.cell(columns, Cell(layer, dim)), labels
                )
            if self.kl == "embedding":
                student = self.at_kl_point(columns, layer) / self.temperature
                terms[f"kl({layer})"] = self.kl_weight * self.temperature * kl_div(student, teacher)
        return terms

    def trained_cells(self) -> list[Cell]:
        return sorted({Cell(layer, dim) for layer in [*self.layers, self.num_layers] for dim in self.dims})

    def get_config_dict(self) -> dict[str, Any]:
        keys = ("layers", "dims", "layers_per_step", "dims_per_step", "layer_weighting", "kl", "detach")
        keys += ("temperature", "kl_weight", "seed")
        return {**super().get_config_dict(), **{key: getattr(self, key) for key in keys}}


class SortedNetLoss(ElasticLoss):
    """SortedNet (Valipour et al. 2023): one nested sub-network trained per step, no distillation.

    The sub-networks are `cells`, sorted so that each has more layers and more dims than the one before (the
    paper's "sorted" nesting, over depth x width; default: the pair list of the model shape, full cell
    included). Each step trains exactly one of them with the base loss alone; which one is the schedule:
    "random" (the paper's random sub-model sampling: uniform over the sorted list, from a
    `random.Random(seed)` of its own) or "cyclic" (step t trains cells[t mod K], smallest to largest).
    The paper's gradient accumulation over several sampled sub-models is gradient accumulation of the
    trainer, so it is not repeated here: one step = one optimiser update = one sub-network.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        cells: Iterable[Sequence[int]] | None = None,
        *,
        schedule: str = "random",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss, **kwargs)
        pairs = validate_pairs(cells if cells is not None else default_pairs(self.num_layers, self.hidden_size),
                               self.num_layers, self.hidden_size)
        self.cells = pairs if pairs[-1] == self.full else [*pairs, self.full]
        self.schedule = _choice("schedule", schedule, SCHEDULES)
        self.seed = seed
        self._rng = random.Random(seed)
        self._step = 0

    def next_cell(self) -> Cell:
        """The sub-network of the next step, advancing the schedule."""
        if self.schedule == "cyclic":
            cell = self.cells[self._step % len(self.cells)]
        else:
            cell = self._rng.choice(self.cells)
        self._step += 1
        return cell

    def terms(self, sentence_features: Features, labels: Labels) -> dict[str, Tensor]:
        cell = self.next_cell()
        columns = self.embed(sentence_features, [cell.layer])
        return {f"base{cell}": self.base(self.cell(columns, cell), labels)}

    def trained_cells(self) -> list[Cell]:
        return list(self.cells)

    def report_pairs(self) -> list[Cell]:
        return list(self.cells)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "cells": [str(cell) for cell in self.cells],
                "schedule": self.schedule, "seed": self.seed}
