"""all-MiniLM-L6-v2 on SciFact must reproduce MTEB's published numbers; BM25 flat must reproduce pyserini's 2CR."""

import pytest

from elasticir.errors import ElasticIRError
from elasticir.runner import RunConfig, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # minutes on a 2-core CPU: CI's second call

MTEB = {"nDCG@10": 0.64508, "R@100": 0.925, "RR@10": 0.60472}  # MTEB results, max length 256
PYSERINI_BM25_FLAT = {"nDCG@10": 0.6789, "R@100": 0.9253}  # two-click reproduction, k1=0.9 b=0.4


def test_scifact_full_cell_and_bm25(shared_data, tmp_path):
    from elasticir.index.bm25 import find_java

    try:
        find_java()
        bm25 = True
    except ElasticIRError:
        bm25 = False
    outcome = run(RunConfig(sts=[], retrieval=["scifact"], layers=[2, 6], dims=[64, 384], bm25=bm25,
                            data_root=str(shared_data), out=str(tmp_path), show_progress=False, latency_samples=5))
    full = outcome.cells.query("layer == 6 and dim == 384").iloc[0]
    for metric, published in MTEB.items():
        assert abs(full[metric] - published) <= 0.002, (metric, full[metric], published)
    assert outcome.cells.query("layer == 2 and dim == 64")["nDCG@10"].item() < full["nDCG@10"]
    if not bm25:
        pytest.skip("no Java 21+ found: BM25 half of this test not run")
    (baseline,) = outcome.leaderboard.baselines
    for metric, published in PYSERINI_BM25_FLAT.items():
        assert abs(baseline.metrics[metric] - published) <= 0.002, (metric, baseline.metrics[metric], published)
