import json

import pytest
from conftest import SENTENCES
from pydantic import ValidationError
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.errors import InputFormatError
from elasticir.io import atomic_write
from elasticir.results.schema import Leaderboard, load_leaderboard
from elasticir.runner import RunConfig, run


def config(root, out, **kw):
    kw = {"sts": ["toy-a", "toy-b"], "retrieval": [], "latency_texts": 0, **kw}
    return RunConfig(model="unused", data_root=str(root), out=str(out), show_progress=False, **kw)


def test_run_writes_cells_and_a_valid_leaderboard(tiny_encoder, tiny_data_root, tmp_path):
    outcome = run(config(tiny_data_root, tmp_path / "results", layers=[1, 4], dims=[8, 32], latency_texts=4),
                  tiny_encoder)
    cells = outcome.cells
    assert list(cells.columns[:4]) == ["task", "dataset", "layer", "dim"]
    assert {"spearman", "pearson"} <= set(cells.columns) and len(cells) == 2 * 2 * 2
    board = load_leaderboard(outcome.dir / "leaderboard.json")
    assert board == outcome.leaderboard  # schema round trip
    assert board.grid.layers == [1, 4] and board.model.weights_sha256 == tiny_encoder.info.weights_sha256
    assert [d.name for d in board.datasets] == ["toy-a", "toy-b"] and board.datasets[0].n_examples == len(SENTENCES)
    assert len(board.datasets[0].files[0].sha256) == 64 and board.library_versions["torch"]
    assert [m.layer for m in board.encode_latency] == [1, 4] and all(m.tokens_per_s > 0 for m in board.encode_latency)


def test_schema_refuses_inconsistent_results(tiny_encoder, tiny_data_root, tmp_path):
    board = run(config(tiny_data_root, tmp_path, layers=[1], dims=[8]), tiny_encoder).leaderboard
    data = json.loads(board.model_dump_json())
    data["results"][0]["layer"] = 9
    with pytest.raises(ValidationError, match="is out of range"):
        Leaderboard.model_validate(data)
    data["results"][0].update(layer=1, dataset="unknown")
    with pytest.raises(ValidationError, match="not listed"):
        Leaderboard.model_validate(data)


def test_rerun_skips_finished_datasets(tiny_encoder, tiny_data_root, tmp_path, monkeypatch):
    first = run(config(tiny_data_root, tmp_path, layers=[2], dims=[16]), tiny_encoder)

    def must_not_encode(*args, **kwargs):
        raise AssertionError("a finished dataset was encoded again")

    monkeypatch.setattr(tiny_encoder, "encode", must_not_encode)
    second = run(config(tiny_data_root, tmp_path, layers=[2], dims=[16]), tiny_encoder)
    assert second.dir == first.dir and second.skipped == ["toy-a", "toy-b"]
    assert second.cells.equals(first.cells)
    with pytest.raises(AssertionError, match="encoded again"):
        run(config(tiny_data_root, tmp_path, layers=[2], dims=[16], recompute=True), tiny_encoder)


def test_interrupted_run_keeps_finished_datasets(tiny_encoder, tiny_data_root, tmp_path):
    (tiny_data_root / "sts" / "toy-b" / "test.jsonl.gz").unlink()
    (tiny_data_root / "sts" / "toy-b" / "test.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n{')
    with pytest.raises(InputFormatError, match="line 2"):
        run(config(tiny_data_root, tmp_path, layers=[1], dims=[8]), tiny_encoder)
    finished = list(tmp_path.glob("*/sts/toy-a.csv"))
    assert len(finished) == 1 and not list(tmp_path.glob("*/leaderboard.json"))  # no half result presented as done


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "x" / "file.json"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_cli_eval_sts_and_clear_errors(tiny_model_dir, tiny_data_root, tmp_path):
    runner = CliRunner()
    args = ["eval", "sts", "--model", str(tiny_model_dir), "--layers", "1,2", "--dims", "8,32",
            "--datasets", "toy-a", "--data-root", str(tiny_data_root), "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "toy-a" in result.output and "leaderboard.json" in result.output
    bad = runner.invoke(app, args[:5] + ["9"] + args[6:])
    assert bad.exit_code == 2 and "layer 9 is out of range" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, args[:9] + ["nosuchset"] + args[10:])
    assert missing.exit_code == 2 and "unknown dataset 'nosuchset'" in missing.output


def test_cli_report_on_a_run(tiny_model_dir, tiny_data_root, tmp_path):
    runner = CliRunner()
    args = ["eval", "sts", "--model", str(tiny_model_dir), "--layers", "1,2,4", "--dims", "8,16,32",
            "--datasets", "toy-a,toy-b", "--data-root", str(tiny_data_root), "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "leaderboard.json").is_file()]
    result = runner.invoke(app, ["report", str(run_dir), "--baseline", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report" / "report.md").is_file() and list((run_dir / "report").rglob("heatmap_toy-a.png"))
    import pandas as pd

    significance = pd.read_csv(run_dir / "report" / "significance.csv")
    assert len(significance) == 3 * 3 * 2  # every cell of both datasets was tested
    assert set(significance.dataset) == {"toy-a", "toy-b"}
    assert (significance["diff"] == 0).all() and not significance.significant.any()  # a run against itself
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
