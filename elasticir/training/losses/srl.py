"""Starbucks SRL (Zhuang et al. 2024, "Starbucks: Improved Training for 2D Matryoshka Embeddings"): the base
loss and a KL to the full cell on every pair of a fixed pair list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from torch import Tensor, nn

from elasticir.cells import Cell, default_pairs
from elasticir.errors import ElasticIRError
from elasticir.training.losses.base import (
    KL_VARIANTS,
    ElasticLoss,
    Features,
    KLConfig,
    Labels,
    check_choice,
    in_batch_scores,
    kl_div,
    validate_pairs,
)
from elasticir.training.losses.registry import register


class SRLBase(ElasticLoss):
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
        self.kl = check_choice("kl", kl, KL_VARIANTS)
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


class SRLLoss(SRLBase):
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


class SRLConfig(KLConfig):
    pairs: list[tuple[int, int]] | None = None  # default: default_pairs of the model shape
    kl: Literal["scores", "embedding", "none"] = "scores"
    kl_weight: float | None = None  # None: the KL variant's own (scores 1, embedding 0.3)
    temperature: float | None = None  # kl="scores" only (default 1 / the base loss's scale)
    detach: bool | None = None  # None: the KL variant's own (scores detached, embedding not)


def srl_kl(config: SRLConfig) -> dict[str, Any]:
    """The KL keys every SRL variant takes from its config."""
    return {"kl": config.kl, "kl_weight": config.kl_weight, "temperature": config.temperature,
            "detach": config.detach, "normalize": config.normalize, "kl_point": config.kl_point}


@register("srl", SRLConfig)
def build(model: nn.Module, loss: nn.Module, config: SRLConfig) -> SRLLoss:
    return SRLLoss(model, loss, config.pairs, **srl_kl(config))
