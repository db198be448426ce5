"""2DMSE: 2D Matryoshka Sentence Embeddings (Li et al. 2024; sentence-transformers `Matryoshka2dLoss`), sampled
per step."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from elasticir.cells import Cell, default_dims, validate_cells
from elasticir.errors import ElasticIRError
from elasticir.training.losses.base import (
    LAYER_WEIGHTINGS,
    ElasticLoss,
    Features,
    KLConfig,
    Labels,
    check_choice,
    kl_div,
)
from elasticir.training.losses.registry import register


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
        self.layer_weighting = check_choice("layer_weighting", layer_weighting, LAYER_WEIGHTINGS)
        self.kl = check_choice("kl (2DMSE)", kl, ("embedding", "none"))
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


class TwoDMSEConfig(KLConfig):
    layers: list[int] | None = None  # earlier layers to sample from (default 1..N-1)
    dims: list[int] | None = None  # dims to sample from (default: default_dims of the output width)
    layers_per_step: int = 1
    dims_per_step: int = 1
    layer_weighting: Literal["uniform", "inverse", "log"] = "uniform"
    kl: Literal["embedding", "none"] = "embedding"
    detach: bool = True
    temperature: float = 0.3
    kl_weight: float = 1.0
    seed: int = 0


@register("2dmse", TwoDMSEConfig, preset="2dmse-st6")
def build(model: nn.Module, loss: nn.Module, config: TwoDMSEConfig) -> TwoDMSELoss:
    return TwoDMSELoss(model, loss, config.layers, config.dims,
                       **config.model_dump(exclude={"layers", "dims"}))
