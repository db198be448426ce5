"""SortedNet (Valipour et al. 2023): one nested sub-network trained per step, no distillation."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from torch import Tensor, nn

from elasticir.cells import Cell, default_pairs
from elasticir.training.losses.base import (
    SCHEDULES,
    ElasticLoss,
    Features,
    Labels,
    LossConfig,
    check_choice,
    validate_pairs,
)
from elasticir.training.losses.registry import register


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
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
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


class SortedNetConfig(LossConfig):
    pairs: list[tuple[int, int]] | None = None  # the sorted sub-networks (default: the model's pair list)
    schedule: Literal["random", "cyclic"] = "random"
    seed: int = 0


@register("sortednet", SortedNetConfig, preset="sortednet")
def build(model: nn.Module, loss: nn.Module, config: SortedNetConfig) -> SortedNetLoss:
    return SortedNetLoss(model, loss, config.pairs, schedule=config.schedule, seed=config.seed,
                         normalize=config.normalize)
