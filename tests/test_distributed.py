"""Scale: the Ray executor gives the local executor's numbers, survives a killed worker, `--shard i/n` encodes
each row once, and a store that does not fit the disk is refused before encoding. One local Ray cluster
(2 CPUs) for the module; a tiny random BERT and tiny data."""

import json

import numpy as np
import pytest
from conftest import write_sts

from elasticir.encoders import store as store_module
from elasticir.errors import ElasticIRError
from elasticir.runner import RunConfig, run

ray = pytest.importorskip("ray")

WORDS = ["guitar", "cat", "market", "onion", "plane", "river", "music", "stock", "kitchen", "runway", "sofa", "garden"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A 60-document BEIR set with graded qrels and two STS sets."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "beir" / "toyscale"
    (folder / "qrels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    docs = {f"d{i:02d}": " ".join(rng.choice(WORDS, size=3 + i % 9)) for i in range(60)}
    queries = {f"q{i}": " ".join(rng.choice(WORDS, size=3)) for i in range(12)}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                                 for i, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    qrels = [f"q{i}\td{(5 * i + j) % 60:02d}\t{1 + j % 2}" for i in range(12) for j in range(3)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(["query-id\tcorpus-id\tscore", *qrels]) + "\n")
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    return root


def config(root, tmp, name, **kw):
    kw = {"sts": ["toy-a"], "retrieval": ["toyscale"], "layers": [1, 4], "dims": [8, 32], "bm25": False,
          "latency_texts": 0, "latency_samples": 0, **kw}
    return RunConfig(model="unused", data_root=str(root), out=str(tmp / name), cache_dir=str(tmp / f"{name}-cache"),
                     show_progress=False, **kw)


def metrics(outcome):
    cells = outcome.cells.sort_values(["task", "dataset", "layer", "dim"]).reset_index(drop=True)
    return cells[[c for c in ("task", "dataset", "layer", "dim", "spearman", "pearson", "nDCG@10", "RR@10", "R@100")
                  if c in cells]]


def assert_same(a, b):
    keys = ["task", "dataset", "layer", "dim"]
    assert len(a) == len(b) == 8 and (a[keys] == b[keys]).all().all()
    numbers = a.columns[4:]
    assert np.allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float), atol=1e-6, rtol=0, equal_nan=True)


@pytest.fixture(scope="module")
def local_reference(tiny_encoder, data_root, tmp_path_factory):
    return metrics(run(config(data_root, tmp_path_factory.mktemp("local"), "local"), tiny_encoder))


@pytest.mark.slow
def test_ray_executor_gives_the_local_metrics_even_when_a_worker_is_killed(
        ray_cluster, tiny_encoder, data_root, local_reference, tmp_path, monkeypatch):
    """One Ray run (STS + BEIR grid, 2 CPU actors) in which an actor exits mid-piece: Ray restarts it and retries
    the piece, and every metric equals the local executor's to 1e-6."""
    fault = tmp_path / "killed-once"
    from elasticir.execution.ray import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, str(fault))
    outcome = run(config(data_root, tmp_path, "ray", executor="ray", workers=2), tiny_encoder)
    assert fault.exists()  # an actor did exit after its first batch
    assert_same(metrics(outcome), local_reference)
    assert (outcome.cells[outcome.cells.task == "retrieval"]["nDCG@10"] > 0).all()
    part = outcome.dir / "retrieval" / "toyscale"
    assert len(list((part / "runs").glob("*.trec.gz"))) == 4 and (part / "per_query.csv.gz").is_file()
    stores = list((tmp_path / "ray-cache" / "embeddings").glob("*/meta.json"))
    assert len(stores) == 2 and all(json.loads(s.read_text())["format"] == 2 for s in stores)
    markers = list((tmp_path / "ray-cache" / "embeddings").glob("*/shards/*.done"))
    assert len(markers) > 4  # the rows were cut into pieces (2 workers x 4), each marked per layer


def test_shards_then_the_plain_command_encode_each_row_once(tiny_encoder, data_root, local_reference, tmp_path,
                                                            monkeypatch):
    written = []
    original = store_module.write_rows

    def counting(folder, encoder, texts, piece, **kw):
        written.append((folder.name, piece))
        return original(folder, encoder, texts, piece, **kw)

    monkeypatch.setattr(store_module, "write_rows", counting)
    assert run(config(data_root, tmp_path, "sharded", shard="0/2"), tiny_encoder) is None
    assert run(config(data_root, tmp_path, "sharded", shard="1/2"), tiny_encoder) is None
    sharded = len(written)
    assert sharded == 4  # two shards x (corpus, queries)
    rows = {}
    for folder, piece in written:
        for layer in piece.layers:
            rows.setdefault((folder, layer), []).extend(range(piece.start, piece.stop))
    assert all(sorted(r) == list(range(len(r))) for r in rows.values()) and len(rows) == 4  # each row once
    outcome = run(config(data_root, tmp_path, "sharded"), tiny_encoder)
    assert len(written) == sharded  # the plain command encoded nothing of the corpus or the queries again
    assert_same(metrics(outcome), local_reference)


def test_a_store_that_does_not_fit_is_refused_before_encoding(tiny_encoder, data_root, tmp_path, monkeypatch):
    from elasticir import disk

    monkeypatch.setattr(disk, "free_bytes", lambda path: 1000)
    monkeypatch.setattr(tiny_encoder, "iter_encode",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded before the disk check")))
    with pytest.raises(ElasticIRError, match=r"not enough disk for the embedding store .*: it needs 15\.4 kB, the file system has 1 kB free"):
        run(config(data_root, tmp_path, "full", sts=[]), tiny_encoder)


def test_float16_store_and_flag_errors(tiny_encoder, data_root, local_reference, tmp_path, monkeypatch):
    outcome = run(config(data_root, tmp_path, "half", sts=[], store_dtype="float16"), tiny_encoder)
    metas = list((tmp_path / "half-cache" / "embeddings").glob("*/meta.json"))
    assert len(metas) == 2 and all(json.loads(m.read_text())["dtype"] == "float16" for m in metas)
    assert all(np.load(m.parent / "layer_1.npy").dtype == np.float16 for m in metas)
    want = local_reference[local_reference.task == "retrieval"]["nDCG@10"].to_numpy(float)
    assert np.abs(metrics(outcome)["nDCG@10"].to_numpy(float) - want).max() < 0.05  # near, not necessarily equal
    assert outcome.leaderboard.config["numeric"]["store_dtype"] == "float16"
    with pytest.raises(ElasticIRError, match=r"--shard '2/2': give i/n with 0 <= i < n"):
        run(config(data_root, tmp_path, "bad", shard="2/2"), tiny_encoder)
    with pytest.raises(ElasticIRError, match=r"--shard is for clusters without Ray"):
        run(config(data_root, tmp_path, "bad", shard="0/2", executor="ray"), tiny_encoder)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ElasticIRError, match=r"--executor ray needs Ray.*pip install 'elasticir\[distributed\]'"):
        run(config(data_root, tmp_path, "bad", executor="ray"), tiny_encoder)


def test_store_keeps_the_widest_dim_and_widens_when_asked(tiny_encoder, tmp_path):
    from elasticir.encoders import EmbeddingStore

    texts = ["one text", "another text", "a third one"]
    narrow = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b", "c"], texts, width=8)
    assert narrow.ensure([2], show_progress=False, shards=2) and narrow.layer(2).shape == (3, 8)
    full = tiny_encoder.encode(texts, [2], show_progress=False)[2]
    assert np.allclose(narrow.layer(2), full[:, :8], atol=1e-6)
    wide = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b", "c"], texts, width=32)
    assert wide.dir == narrow.dir and wide.missing([2]) == [2]  # same key; the stored prefix is too narrow
    assert wide.ensure([2], show_progress=False) and wide.layer(2).shape == (3, 32)
    assert np.allclose(wide.layer(2), full, atol=1e-6) and not narrow.missing([2])  # wider serves narrower


def test_cli_shard_flags(tiny_model_dir, data_root, tmp_path):
    from typer.testing import CliRunner

    from elasticir.cli import app

    args = ["eval", "retrieval", "--model", str(tiny_model_dir), "--dataset", "toyscale", "--data-root", str(data_root),
            "--out", str(tmp_path), "--layers", "1", "--dims", "8", "--no-bm25", "--latency-texts", "0"]
    result = CliRunner().invoke(app, [*args, "--shard", "0/2", "--store-dtype", "float16"])
    assert result.exit_code == 0, result.output
    markers = sorted(p.name for p in (tmp_path / "_cache" / "embeddings").glob("*/shards/*.done"))
    assert markers == ["L1.0-30.done", "L1.0-6.done"] and not list(tmp_path.glob("*/leaderboard.json"))
    result = CliRunner().invoke(app, [*args, "--shard", "1/0"])
    assert result.exit_code == 2 and "error: --shard '1/0': give i/n" in result.output


@pytest.mark.slow
def test_ray_executor_with_a_precision_axis(ray_cluster, tiny_encoder, data_root, tmp_path):
    """The Ray cell tasks carry the precision axis as the local loop does: same points, same metrics."""
    extra = {"sts": [], "precisions": ["float32", "int8"], "dims": [32]}
    local = run(config(data_root, tmp_path, "p-local", **extra), tiny_encoder).cells
    remote = run(config(data_root, tmp_path, "p-ray", executor="ray", workers=2, **extra), tiny_encoder).cells
    keys = ["layer", "dim", "precision"]
    local, remote = (t.sort_values(keys).reset_index(drop=True) for t in (local, remote))
    assert len(local) == 4 and (local[keys] == remote[keys]).all().all()
    numbers = ["nDCG@10", "RR@10", "R@100"]
    assert np.allclose(local[numbers].to_numpy(float), remote[numbers].to_numpy(float), atol=1e-6, rtol=0)
    runs = sorted(p.name for p in (tmp_path / "p-ray").glob("*/retrieval/toyscale/runs/*.trec.gz"))
    assert runs == sorted(p.name for p in (tmp_path / "p-local").glob("*/retrieval/toyscale/runs/*.trec.gz"))


@pytest.mark.slow
def test_ray_executor_runs_funnels_as_tasks_with_the_local_numbers(ray_cluster, tiny_encoder, data_root, tmp_path):
    """Funnel points (the full cell, each stage-1 group) are tasks of the actors: same rows, same metrics, same
    paired tests and the explicit funnels' run files, as the local executor gives."""
    import pandas as pd

    extra = {"sts": [], "funnels": ["1:8/20/4:32", "1:8:binary/20/4:32", "1:32/30/4:32"], "latency_samples": 2}
    tables, runs = {}, {}
    for name, scale in (("f-local", {}), ("f-ray", {"executor": "ray", "workers": 2})):
        outcome = run(config(data_root, tmp_path, name, **extra, **scale), tiny_encoder)
        part = outcome.dir / "retrieval" / "toyscale"
        tables[name] = pd.read_csv(part / "funnels.csv")
        runs[name] = {p.name: p.read_bytes() for p in (part / "runs").glob("funnel_*.trec.gz")}
    numbers = ["K", "nDCG@10", "RR@10", "R@100", "search_madds", "stage1_bytes", "p", "p_holm"]
    local, remote = tables["f-local"], tables["f-ray"]
    assert list(local.funnel) == list(remote.funnel) and len(local) == 4
    assert np.allclose(local[numbers].to_numpy(float), remote[numbers].to_numpy(float), atol=1e-9, equal_nan=True)
    assert len(runs["f-local"]) == 3 and runs["f-local"].keys() == runs["f-ray"].keys()


def test_a_reader_never_maps_a_layer_file_a_wider_run_has_just_recreated(tiny_encoder, tmp_path, monkeypatch):
    """A reader checks meta.json, then another run (wider dims, same key) unlists the layer and replaces its file
    with a zero-filled one: the reader must still get the stored rows, not the new file's zeros."""
    import pathlib

    from elasticir.encoders import EmbeddingStore

    texts = ["one text", "another text", "a third one"]
    narrow = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b", "c"], texts, width=8)
    narrow.ensure([2], show_progress=False)
    expected = np.array(narrow.layer(2))
    wide = EmbeddingStore(tmp_path, tiny_encoder, ["a", "b", "c"], texts, width=32)
    read_text, armed = pathlib.Path.read_text, [True]

    def racing(path, *args, **kw):  # the wider run prepares right after the reader has read meta.json
        text = read_text(path, *args, **kw)
        if path.name == "meta.json" and armed:
            armed.clear()
            wide.prepare([2])
        return text

    monkeypatch.setattr(pathlib.Path, "read_text", racing)
    got = narrow.layer(2)
    assert not armed and np.array_equal(np.asarray(got)[:, :8], expected)


@pytest.mark.slow
def test_an_actor_scores_each_work_against_its_own_qrels(ray_cluster, tiny_encoder, tmp_path):
    """An actor keeps each PointWork's context (parsed qrels) by the work's key: a second dataset whose qrels
    object is the first one's, mutated (as a freed copy's id comes back), is scored against its own
    judgements, and a forgotten work is prepared again."""
    import ir_measures

    from elasticir.encoders import EmbeddingStore
    from elasticir.evaluation.retrieval import (
        CellsData,
        open_cells,
        score_point,
        scoring_context,
        search_point,
    )
    from elasticir.execution import PointWork
    from elasticir.execution.ray import EncoderSpec, ShardEncoder
    from elasticir.index.dense import tie_ranks
    from elasticir.results.store import PartFolder

    doc_ids = ["d0", "d1", "d2", "d3"]
    docs = EmbeddingStore(tmp_path, tiny_encoder, doc_ids, ["guitar music", "cat sofa", "stock market", "onion"])
    queries = EmbeddingStore(tmp_path, tiny_encoder, ["q0"], ["music guitar"])
    for store in (docs, queries):
        store.ensure([2], show_progress=False)
    search = {"normalize": True, "index": "flat", "flat_backend": "torch", "k": 4, "tie_rank": tie_ranks(doc_ids),
              "exclude": None, "latency_samples": 0}
    qrels = {"q0": {"d0": 1}}  # one object, mutated: the same id with other contents, as after a reuse
    actor = ShardEncoder(EncoderSpec.of(tiny_encoder), "cpu", 1, {})  # the actor's body, in this process

    def rr(name):
        data = CellsData(str(docs.dir), str(queries.dir), search, ["q0"], np.asarray(doc_ids, dtype=object), qrels,
                         [ir_measures.RR], PartFolder(tmp_path / name), False)
        work = PointWork([(2, 8, "float32", (2,))], data, open_cells, search_point, scoring_context, score_point)
        _, [(row, _)] = actor.point(work.key, [ray.put(work)], 0, (2, 8, "float32", (2,)))
        return work.key, row[str(ir_measures.RR)]

    key, first = rr("dataset-a")
    qrels["q0"] = {doc: 1 for doc in doc_ids if doc != "d0"}
    other, second = rr("dataset-b")
    assert other != key and second != first and set(actor.works) == {key, other}
    actor.forget(key)
    assert set(actor.works) == {other}


def test_a_piece_written_into_a_file_a_wider_run_replaced_is_not_marked_done(tiny_encoder, tmp_path):
    """A `--shard` writer holds only its piece's lock: a wider run may replace the layer file under it. Its
    rows went to the old file, so its marker must not cover the new one (which a later run would then list
    with zero rows)."""
    from elasticir.encoders import EmbeddingStore
    from elasticir.encoders.store import Piece, write_rows

    texts = ["one text", "another text", "a third one", "and a fourth"]
    ids = ["a", "b", "c", "d"]
    narrow = EmbeddingStore(tmp_path, tiny_encoder, ids, texts, width=8)
    wide = EmbeddingStore(tmp_path, tiny_encoder, ids, texts, width=32)
    narrow.prepare([2])
    replaced = []

    def widen():  # the wider run prepares while the narrow writer is mid-piece
        if not replaced:
            replaced.append(wide.prepare([2]))

    write_rows(narrow.dir, tiny_encoder, texts, Piece(0, 4, (2,)), prompt="", batch_size=2, after_batch=widen)
    assert replaced and narrow.covered(2) == []
    wide.ensure([2], show_progress=False)
    assert np.allclose(wide.layer(2), tiny_encoder.encode(texts, [2], show_progress=False)[2], atol=1e-6)


def test_a_plain_run_after_one_shard_encodes_only_the_rows_no_shard_covered(tiny_encoder, tmp_path):
    from elasticir.encoders import EmbeddingStore
    from elasticir.encoders.store import Piece

    texts = [f"text number {i}" for i in range(6)]
    store = EmbeddingStore(tmp_path, tiny_encoder, [str(i) for i in range(6)], texts, width=8)
    assert store.encode_shard([2, 3], 0, 2, show_progress=False)  # rows 0-3; shard 1/2 never ran
    assert store.pending([2, 3], 1) == [Piece(3, 6, (2, 3))]  # not the whole corpus again
    assert store.pending([2, 3], 4) == [Piece(3, 4, (2, 3)), Piece(4, 6, (2, 3))]  # Ray's cut: still by shard
    assert store.ensure([2, 3], show_progress=False)
    assert np.allclose(store.layer(3), tiny_encoder.encode(texts, [3], show_progress=False)[3][:, :8], atol=1e-6)
