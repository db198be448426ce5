"""Plain fine-tuning: the base loss at one cell (the full one, or a separately trained baseline's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from elasticir.cells import Cell, validate_cells
from elasticir.training.losses.base import (
    ElasticLoss,
    Features,
    Labels,
    LossConfig,
)
from elasticir.training.losses.registry import register


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


class PlainConfig(LossConfig):
    cell: tuple[int, int] | None = None  # the trained cell (default: the full one)


@register("plain", PlainConfig)
def build(model: nn.Module, loss: nn.Module, config: PlainConfig) -> PlainLoss:
    return PlainLoss(model, loss, config.cell, normalize=config.normalize)
