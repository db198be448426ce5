"""The real all-MiniLM-L6-v2 on the real STS data must reproduce MTEB's published numbers at its full cell."""

import pytest

from elasticir.runner import RunConfig, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # minutes on a 2-core CPU: CI's second call

# MTEB results repository, mteb 1.12.75, revision 8b3219a9; STS12 text differs slightly.
PUBLISHED = {"stsbenchmark": (0.82032, 0.0005), "sickr": (0.77582, 0.0005), "sts12": (0.72369, 0.005)}


@pytest.fixture(scope="module")
def minilm():
    from elasticir.encoders import ElasticEncoder

    return ElasticEncoder("all-MiniLM-L6-v2", device="cpu")


def test_full_cell_reproduces_mteb(minilm, shared_data, tmp_path):
    outcome = run(RunConfig(sts=list(PUBLISHED), retrieval=[], data_root=str(shared_data), out=str(tmp_path), layers=[3, 6],
                            dims=[64, 384], show_progress=False), minilm)
    full = outcome.cells.query("layer == 6 and dim == 384").set_index("dataset")["spearman"]
    for name, (published, tolerance) in PUBLISHED.items():
        assert abs(full[name] - published) <= tolerance, (name, full[name], published)
    # smaller cells of a model never trained for them are worse, and the run records what it read
    small = outcome.cells.query("layer == 3 and dim == 64").set_index("dataset")["spearman"]
    assert (small < full).all()
    checksums = {f.sha256 for d in outcome.leaderboard.datasets for f in d.files}
    assert "0757a91e692a77fd26e03dbc4f88d0c7bb0697b8d1e2713570e433d0410f9a39" in checksums  # stsbenchmark test
