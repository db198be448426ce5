"""Where the work runs: one Executor protocol (encode a store, encode texts, run points; see base) and its
local, Ray and shard implementations. `executor_for` picks one from the run's scale settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elasticir.execution.base import Executor, PointResults, PointWork
from elasticir.execution.local import LocalExecutor
from elasticir.execution.ray import RayExecutor
from elasticir.execution.shard import ShardExecutor
from elasticir.sharding import parse_shard

if TYPE_CHECKING:
    from elasticir.encoders import ElasticEncoder

__all__ = ["Executor", "PointResults", "PointWork", "executor_for"]


def executor_for(config, encoder: ElasticEncoder) -> Executor:
    """A new executor for one run (close it at the end, or use it as a context manager), from a config with
    the scale settings `shard`, `executor`, `ray_address` and `workers` (a RunConfig or its scale part):
    `--shard i/n` the shard executor, `--executor ray` the Ray executor, else the local one. Ray is imported
    only for the Ray executor."""
    if getattr(config, "shard", None):
        return ShardExecutor(*parse_shard(config.shard))
    if config.executor == "ray":
        return RayExecutor(encoder, address=config.ray_address, workers=config.workers)
    return LocalExecutor(encoder)
