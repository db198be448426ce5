"""bench_encode --precisions: the speed target goes to the fastest precision that keeps the metrics, not the fastest."""

import importlib.util
from pathlib import Path

import numpy as np


def load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encode.py"
    spec = importlib.util.spec_from_file_location("bench_encode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_rows_target_the_fastest_precision_within_the_metric_tolerance():
    bench = load_bench()
    # per-repeat fastest seconds: int8 is fastest (4x ST), bfloat16 2.5x, float32 1x; the ST int8 stand-in 3x
    seconds = {"st": 4.0, "st_int8": 4.0 / 3, "float32": 4.0, "bfloat16": 1.6, "int8": 1.0}
    fast_t = {f"STS/{role}": [value, value * 1.1, value] for role, value in seconds.items()}
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(6, 8))
    outputs = {f"STS/{role}": reference + (0 if role in ("st", "float32") else 0.01) * rng.normal(size=(6, 8))
               for role in seconds}
    metrics = {"float32": {"stsbenchmark spearman": 0.82}, "bfloat16": {"stsbenchmark spearman": 0.821},
               "int8": {"stsbenchmark spearman": 0.81}}  # int8 loses 0.01 > 0.005: not eligible

    rows, results = bench.precision_rows({"STS": ["t"] * 6}, fast_t, fast_t, outputs, metrics)

    assert results["eligible_precisions"] == ["float32", "bfloat16"]
    assert results["STS"]["fastest_eligible"] == "bfloat16"
    verdicts = {label: ok for label, _, _, _, ok in rows if ok is not None}
    assert verdicts["STS: elasticir bfloat16 (fastest eligible) / st throughput"] is True  # 2.5 >= 2
    assert verdicts["STS: elasticir bfloat16 (fastest eligible) / st_int8 throughput"] is False  # 2.5 / 3 < 1
    assert verdicts["full cell stsbenchmark spearman: int8 0.8100 - float32 0.8200"] is False
    ratio = results["STS"]["throughput_ratio"]["bfloat16 over st"]
    assert abs(ratio["median"] - 2.5) < 1e-9 and abs(ratio["best"] - 2.5) < 1e-9
    assert results["STS"]["min_cosine_vs_st"]["float32"] > 0.99999 > results["STS"]["min_cosine_vs_st"]["int8"]

    _, without_metrics = bench.precision_rows({"STS": ["t"] * 6}, fast_t, None, outputs, None)
    assert without_metrics["STS"]["fastest_eligible"] == "int8"
    assert "throughput_ratio_cpu_seconds" in without_metrics["STS"]
    assert without_metrics["STS"]["throughput_ratio_cpu_seconds"] == {}


def test_saved_inputs_name_no_path_of_this_machine(tiny_model_dir, tmp_path):
    """The JSON names the model by hub id / folder name and weights sha256, data by path under the data root
    and sha256: a committed result must not carry /home/..., /tmp/... of the machine that made it."""
    import hashlib
    import json

    from elasticir.encoders import ElasticEncoder
    from tests.conftest import write_sts

    bench = load_bench()
    sts_file = write_sts(tmp_path / "data" / "sts" / "stsbenchmark" / "test.jsonl.gz")
    record = {"model": bench.portable_model(ElasticEncoder(str(tiny_model_dir)).info.as_dict()),
              "data": [bench.data_file_record(sts_file)]}
    text = json.dumps(record)
    assert str(tmp_path) not in text and str(tiny_model_dir) not in text
    assert record["data"][0]["path"] == "sts/stsbenchmark/test.jsonl.gz"
    assert record["data"][0]["sha256"] == hashlib.sha256(sts_file.read_bytes()).hexdigest()
    assert record["model"]["path"] == tiny_model_dir.name and record["model"]["weights_sha256"]
