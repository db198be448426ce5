"""Named training recipes: every choice of a published set-up at once, and the check that choices agree.

A preset fills each recipe key the user did not set; a key the user set overrides it and is recorded as an
override, so `elastic.json` says both which recipe a model follows and where it departs from it. Without
`preset`, the method's own default recipe applies (the `preset` it is registered with, training.losses), so
every default is a named preset.

- starbucks-sts: the Starbucks STS code (`StarbucksLoss` on sentence-transformers): the model's pooling,
  cosine base loss (MNRL scale 20 for pairs/triplets, CoSENT for scored pairs), the embedding KL on the
  model's output (`sentence_embedding`), weight 0.3, teacher not detached (`kl` scores instead: the
  retrieval code's score KL at weight 1, detached, temperature 1 / scale).
- starbucks-retrieval: the Starbucks MS MARCO code (Tevatron): CLS pooling, raw dot product, temperature 1
  for both the ranking loss and the score KL, no re-normalisation after the cut, teacher scores detached,
  grouped 1 positive + 7 hard negatives per query.
- 2dmse-st5: `Matryoshka2dLoss` of sentence-transformers <= 5, the Starbucks paper's 2DMSE baseline: layer
  weight 1/L, KL teacher not detached, KL temperature 0.3, one earlier layer and one dim per step.
- 2dmse-st6: the same loss in sentence-transformers 6: uniform layer weights, teacher detached.
- sortednet: one nested sub-network per step, sampled uniformly (SortedNet's random sub-model sampling).
"""

from __future__ import annotations

from typing import Any

from elasticir.errors import ElasticIRError
from elasticir.training import losses

RECIPE_KEYS = ("method", "pooling", "similarity", "scale", "normalize", "kl", "kl_point", "kl_weight",
               "temperature", "detach", "layer_weighting", "schedule", "negatives")
_STS = {"pooling": "model", "similarity": "cosine", "scale": 20.0, "normalize": True, "kl_point": "output",
        "layer_weighting": "uniform", "schedule": "random", "negatives": 1, "temperature": None}
_2DMSE = {**_STS, "method": "2dmse", "kl": "embedding", "kl_weight": 1.0, "temperature": 0.3}
PRESETS: dict[str, dict[str, Any]] = {
    # kl_weight / detach None: the KL variant's own (embedding: 0.3, not detached; scores: 1, detached)
    "starbucks-sts": {**_STS, "method": "srl", "kl": "embedding", "kl_weight": None, "detach": None},
    "starbucks-retrieval": {**_STS, "method": "srl", "pooling": "cls", "similarity": "dot", "scale": 1.0,
                            "normalize": False, "kl": "scores", "kl_weight": 1.0, "temperature": 1.0,
                            "detach": True, "negatives": 7},
    "2dmse-st5": {**_2DMSE, "layer_weighting": "inverse", "detach": False},
    "2dmse-st6": {**_2DMSE, "layer_weighting": "uniform", "detach": True},
    "sortednet": {**_STS, "method": "sortednet", "kl": "none", "kl_weight": None, "detach": None},
}
DEFAULT_PRESET = "starbucks-sts"


def resolve_recipe(explicit: dict[str, Any], preset: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(preset name, every recipe key's value, the keys `explicit` set away from the preset).

    `explicit`: the recipe keys the user set (flags or YAML), None meaning unset."""
    given = {key: value for key, value in explicit.items() if value is not None}
    if preset is None:
        preset = losses.lookup(given["method"]).preset if "method" in given else DEFAULT_PRESET
    if preset not in PRESETS:
        raise ElasticIRError(f"preset {preset!r} is not a recipe; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **given}
    overrides = {key: value for key, value in given.items() if PRESETS[preset].get(key) != value}
    check_recipe(values, given)
    return preset, values, overrides


def check_recipe(values: dict[str, Any], given: dict[str, Any] | None = None, data_kind: str | None = None) -> None:
    """Refuse choices that disagree with each other, each with its reason (before any work is started)."""
    given = given or {}
    method, kl = values["method"], values["kl"]
    for key in given:  # keys only some methods read (their loss configs declare them): elsewhere silently unused
        users = losses.used_by(key)
        if users and method not in users:
            raise ElasticIRError(f"{key} is not used by method {method!r} (only by {', '.join(sorted(users))}); "
                                 "remove it or choose that method")
    if kl == "scores":
        if method == "2dmse":
            raise ElasticIRError("kl='scores' is SRL's in-batch score KL; 2DMSE's KL is 'embedding' (or 'none')")
        if values["similarity"] == "cosine" and not values["normalize"]:
            raise ElasticIRError(
                "similarity cosine with normalize off and kl='scores': the base loss would score cosines while "
                "the KL scores raw dot products of the un-normalised cut; set similarity dot (Starbucks "
                "retrieval) or keep normalize on")
        if values["kl_point"] != "output":
            raise ElasticIRError("kl_point applies to embedding KLs; kl='scores' reads the cells' scores, "
                                 "the same ones the base loss ranks")
        if data_kind == "scored":
            raise ElasticIRError("kl='scores' needs queries and candidates (pairs or triplets, MNRL); scored "
                                 "pairs (CoSENT) take kl='embedding' or 'none'")
    if kl == "embedding" and method != "2dmse" and values["temperature"] is not None:
        raise ElasticIRError(f"temperature={values['temperature']}: SRL's embedding KL has no softmax temperature "
                             "(the Starbucks STS code's 0.3 is a weight: use kl_weight); leave it unset")
    if kl == "none" and ("kl_weight" in given or "temperature" in given):
        raise ElasticIRError("kl_weight / temperature set with kl='none': there is no KL term to weight")
    if values["scale"] is not None and values["scale"] <= 0 or (values["temperature"] or 1) <= 0:
        raise ElasticIRError("scale and temperature must be positive")
