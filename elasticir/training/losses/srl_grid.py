"""Full-grid SRL: Starbucks SRL over every cell of a grid (all layers x dims), optionally sampled per step."""

from __future__ import annotations

import random
from typing import Any

from torch import nn

from elasticir.cells import Cell, Grid
from elasticir.encoders.stack import ModuleStack
from elasticir.errors import ElasticIRError
from elasticir.training.losses.registry import register
from elasticir.training.losses.srl import SRLBase, SRLConfig, srl_kl


class FullGridSRLLoss(SRLBase):
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


class FullGridSRLConfig(SRLConfig):
    layers: list[int] | None = None  # the grid's layers (default: every layer)
    dims: list[int] | None = None  # the grid's dims (default: default_dims of the output width)
    cells_per_step: int | None = None  # sample this many non-full cells per step (None: all)
    seed: int = 0


@register("srl-grid", FullGridSRLConfig)
def build(model: nn.Module, loss: nn.Module, config: FullGridSRLConfig) -> FullGridSRLLoss:
    shape = model[0].auto_model.config
    width = ModuleStack.of(model).output_width(shape.hidden_size)
    grid = Grid.for_model(shape.num_hidden_layers, width, config.layers, config.dims)
    return FullGridSRLLoss(model, loss, grid, cells_per_step=config.cells_per_step, seed=config.seed,
                           **srl_kl(config))
