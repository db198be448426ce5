"""The registry of elastic losses: a method name -> the loss's config model, its builder and its default recipe.

`elasticir train --method NAME` finds its loss here. The trainer keeps one flat TrainConfig (every flag and YAML
key of `train`, and the `config` recorded in each model folder), and hands the chosen loss only the keys its
config model declares, validated by that model; which method reads a recipe key is read off the same models, so
a key set for a method that ignores it is refused (training.recipes). A new loss is one module with its
`nn.Module`, its `LossConfig` and a `@register` builder, imported by losses/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from torch import nn

from elasticir.errors import ElasticIRError
from elasticir.training.losses.base import ElasticLoss, LossConfig

Builder = Callable[[nn.Module, nn.Module, Any], ElasticLoss]  # (model, base loss, the loss's config) -> loss


@dataclass(frozen=True)
class LossSpec:
    """One method: its name, the config model of the keys it reads, its builder, and the recipe (a preset of
    training.recipes) that applies when only the method is chosen."""

    name: str
    config: type[LossConfig]
    build: Builder
    preset: str = "starbucks-sts"

    def settings(self, values: Mapping[str, Any]) -> LossConfig:
        """This loss's config from flat keys (a TrainConfig's): the keys its model declares, None meaning the
        loss's own default; one error naming the method and the key when a value does not fit."""
        given = {key: values[key] for key in self.config.model_fields if values.get(key) is not None}
        try:
            return self.config(**given)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
            raise ElasticIRError(f"method {self.name!r}: {details}") from None


_REGISTRY: dict[str, LossSpec] = {}


def register(name: str, config: type[LossConfig], *, preset: str = "starbucks-sts") -> Callable[[Builder], Builder]:
    """Decorator: register `build(model, base_loss, config)` as method `name` with its config model."""
    if not (isinstance(config, type) and issubclass(config, LossConfig)):
        raise ElasticIRError(f"loss {name!r}: its config must be a LossConfig subclass, got {config!r}")

    def add(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ElasticIRError(f"loss {name!r} is already registered; give the new loss a name of its own")
        _REGISTRY[name] = LossSpec(name, config, build, preset)
        return build

    return add


def unregister(name: str) -> None:
    """Remove a registered loss (tests that register one leave the registry as they found it)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every method, in registration order."""
    return tuple(_REGISTRY)


def lookup(name: str) -> LossSpec:
    """The method called `name`, or one error naming the known ones."""
    if name not in _REGISTRY:
        raise ElasticIRError(f"method {name!r} is not a loss; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def used_by(key: str) -> set[str]:
    """The methods whose config reads `key` (empty: no loss reads it, it is not a loss key)."""
    return {name for name, spec in _REGISTRY.items() if key in spec.config.model_fields}
