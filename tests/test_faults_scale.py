"""Fault suite, scale flags: a retrieval depth beyond the corpus (or beyond 2^31), baseline cells the models lack,
an unreachable or oversubscribed Ray cluster, and flags that would otherwise be ignored or read inconsistently.

Every user mistake ends in exit status 2 and one `error:` line naming the flag or file and the fix, never a
traceback or a hang; every accepted extreme gives the numbers of its sensible equivalent (k beyond the corpus =
k = n_docs). The Ray cluster cases are marked slow.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_baselines import _tiny_bert
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.errors import ElasticIRError
from elasticir.index.dense import K_MAX, CellIndex, search_depth, tie_ranks
from elasticir.index.quantized import QuantizedIndex, check_precisions

HUGE_KS = [10**9, 2**31, 2**40]


def invoke(args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_error(result, pattern: str) -> None:
    """Exit status 2, exactly one `error:` line matching `pattern` (whitespace-insensitive), no traceback."""
    text = " ".join(result.output.split())
    assert result.exit_code == 2, f"exit {result.exit_code}:\n{result.output}"
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert result.output.count("error:") == 1, result.output
    assert re.search(pattern, text), f"{pattern!r} not in:\n{result.output}"


def run_dirs(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_dir() and not p.name.startswith("_")] if out.is_dir() else []


def sts_args(model, root, out, *extra):
    return ["eval", "sts", "--model", model, "--datasets", "toy-a", "--layers", "1,2", "--dims", "8,32",
            "--data-root", root, "--out", out, "--device", "cpu", *extra]


def ir_args(model, root, out, *extra):
    return ["eval", "retrieval", "--model", model, "--dataset", "toyir", "--layers", "1,2", "--dims", "8,32",
            "--data-root", root, "--out", out, "--device", "cpu", "--no-bm25", "--latency-texts", "0", *extra]


# --- 1. k beyond the corpus, for every index kind and precision ----------------------------------------------------
def test_search_depth_caps_at_the_corpus_and_refuses_nonsense():
    assert search_depth(10**12, 300) == 300 and search_depth(10, 300) == 10 and search_depth(10, 300, 16) == 26
    assert search_depth(K_MAX, 7, 17) == 7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ElasticIRError, match="--k"):
            search_depth(bad, 10)


@pytest.mark.parametrize("index, backend", [("flat", "torch"), ("flat", "faiss"), ("hnsw", "faiss"),
                                            ("sq8", "faiss"), ("IVF4,PQ4x4", "faiss"), ("IVF4,Flat", "faiss")])
def test_huge_k_equals_k_n_docs_for_every_index_kind(random_vectors, index, backend):
    docs, queries = random_vectors
    tie = tie_ranks([f"d{i:03d}" for i in range(len(docs))])
    exclude = np.array([3, -1, 7, -1, 0])  # the self-hit path asks one more
    cell = CellIndex(docs, 16, normalize=True, index=index, flat_backend=backend)
    want_s, want_i, _ = cell.search(queries, len(docs), tie, exclude)
    for k in HUGE_KS:
        started = time.perf_counter()
        scores, ids, _ = cell.search(queries, k, tie, exclude)
        cell.latency_ms(queries, k, samples=2)  # one query at a time, same depth (HNSW k=10^9 used to hang here)
        assert time.perf_counter() - started < 10, f"{index} k={k} took {time.perf_counter() - started:.1f} s"
        assert ids.shape == want_i.shape == (len(queries), len(docs))
        np.testing.assert_array_equal(ids, want_i)
        np.testing.assert_array_equal(scores, want_s)


@pytest.mark.parametrize("precision", ["float16", "int8", "binary", "binary+rescore"])
def test_huge_k_equals_k_n_docs_for_every_precision(random_vectors, precision):
    docs, queries = random_vectors
    tie = tie_ranks([f"d{i:03d}" for i in range(len(docs))])
    cell = QuantizedIndex(docs, 16, precision, normalize=True)
    want_s, want_i, _ = cell.search(queries, len(docs), tie)
    for k in HUGE_KS:
        scores, ids, _ = cell.search(queries, k, tie)
        cell.latency_ms(queries, k, samples=2, tie_rank=tie)
        np.testing.assert_array_equal(ids, want_i)
        np.testing.assert_array_equal(scores, want_s)


def test_bm25_asks_lucene_for_at_most_the_corpus(monkeypatch, tmp_path):
    """The depth handed to Lucene is capped like every dense index's (a Java int cannot hold 10^12)."""
    from elasticir.index import bm25

    asked = []

    class Hit:
        def __init__(self, docid, score):
            self.docid, self.score = docid, score

    class Searcher:
        def __init__(self, path):
            pass

        def set_bm25(self, k1, b):
            pass

        def batch_search(self, texts, ids, depth, threads):
            asked.append(depth)
            return {qid: [Hit(f"d{i}", 10.0 - i) for i in range(min(depth, 7))] for qid in ids}

        def close(self):
            pass

    class ArrayList(list):
        add = list.append

    monkeypatch.setattr(bm25, "_jclass", lambda name: Searcher if name.endswith("SimpleSearcher") else ArrayList)
    (tmp_path / "segments_1").write_text("")
    runs = {k: bm25.bm25_search(tmp_path, {"q1": "a", "d3": "b"}, k=k, remove_self_hits=True, n_docs=7)
            for k in (7, 10**12)}
    assert asked == [7, 7]
    assert runs[7] == runs[10**12] and len(runs[7]["q1"]) == 7 and "d3" not in runs[7]["d3"]


def test_k_beyond_2_31_is_refused_before_any_work(tiny_model_dir, toy_root, tmp_path):
    result = invoke(ir_args(tiny_model_dir, toy_root, tmp_path / "out", "--k", 2**31))
    assert_one_error(result, r"--k 2147483648: larger than 2147483647")
    assert not run_dirs(tmp_path / "out")


def test_huge_k_with_hnsw_precisions_and_funnels_gives_the_k_n_docs_numbers(tiny_encoder, toy_root, tmp_path):
    """The whole path (grid at every precision, HNSW, a funnel, latency probes): k = 10^9 returns promptly and
    every metric equals k = n_docs (7 documents)."""
    from elasticir.runner import RunConfig, run

    def metrics(k, index):
        config = RunConfig(sts=[], retrieval=["toyir"], layers=[1, 2], dims=[8, 32], index=index, k=k, bm25=False,
                           precisions=["float32", "float16", "int8", "binary", "binary+rescore"],
                           funnels=["1:8/5/2:32", "1:8:binary/5/2:32"], latency_texts=0, latency_samples=3,
                           data_root=str(toy_root), out=str(tmp_path / f"{index}-{k}"), show_progress=False)
        outcome = run(config, tiny_encoder)
        cells = outcome.cells.sort_values(["layer", "dim", "precision"]).reset_index(drop=True)
        funnels = pd.DataFrame([{"funnel": f.funnel, **f.metrics} for f in outcome.leaderboard.funnels])
        return cells[["layer", "dim", "precision", "nDCG@10", "RR@10", "R@100", "R@1000"]], funnels

    for index in ("hnsw",):  # the other index kinds: test_huge_k_equals_k_n_docs_for_every_index_kind
        started = time.perf_counter()
        huge = metrics(10**9, index)
        assert time.perf_counter() - started < 60
        exact = metrics(7, index)
        pd.testing.assert_frame_equal(huge[0], exact[0])
        pd.testing.assert_frame_equal(huge[1].sort_values("funnel").reset_index(drop=True),
                                      exact[1].sort_values("funnel").reset_index(drop=True))
        assert len(huge[0]) == 4 * 5 and len(huge[1]) >= 2


# --- 2. baseline YAML cells ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scale-members")
    return _tiny_bert(root / "small", 2, 16, 1, tiny_model_dir), _tiny_bert(root / "wide", 3, 32, 2, tiny_model_dir)


@pytest.mark.parametrize("text, expected", [
    ('"0:64": {wide}@1:8\n', r"line 1 \(key '0:64'\): cell \(0,64\) is not a grid cell: layer 0 is out of range"),
    ('"2:16": {small}\n"2:0": {wide}@1:8\n', r"line 2 \(key '2:0'\): cell \(2,0\) is not a grid cell"),
    ('"2:16": {small}@0:64\n', r"line 1 \(key '2:16'\): cell \(0,64\) is outside .*small"),
    ('"2:16": {small}@2:64\n', r"line 1 \(key '2:16'\): cell \(2,64\) is outside .*dim 64 is out of range"),
    ('"5:16": {small}@2:16\n', (r"line 1 \(key '5:16'\): baseline cell \(5,16\) is outside the elastic model "
                                r".* nothing to compare with: layer 5 is out of range")),
    ('"2:8": {small}@2:8\n"2:64": {wide}@2:32\n',
     r"line 2 \(key '2:64'\): baseline cell \(2,64\) is outside the elastic model .*dim 64 is out of range"),
])
def test_baseline_cells_outside_a_model_are_refused_before_any_member_is_evaluated(
        members, tiny_model_dir, toy_root, tmp_path, text, expected):
    small, wide = members
    spec = tmp_path / "baseline.yaml"
    spec.write_text(text.format(small=small, wide=wide))
    out = tmp_path / "out"
    result = invoke(["run", "--model", tiny_model_dir, "--sts", "toy-a", "--retrieval", "", "--no-bm25",
                     "--layers", "1,2", "--dims", "8,32", "--latency-texts", "0", "--data-root", toy_root,
                     "--out", out, "--device", "cpu", "--baseline", spec])
    assert_one_error(result, expected)
    assert not run_dirs(out), run_dirs(out)  # no member run, no half-written baseline folder


def test_baseline_cells_outside_explicit_dims_widen_the_grid_with_a_note(members, tiny_encoder, capsys):
    from elasticir.baselines import parse_spec, widen_dims
    from elasticir.runner import RunConfig

    small, wide = members
    spec_file = Path(small).parent / "widen.yaml"
    spec_file.write_text(f'"2:16": {small}\n"3:8": {wide}@1:8\n')
    config = RunConfig(layers=[1, 2], dims=[8, 32])
    widened = widen_dims(config, parse_spec(spec_file), tiny_encoder)
    assert widened.dims == [8, 16, 32] and widened.layers == [1, 2, 3]
    note = " ".join(capsys.readouterr().err.split())
    assert "added dims 16 (--dims 8,32) and layers 3 (--layers 1,2)" in note
    assert widen_dims(RunConfig(layers=[2], dims=[16, 32]), parse_spec(spec_file), tiny_encoder).layers == [2, 3]


def test_report_baseline_cells_outside_the_runs_grid_are_refused(members, tiny_model_dir, toy_root, tmp_path):
    small, _ = members
    out = tmp_path / "out"
    done = invoke(sts_args(tiny_model_dir, toy_root, out, "--latency-texts", "0"))
    assert done.exit_code == 0, done.output
    (run_dir,) = run_dirs(out)
    spec = tmp_path / "baseline.yaml"
    spec.write_text(f'"2:16": {small}\n')
    result = invoke(["report", run_dir, "--baseline", spec])
    assert_one_error(result, r"line 1 \(key '2:16'\): baseline cell \(2,16\) is outside the run .* dim 16 is not "
                             r"in the grid's dims \[8, 32\]\. Fix: re-run")
    assert sorted(p.name for p in run_dirs(out)) == [run_dir.name]


# --- 3-4. the Ray executor's cluster -------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_ray_address_fails_within_the_stated_time(tiny_model_dir, toy_root, tmp_path):
    port = _closed_port()
    started = time.perf_counter()
    result = invoke(sts_args(tiny_model_dir, toy_root, tmp_path / "out", "--executor", "ray", "--ray-address",
                             f"127.0.0.1:{port}"))
    assert time.perf_counter() - started < 30
    assert_one_error(result, rf"--ray-address 127\.0\.0\.1:{port}: no Ray cluster answers there \(probe of "
                             rf"127\.0\.0\.1:{port} failed within 5 s: .*\)\. Fix: start it with `ray start --head")
    assert not run_dirs(tmp_path / "out")


@pytest.mark.parametrize("address, expected", [
    ("nohost", r"--ray-address nohost: not a Ray address; write HOST:PORT"),
    ("ray://127.0.0.1:notaport", r"not a Ray address"),
])
def test_malformed_ray_address_is_one_error(tiny_model_dir, toy_root, tmp_path, address, expected):
    assert_one_error(invoke(sts_args(tiny_model_dir, toy_root, tmp_path / "out", "--executor", "ray",
                                     "--ray-address", address)), expected)


def test_unreachable_ray_address_env_names_the_variable(tiny_model_dir, toy_root, tmp_path):
    port = _closed_port()
    result = invoke(sts_args(tiny_model_dir, toy_root, tmp_path / "out", "--executor", "ray"),
                    env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert_one_error(result, rf"\$RAY_ADDRESS 127\.0\.0\.1:{port}: no Ray cluster answers there")


@pytest.mark.slow
def test_silent_ray_address_fails_in_the_stated_time():
    """A port that accepts the connection but never answers (a hung host, a server of another protocol): the probe
    gives up after its 5 s, not after Ray's minutes of retries."""
    import threading

    from elasticir.network import PROBE_TIMEOUT_S, probe_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        held = []
        threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
        port = server.getsockname()[1]
        started = time.perf_counter()
        with pytest.raises(ElasticIRError, match=rf"--ray-address 127\.0\.0\.1:{port}: no Ray cluster answers "
                                                 rf"there \(probe of 127\.0\.0\.1:{port} failed within 5 s: no answer"):
            probe_address(f"127.0.0.1:{port}")
        assert PROBE_TIMEOUT_S - 0.5 < time.perf_counter() - started < PROBE_TIMEOUT_S + 2


@pytest.fixture(scope="module")
def ray_two_cpus():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [3, 100])
def test_oversubscribed_workers_are_capped_and_finish(ray_two_cpus, tiny_encoder, toy_root, tmp_path, capsys,
                                                      workers):
    from elasticir.network import probe_address
    from elasticir.runner import RunConfig, run

    def cells(name, **extra):
        config = RunConfig(sts=["toy-a"], retrieval=["toyir"], layers=[1, 2], dims=[8, 32], bm25=False,
                           latency_texts=0, latency_samples=0, data_root=str(toy_root), out=str(tmp_path / name),
                           show_progress=False, **extra)
        table = run(config, tiny_encoder).cells.sort_values(["task", "layer", "dim"]).reset_index(drop=True)
        return table[["task", "layer", "dim", "spearman", "pearson", "nDCG@10", "R@100"]]

    import ray

    probe_address(ray.get_runtime_context().gcs_address)  # a live Ray cluster passes the probe
    started = time.perf_counter()
    remote = cells("ray", executor="ray", workers=workers)  # the run stops its actors; this session stays up
    assert time.perf_counter() - started < 300 and ray.is_initialized()
    note = " ".join(capsys.readouterr().err.split())
    assert f"--workers {workers} is more than the Ray cluster's 2 CPU(s) can place" in note
    assert "using 2 worker(s)" in note
    pd.testing.assert_frame_equal(remote, cells("local"), atol=1e-6)


# --- 5. flags that were ignored or read inconsistently -------------------------------------------------------------
@pytest.mark.parametrize("flags, expected", [
    (["--workers", "2"], r"--workers 2 is for the Ray executor and --executor is local; add --executor ray"),
    (["--executor", "local", "--workers", "2"], r"--workers 2 is for the Ray executor"),
    (["--ray-address", "127.0.0.1:6379"], r"--ray-address 127\.0\.0\.1:6379 is for the Ray executor"),
])
def test_ray_flags_without_the_ray_executor_are_refused(tiny_model_dir, toy_root, tmp_path, flags, expected):
    result = invoke(sts_args(tiny_model_dir, toy_root, tmp_path / "out", *flags))
    assert_one_error(result, expected)
    assert not run_dirs(tmp_path / "out")


@pytest.mark.parametrize("value, expected", [
    ("int8,int8", r"--precisions int8,int8: int8 listed twice; give each precision once"),
    ("float32,float32", r"--precisions float32,float32: float32 listed twice"),
    ("float32,int8,float32", r"float32 listed twice"),
    ("int8,,binary", r"--precisions 'int8,,binary': item 2 of the comma list is empty"),
    ("int8,", r"--precisions 'int8,': item 2 of the comma list is empty"),
    (" , ", r"item 1 of the comma list is empty"),
    ("", r"--precisions is empty"),
])
def test_precisions_with_duplicate_or_empty_items_are_one_error(tiny_model_dir, toy_root, tmp_path, value,
                                                                 expected):
    result = invoke(ir_args(tiny_model_dir, toy_root, tmp_path / "out", "--precisions", value))
    assert_one_error(result, expected)
    assert not run_dirs(tmp_path / "out")


def test_precisions_from_yaml_follow_the_same_rule():
    for value, expected in ((["int8", "int8"], "listed twice"), (["int8", ""], "an item is empty"), ([], "empty")):
        with pytest.raises(ElasticIRError, match=expected):
            check_precisions(value)
    assert check_precisions(["float32", "int8"]) == ["float32", "int8"]


def test_eval_sts_takes_latency_texts(tiny_model_dir, toy_root, tmp_path):
    out = tmp_path / "out"
    result = invoke(sts_args(tiny_model_dir, toy_root, out, "--latency-texts", "0"))
    assert result.exit_code == 0, result.output
    assert "encode latency probe" not in result.output
    (run_dir,) = run_dirs(out)
    board = json.loads((run_dir / "leaderboard.json").read_text())
    assert board["config"]["latency_texts"] == 0 and board["encode_latency"] == []
