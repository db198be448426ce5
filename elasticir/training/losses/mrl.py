"""MRL: Matryoshka Representation Learning (Kusupati et al. 2022), the base loss at each dim of the last layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from elasticir.cells import Cell, default_dims, validate_cells
from elasticir.errors import ElasticIRError
from elasticir.training.losses.base import (
    ElasticLoss,
    Features,
    Labels,
    LossConfig,
)
from elasticir.training.losses.registry import register


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


class MRLConfig(LossConfig):
    dims: list[int] | None = None  # default: default_dims of the output width
    weights: list[float] | None = None  # one per dim (default 1)


@register("mrl", MRLConfig)
def build(model: nn.Module, loss: nn.Module, config: MRLConfig) -> MRLLoss:
    return MRLLoss(model, loss, config.dims, config.weights, normalize=config.normalize)
