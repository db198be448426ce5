"""The executor contract: an executor of one's own (here a test-only one that counts what it is handed and
delegates to the local executor) is passed to STS, retrieval and funnel evaluation and receives every point;
executors hold nothing beyond close()."""

import numpy as np
import pytest
from conftest import write_sts

from elasticir.cells import Grid
from elasticir.data.beir import load_beir
from elasticir.data.sts import load_sts
from elasticir.evaluation.retrieval import evaluate_retrieval
from elasticir.evaluation.sts import evaluate_sts
from elasticir.execution import Executor, PointWork, executor_for
from elasticir.execution.local import LocalExecutor
from elasticir.results.store import PartFolder
from elasticir.runner import RunConfig
from tests.test_funnel import corpus_root  # noqa: F401  (a fixture: 60 documents, 8 queries)


class CountingExecutor(Executor):
    """Meets the protocol by delegating to the local executor, and records every point and store."""

    def __init__(self, encoder) -> None:
        self.local = LocalExecutor(encoder)
        self.points: list = []
        self.stores: list[str] = []
        self.texts = 0
        self.closed = False

    def describe(self) -> str:
        return "counting executor"

    def encode_store(self, store, layers, **options) -> bool:
        self.stores.append(store.dir.name)
        return self.local.encode_store(store, layers, **options)

    def encode_texts(self, texts, layers, **options):
        self.texts += len(texts)
        return self.local.encode_texts(texts, layers, **options)

    def run_points(self, work: PointWork, **options):
        self.points.extend(work.points)
        return self.local.run_points(work, **options)

    def close(self) -> None:
        self.local.close()
        self.closed = True


def test_a_new_executor_receives_every_sts_retrieval_and_funnel_point(tiny_encoder, corpus_root, tmp_path):  # noqa: F811
    from elasticir.evaluation.funnel import FULL, parse_funnel, run_funnels

    grid = Grid.for_model(4, 32, [2, 4], [8, 32])
    pairs = load_sts(write_sts(tmp_path / "sts.jsonl.gz"))
    with CountingExecutor(tiny_encoder) as counting:
        assert isinstance(counting, Executor)
        sts = evaluate_sts(tiny_encoder, pairs, grid, executor=counting, show_progress=False)
        assert counting.points == grid.cells and counting.texts == 12  # the distinct sentences, once
        with LocalExecutor(tiny_encoder) as local:
            reference = evaluate_sts(tiny_encoder, pairs, grid, executor=local, show_progress=False)
        assert np.array_equal(sts.cells.to_numpy(), reference.cells.to_numpy())

        counting.points.clear()
        data = load_beir(corpus_root / "beir" / "toyfunnel")
        result = evaluate_retrieval(tiny_encoder, data, grid, executor=counting, part_dir=PartFolder(tmp_path / "part"),
                                    cache_dir=tmp_path / "cache", show_progress=False, latency_samples=0,
                                    precisions=("float32", "int8"))
        assert counting.points == [(*cell, p, (cell.layer,)) for cell in grid.cells for p in ("float32", "int8")]
        assert len(result.cells) == 8 and len(counting.stores) == 2
        assert len(list((tmp_path / "part" / "runs").glob("*.trec.gz"))) == 8

        counting.points.clear()
        config = RunConfig(model="unused", funnels=["2:8/20/4:32", "2:8/40/4:32", "2:32:binary/20/4:32"],
                           cache_dir=str(tmp_path / "cache"), show_progress=False, latency_samples=2)
        records, _ = run_funnels(tiny_encoder, data, grid, config, PartFolder(tmp_path / "part"), executor=counting,
                                 remove_self_hits=False, name="toyfunnel")
        one, two, binary = (parse_funnel(s) for s in config.funnels)
        assert counting.points == [FULL, (one, two), (binary,)]  # groups share a stage-1 point
        assert [r["funnel"] for r in records] == ["full (4,32)", str(one), str(two), str(binary)]
    assert counting.closed and not counting.local._pools


def test_executor_for_picks_one_new_executor_per_call(tiny_encoder):
    from elasticir.execution.shard import ShardExecutor

    local = executor_for(RunConfig(), tiny_encoder)
    assert isinstance(local, LocalExecutor) and executor_for(RunConfig(), tiny_encoder) is not local
    shard = executor_for(RunConfig(shard="1/3"), tiny_encoder)
    assert isinstance(shard, ShardExecutor) and (shard.index, shard.count) == (1, 3)
    with pytest.raises(RuntimeError, match="evaluation belongs to the plain command"):
        shard.run_points(PointWork([1], None, lambda data, device: None, lambda point, prepared: point))


def test_the_local_executor_shuts_its_scoring_pool_down(tiny_encoder, monkeypatch):
    """Scoring processes live only while a work is scored: none is left registered after run_points, also
    when a point's scoring fails (its error reaches the caller)."""
    from elasticir.execution import local as local_module

    monkeypatch.setattr(local_module, "MAX_SCORING_PROCESSES", 2)
    with LocalExecutor(tiny_encoder) as executor:
        work = PointWork([1, 2, 3], 10, _prepare, _search, _prepare_scoring, _score, overlap=True)
        assert executor.run_points(work, show_progress=False).results == [13, 16, 19] and not executor._pools
        with pytest.raises(ValueError, match="point 2"):
            executor.run_points(PointWork([1, 2], 10, _prepare, _search, _prepare_scoring, _fail, overlap=True),
                                show_progress=False)
        assert not executor._pools


def _prepare(data, device):
    return data


def _search(point, prepared):
    return point * 3


def _prepare_scoring(data):
    return data


def _score(point, searched, scoring):
    return searched + scoring


def _fail(point, searched, scoring):
    if point == 2:
        raise ValueError("point 2")
    return searched


@pytest.mark.slow
def test_a_ray_executor_shuts_down_the_cluster_it_started_and_only_that(tiny_encoder):
    """Without a Ray session, the executor starts a local cluster at its first work and shuts it down at
    close(); with the caller's session it stops only its actors and leaves the session up."""
    ray = pytest.importorskip("ray")
    from elasticir.execution.ray import RayExecutor

    assert not ray.is_initialized()
    texts = ["a guitar", "a cat", "the market"]
    expected = tiny_encoder.encode(texts, [2], show_progress=False)[2]
    with RayExecutor(tiny_encoder, workers=1) as executor:
        assert "not joined" in executor.describe()
        got = executor.encode_texts(texts, [2], batch_size=2, show_progress=False)[2]
        assert executor.started_ray and ray.is_initialized()
    assert np.allclose(got, expected, atol=1e-6) and not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        with RayExecutor(tiny_encoder, workers=1) as executor:
            executor.encode_texts(texts, [2], batch_size=2, show_progress=False)
            assert not executor.started_ray
        assert ray.is_initialized() and not executor._actors
    finally:
        ray.shutdown()
