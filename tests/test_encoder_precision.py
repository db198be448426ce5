"""Encoder precisions: where each runs, how close its vectors stay to float32's, and that their stores never mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elasticir.encoders import ElasticEncoder
from elasticir.encoders.precision import check_precisions, resolve
from elasticir.encoders.store import store_key
from elasticir.errors import ElasticIRError

TEXTS = ["A man is playing a guitar.", "A cat sleeps on the sofa.", "Two kids are swimming in a pool.",
         "The stock market fell sharply today, and analysts expect it to fall again tomorrow.", "two"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cpu_has_bf16() -> bool:
    import torch.cpu

    return any(getattr(torch.cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def test_each_precision_runs_where_it_can_and_says_where_else():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve("float32", cpu).tag == ""  # the reference keeps today's store keys
    assert resolve("int8", cpu).backend == "onnx" and resolve("int8", cpu).quantized
    with pytest.raises(ElasticIRError, match="CUDA only"):
        resolve("float16", cpu)
    with pytest.raises(ElasticIRError, match="CPU only"):
        resolve("int8", cuda)
    with pytest.raises(ElasticIRError, match="not known"):
        resolve("int4", cpu)
    with pytest.raises(ElasticIRError, match="listed twice"):
        check_precisions(["float32", "int8", "int8"])


def test_int8_vectors_stay_close_to_float32_and_get_their_own_store(tiny_model_dir, tmp_path):
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu")
    int8 = ElasticEncoder(str(tiny_model_dir), precision="int8", onnx_cache=tmp_path / "onnx")
    assert int8.backend == "onnx" and int8.device.type == "cpu" and int8.precision.name == "int8"
    ours = int8.encode(TEXTS, [2, 4], batch_size=2, show_progress=False)
    theirs = reference.encode(TEXTS, [2, 4], batch_size=2, show_progress=False)
    for layer in (2, 4):
        cosine = (_unit(ours[layer]) * _unit(theirs[layer])).sum(1)
        assert cosine.min() > 0.98, layer  # quantized: close, and not equal
        assert not np.allclose(ours[layer], theirs[layer], atol=1e-6)
    ids = [str(i) for i in range(len(TEXTS))]
    assert store_key(int8, ids, TEXTS, "", "float32") != store_key(reference, ids, TEXTS, "", "float32")
    # the graph is cached under its own key: a float32 ONNX encoder next to it exports its own
    float_onnx = ElasticEncoder(str(tiny_model_dir), backend="onnx", onnx_cache=tmp_path / "onnx")
    assert float_onnx._onnx.path([4]) != int8._onnx.path([4])
    assert store_key(float_onnx, ids, TEXTS, "", "float32") == store_key(reference, ids, TEXTS, "", "float32")


def test_bfloat16_on_the_cpu_autocasts_or_is_refused(tiny_model_dir):
    if not _cpu_has_bf16():
        with pytest.raises(ElasticIRError, match="no bfloat16 instructions"):
            ElasticEncoder(str(tiny_model_dir), device="cpu", precision="bfloat16")
        return
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu")
    bf16 = ElasticEncoder(str(tiny_model_dir), device="cpu", precision="bfloat16")
    assert bf16.dtype == torch.float32 and bf16.precision.autocast == torch.bfloat16  # weights stay float32
    ours = bf16.encode(TEXTS, [4], show_progress=False)[4]
    theirs = reference.encode(TEXTS, [4], show_progress=False)[4]
    assert ours.dtype == np.float32
    cosine = (_unit(ours) * _unit(theirs)).sum(1)
    assert cosine.min() > 0.99 and not np.allclose(ours, theirs, atol=1e-6)
    ids = [str(i) for i in range(len(TEXTS))]
    assert store_key(bf16, ids, TEXTS, "", "float32") != store_key(reference, ids, TEXTS, "", "float32")


def _toy_config(tiny_model_dir, root, out, **values):
    from elasticir.config import RunConfig

    return RunConfig(**{"model": str(tiny_model_dir), "sts": ["toy-a"], "retrieval": ["toyir"], "bm25": False,
                        "layers": [2, 4], "dims": [8, 32], "data_root": str(root), "out": str(out),
                        "show_progress": False, "latency_samples": 2, "latency_texts": 4, "device": "cpu"} | values)


@pytest.fixture
def toy_root(tmp_path):
    from tests.conftest import write_sts
    from tests.test_retrieval import write_beir

    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_beir(root / "beir" / "toyir")
    return root


def test_the_encoder_precision_axis_adds_points_next_to_unchanged_float32_ones(tiny_model_dir, toy_root, tmp_path):
    from elasticir.report.build import write_report
    from elasticir.reproduce import compare_leaderboards
    from elasticir.runner import run

    plain = run(_toy_config(tiny_model_dir, toy_root, tmp_path / "plain"))
    axis = run(_toy_config(tiny_model_dir, toy_root, tmp_path / "axis", encoder_precisions=["int8"],
                           precisions=["float32", "binary"]))
    assert plain.leaderboard.run_id != axis.leaderboard.run_id
    assert axis.leaderboard.config["encoder_precisions"] == ["float32", "int8"]
    cells = axis.cells
    assert set(cells.encoder_precision) == {"float32", "int8"}
    # the reference points are the run without the axis (same store, same numbers)
    reference = cells[(cells.encoder_precision == "float32") & (cells.precision.fillna("float32") == "float32")]
    for metric in ("spearman", "nDCG@10"):
        ours = reference.dropna(subset=[metric]).set_index(["dataset", "layer", "dim"])[metric].sort_index()
        theirs = plain.cells.dropna(subset=[metric]).set_index(["dataset", "layer", "dim"])[metric].sort_index()
        assert np.array_equal(ours.to_numpy(), theirs.to_numpy())
    int8 = cells[cells.encoder_precision == "int8"]
    assert len(int8) == len(cells) // 2 and set(int8.precision.dropna()) == {"float32", "binary"}  # they compose
    part = axis.dir / "sts" / "toy-a"
    with np.load(part / "pair_scores.npz") as ours, np.load(part / "encoder-int8" / "pair_scores.npz") as theirs:
        gap = np.abs(ours["cosines"] - theirs["cosines"])  # its own vectors: close, not equal
        assert 0 < gap.max() < 0.1 and np.array_equal(ours["gold"], theirs["gold"])
    results = axis.leaderboard.results
    assert {r.encoder_precision for r in results} == {"float32", "int8"}
    assert {r.encoder_precision for r in axis.leaderboard.encode_latency} == {"float32", "int8"}
    assert (axis.dir / "retrieval" / "toyir" / "encoder-int8" / "per_query.csv.gz").is_file()
    assert compare_leaderboards(axis.leaderboard, axis.leaderboard) == []
    changed = axis.leaderboard.model_copy(deep=True)
    point = next(r for r in changed.results if r.encoder_precision == "int8" and "spearman" in r.metrics)
    point.metrics["spearman"] += 0.5
    (difference,) = compare_leaderboards(axis.leaderboard, changed)
    assert difference.metric == "encoder int8 spearman"
    names = {p.name for p in write_report(axis.dir, tmp_path / "report")}
    assert {"encoder_int8_toy-a.png", "encoder_int8_toyir.png", "pareto_toyir_encoder_precision.png"} <= names
    assert "## Encoder precision axis (float32, int8)" in (tmp_path / "report" / "report.md").read_text()


def test_encoder_precision_flags_are_checked_before_any_encoding(tiny_model_dir, toy_root, tmp_path):
    from elasticir.config import RunConfig

    with pytest.raises(Exception, match="not known"):
        RunConfig(encoder_precisions=["int4"])
    with pytest.raises(Exception, match="--shard encodes the reference"):
        RunConfig(encoder_precisions=["int8"], shard="0/2")
    assert RunConfig(encoder_precisions=["int8", "float32"]).encoder_precisions == ["float32", "int8"]
    numeric = RunConfig(encoder_precisions=["float32"]).encoder.numeric()
    assert "encoder_precisions" not in numeric  # the reference alone: the run id of a plain run


def _int8_ops(path) -> dict[str, str]:
    import onnx

    return {node.name: node.op_type for node in onnx.load(path).graph.node}


def test_int8_keeps_the_first_block_in_float32(tiny_model_dir, tmp_path):
    """The recipe (QUANTIZATION["float_blocks"] = [0]): block 1's matrix multiplies and attention stay float32,
    the deeper blocks' are int8; so a layer-1 cell's int8 vectors are its float32 ones."""
    int8 = ElasticEncoder(str(tiny_model_dir), precision="int8", onnx_cache=tmp_path / "onnx")
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu")
    ours = int8.encode(TEXTS, [1, 4], batch_size=2, show_progress=False)
    theirs = reference.encode(TEXTS, [1, 4], batch_size=2, show_progress=False)
    ops = _int8_ops(int8._onnx.path([1, 4]))
    first = {name: op for name, op in ops.items() if "/layer.0/" in name and "MatMul" in op}
    deeper = {name: op for name, op in ops.items() if "/layer.3/" in name and "MatMul" in op}
    assert first and set(first.values()) == {"MatMul"}, first
    assert deeper and set(deeper.values()) <= {"MatMulInteger", "DynamicQuantizeMatMul"}, deeper
    assert "QAttention" in ops.values() and "Attention" in ops.values()  # block 1's attention float, the rest int8
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-5)
    assert not np.allclose(ours[4], theirs[4], atol=1e-6)


def test_a_changed_int8_recipe_is_a_fresh_graph_and_a_fresh_store(tiny_model_dir, tmp_path, monkeypatch):
    """The int8 vectors depend on the quantization recipe: a changed recipe must never reuse the old vectors."""
    from elasticir.encoders import precision

    ids = [str(i) for i in range(len(TEXTS))]
    before = ElasticEncoder(str(tiny_model_dir), precision="int8", onnx_cache=tmp_path / "onnx")
    before.encode(TEXTS, [2], batch_size=2, show_progress=False)
    graph_before = before._onnx.path([2])
    assert _int8_ops(graph_before)["/model/encoder/layer.1/intermediate/dense/MatMul_quant"] == "MatMulInteger"
    monkeypatch.setitem(precision.QUANTIZATION, "float_blocks", [0, 1])
    after = ElasticEncoder(str(tiny_model_dir), precision="int8", onnx_cache=tmp_path / "onnx")
    assert after.precision.tag != before.precision.tag
    assert store_key(after, ids, TEXTS, "", "float32") != store_key(before, ids, TEXTS, "", "float32")
    assert after._onnx.path([2]) != graph_before
    after.encode(TEXTS, [2], batch_size=2, show_progress=False)
    assert _int8_ops(after._onnx.path([2]))["/model/encoder/layer.1/intermediate/dense/MatMul"] == "MatMul"


def test_a_finished_int8_part_is_reused_only_under_the_same_recipe(tiny_model_dir, toy_root, tmp_path, monkeypatch):
    """Same run folder, same flags: the finished parts are reused; after the int8 recipe changed (a newer
    elasticir, another onnxruntime) they are recomputed, never shown with the old recipe's numbers."""
    from elasticir.encoders import precision
    from elasticir.runner import run

    config = _toy_config(tiny_model_dir, toy_root, tmp_path / "out", encoder_precisions=["int8"])
    first = run(config)
    with np.load(first.dir / "sts" / "toy-a" / "encoder-int8" / "pair_scores.npz") as scores:
        old_cosines = scores["cosines"]
    again = run(config)
    assert again.dir == first.dir and sorted(again.skipped) == ["toy-a", "toyir"]  # reused
    monkeypatch.setitem(precision.QUANTIZATION, "float_blocks", [0, 1])
    changed = run(config)
    assert changed.dir == first.dir and changed.skipped == []  # the run id names the flags, not the recipe
    with np.load(first.dir / "sts" / "toy-a" / "encoder-int8" / "pair_scores.npz") as scores:
        assert not np.array_equal(scores["cosines"], old_cosines)  # the new recipe's vectors
