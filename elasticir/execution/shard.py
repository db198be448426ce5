"""The shard executor (`--shard i/n`): the SLURM-array pattern (as pyserini and Tevatron users run it) without
a distributed engine.

Job i of n encodes rows i/n of every store it is handed into the shared embedding cache and evaluates nothing;
the plain command run afterwards finds the shards marked done (see elasticir.encoders.store) and encodes only
what none covered. It runs beside the other jobs: each holds the store's lock only to create the layer files.
"""

from __future__ import annotations

from elasticir.execution.base import Executor, PointResults, PointWork


class ShardExecutor(Executor):
    """Encodes shard `index` of `count` of each store; refuses evaluation work (a shard job stops after encoding)."""

    def __init__(self, index: int, count: int) -> None:
        self.index, self.count = index, count

    def describe(self) -> str:
        return f"shard executor: rows {self.index}/{self.count} of every store, nothing evaluated"

    def encode_store(self, store, layers, *, batch_size: int, show_progress: bool = True,
                     desc: str = "encoding") -> bool:
        return store.encode_shard(layers, self.index, self.count, batch_size=batch_size,
                                  show_progress=show_progress, desc=desc)

    def encode_texts(self, texts, layers, *, batch_size: int, prompt: str = "", show_progress: bool = True,
                     desc: str = "encoding"):
        raise RuntimeError(f"{self.describe()}: in-memory encoding belongs to the plain command")

    def run_points(self, work: PointWork, *, show_progress: bool = True, desc: str = "points",
                   unit: str = "point") -> PointResults:
        raise RuntimeError(f"{self.describe()}: evaluation belongs to the plain command")

    def close(self) -> None:
        """Nothing is held between stores."""
