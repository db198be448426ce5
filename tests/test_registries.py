"""The extension paths: a precision, an index kind and a loss registered from this file only, run end to end.

Each test adds a toy to its registry, uses it through the code paths a built-in takes (QuantizedIndex and a
retrieval run, a retrieval run with --index, a training run with --method) and removes it again.
"""

import json
import time

import numpy as np
import pytest
import torch
from pydantic import Field

from elasticir.cells import Cell
from elasticir.encoders import truncate, weights_sha256
from elasticir.errors import ElasticIRError
from elasticir.evaluation.funnel import Funnel
from elasticir.index import kinds, precisions
from elasticir.index.dense import TIE_MARGIN, exact_search, order_hits, search_depth, tie_ranks
from elasticir.index.quantized import (
    QuantizedIndex,
    build_index,
    check_precisions,
    precision_slug,
    quantised_build,
)
from elasticir.report.precision import precisions_of
from elasticir.runner import RunConfig, run
from elasticir.training import ElasticLoss, losses
from elasticir.training.trainer import TrainConfig, train
from tests.test_retrieval import beir_root  # noqa: F401 - the fixture
from tests.test_training import triplets  # noqa: F401 - the fixture

STEP = 0.25  # the toy precision's grid: every coordinate rounded to a multiple of it


# ---- a precision: float codes rounded to a coarse grid -------------------------------------------------------


class RoundedCodes:
    """Documents rounded to multiples of STEP, searched exactly by matmul (the toy's codes)."""

    def __init__(self, docs_full, dim, normalize, chunk):
        self.codes = torch.from_numpy(np.round(truncate(docs_full, dim, normalize) / STEP) * STEP)
        self.nbytes, self.backend = self.codes.nelement(), "toy: rounded floats, exact matmul"

    def encode(self, queries):
        return queries

    def search(self, codes, fetch, tie_rank, floats):
        return exact_search(codes, self.codes, fetch)


@pytest.fixture
def rounded():
    spec = precisions.register(precisions.Precision(
        "rounded", order=9, slug="rounded-q", build=quantised_build("rounded"), bytes_per_vector=float,
        search_madds=lambda n_docs, k, dim: float(n_docs * dim) / 2, store=RoundedCodes, tie_margin=TIE_MARGIN))
    yield spec
    precisions.unregister("rounded")


def test_a_registered_precision_is_built_searched_named_and_costed(rounded, random_vectors):
    docs, queries = random_vectors
    tie_rank = tie_ranks([f"d{i:03d}" for i in range(len(docs))])
    index = build_index(docs, 8, "rounded", normalize=True)
    assert isinstance(index, QuantizedIndex) and index.backend.startswith("toy") and index.nbytes == 300 * 8
    scores, ids, _ = index.search(queries, 10, tie_rank)
    reference = truncate(queries, 8, True) @ (np.round(truncate(docs, 8, True) / STEP) * STEP).T
    want_scores, want_ids = order_hits(reference.astype(np.float32), np.tile(np.arange(300), (5, 1)), tie_rank, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    assert check_precisions(["float32", "rounded"]) == ["float32", "rounded"] and precision_slug("rounded") == "_rounded-q"
    assert precisions.report_order()[-1] == "rounded"
    funnel = Funnel(2, 8, "rounded", 50, 4, 32)
    assert funnel.slug == "funnel_L2_d8_rounded-q_K50_L4_d32" and funnel.search_madds(1000) == 4000 + 50 * 32


def test_a_registered_precision_runs_in_a_retrieval_evaluation(rounded, tiny_encoder, beir_root, tmp_path):  # noqa: F811
    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[4], dims=[8],
                       precisions=["float32", "rounded"], data_root=str(beir_root), out=str(tmp_path),
                       show_progress=False, latency_samples=2)
    outcome = run(config, tiny_encoder)
    assert sorted(outcome.cells.precision) == ["float32", "rounded"]
    assert precisions_of(outcome.cells) == ["float32", "rounded"]
    assert (outcome.dir / "retrieval" / "toyir" / "runs" / "L4_d8_rounded-q.trec.gz").is_file()


def test_bytes_per_vector_describes_every_built_in_index():
    docs = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    for name in ("float32", "float16", "int8", "binary", "binary+rescore"):
        measured = build_index(docs, 64, name, normalize=True).nbytes / len(docs)
        assert measured == pytest.approx(precisions.lookup(name).bytes_per_vector(64), rel=0.005), name


def test_an_unregistered_precision_is_refused_again(rounded):
    precisions.unregister("rounded")
    with pytest.raises(ElasticIRError, match="unknown precision.*'rounded'.*float32, float16"):
        check_precisions(["rounded"])


# ---- an index kind: exact search in numpy, refusing corpora under 5 documents --------------------------------


class NumpyIndex:
    """Exact inner-product search in float64 numpy: the interface the retrieval evaluation reads."""

    def __init__(self, docs_full, dim, normalize):
        start = time.perf_counter()
        self.dim, self.normalize = dim, normalize
        self.docs = truncate(docs_full, dim, normalize).astype(np.float64)
        self.nbytes, self.backend, self.build_s = self.docs.nbytes, "numpy float64", time.perf_counter() - start

    def search(self, queries_full, k, tie_rank, exclude=None):
        start = time.perf_counter()
        scores = (truncate(queries_full, self.dim, self.normalize) @ self.docs.T).astype(np.float32)
        seconds = time.perf_counter() - start
        ids = np.tile(np.arange(len(self.docs)), (len(scores), 1))
        return (*order_hits(scores, ids, tie_rank, search_depth(k, len(self.docs)), exclude), seconds)

    def latency_ms(self, queries_full, k, samples=100):
        return 0.0, 0.0


def refuse_small(index, dims, n_docs, *, flat_backend):
    if n_docs is not None and n_docs < 5:
        raise ElasticIRError(f"--index {index}: needs at least 5 documents, the corpus has {n_docs}")


@pytest.fixture
def numpy_kind():
    kinds.register(kinds.IndexKind("numpy", lambda docs, dim, *, normalize, **_: NumpyIndex(docs, dim, normalize),
                                   refuse_small))
    yield
    kinds.unregister("numpy")


def test_a_registered_index_kind_evaluates_retrieval_like_flat(numpy_kind, tiny_encoder, beir_root, tmp_path):  # noqa: F811
    config = RunConfig(model="unused", sts=[], retrieval=["toyir"], bm25=False, layers=[2, 4], dims=[8, 32],
                       data_root=str(beir_root), out=str(tmp_path / "numpy"), index="numpy", show_progress=False,
                       latency_samples=2)
    toy = run(config, tiny_encoder).cells
    flat = run(config.model_copy(update={"index": "flat", "out": str(tmp_path / "flat")}), tiny_encoder).cells
    assert set(toy.backend) == {"numpy float64"} and len(toy) == 4
    np.testing.assert_allclose(toy["nDCG@10"], flat["nDCG@10"], atol=1e-6)
    assert "numpy" in kinds.choices() and kinds.lookup("HNSW16").name == kinds.FACTORY
    with pytest.raises(ElasticIRError, match="needs at least 5 documents, the corpus has 3"):
        kinds.check_index("numpy", [8], 3)


# ---- a loss: the base loss at the shallowest layer, at each of --dims --------------------------------------


class FirstLayerConfig(losses.LossConfig):
    dims: list[int] = Field(default=[8], min_length=1)  # a TrainConfig key: --dims


class FirstLayerLoss(ElasticLoss):
    """The base loss at (1, d) for each d: a loss that only trains the first block."""

    def __init__(self, model, loss, dims, **kwargs):
        super().__init__(model, loss, **kwargs)
        self.cells = [Cell(1, dim) for dim in dims]

    def terms(self, sentence_features, labels):
        columns = self.embed(sentence_features, [1])
        return {f"base{cell}": self.base(self.cell(columns, cell), labels) for cell in self.cells}

    def trained_cells(self):
        return list(self.cells)


@pytest.fixture
def first_layer():
    @losses.register("first-layer", FirstLayerConfig)
    def build(model, loss, config):
        return FirstLayerLoss(model, loss, config.dims, normalize=config.normalize)

    yield
    losses.unregister("first-layer")


def test_a_registered_loss_trains_and_is_recorded(first_layer, tiny_model_dir, triplets, tmp_path):  # noqa: F811
    common = {"base": str(tiny_model_dir), "data": [str(triplets)], "max_steps": 2, "batch_size": 4, "device": "cpu"}
    folder = train(TrainConfig(method="first-layer", dims=[8, 16], out=str(tmp_path / "toy"), **common))
    meta = json.loads((folder / "elastic.json").read_text())
    assert meta["method"] == "first-layer" and meta["loss"]["class"] == "FirstLayerLoss"
    assert meta["trained_cells"] == [[1, 8], [1, 16]] and meta["recipe"]["preset"] == "starbucks-sts"
    assert len(meta["log_history"]) == 2 and weights_sha256(folder) != weights_sha256(tiny_model_dir)
    assert TrainConfig(**meta["config"], out="again").numeric() == meta["config"]  # the record loads back as is
    with pytest.raises(ElasticIRError, match="method 'first-layer': dims: List should have at least 1 item"):
        train(TrainConfig(method="first-layer", dims=[], out=str(tmp_path / "empty"), **common))
    with pytest.raises(ElasticIRError, match="schedule is not used by method 'first-layer' .only by sortednet"):
        train(TrainConfig(method="first-layer", schedule="cyclic", out=str(tmp_path / "cyclic"), **common))
    losses.unregister("first-layer")
    with pytest.raises(ValueError, match="not a registered loss; choose one of srl, srl-grid, 2dmse"):
        TrainConfig(method="first-layer", out="o", data=["x"])
