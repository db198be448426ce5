"""Baseline grids: cells from different models in one run directory, compared with an elastic run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.results.schema import load_leaderboard
from elasticir.runner import RunConfig, run


def _tiny_bert(folder: Path, layers: int, hidden: int, seed: int, tokenizer_from: Path) -> Path:
    """A random BERT of the given shape in sentence-transformers layout (tokenizer of the session tiny model)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=128)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("members")
    return (_tiny_bert(root / "small", 2, 16, 1, tiny_model_dir), _tiny_bert(root / "wide", 3, 32, 2, tiny_model_dir))


def _config(data_root: Path, out: Path, **extra) -> RunConfig:
    return RunConfig(sts=["toy-a", "toy-b"], retrieval=[], bm25=False, latency_texts=0, data_root=str(data_root),
                     out=str(out), show_progress=False, device="cpu", **extra)


def test_grid_cells_equal_each_member_evaluated_alone(two_models, tiny_data_root, tmp_path):
    from elasticir.baselines import evaluate, parse_spec

    small, wide = two_models
    spec_file = tmp_path / "baseline.yaml"
    spec_file.write_text(f'"2:16": {small}\n"1:8": {wide}@1:8\n')
    outcome = evaluate(parse_spec(spec_file), _config(tiny_data_root, tmp_path / "grid"))
    board = load_leaderboard(outcome.dir / "leaderboard.json")
    assert sorted({(r.layer, r.dim) for r in board.results}) == [(1, 8), (2, 16)]
    for model, cell in ((small, (2, 16)), (wide, (1, 8))):
        alone = run(_config(tiny_data_root, tmp_path / "alone", model=str(model), layers=[cell[0]], dims=[cell[1]],
                            pairs=[cell]))
        for result in alone.leaderboard.results:
            mine = next(r for r in board.results if (r.dataset, r.layer, r.dim) == (result.dataset, *cell))
            assert mine.metrics == pytest.approx(result.metrics, abs=1e-7)
            assert mine.member.weights_sha256 == alone.leaderboard.model.weights_sha256
            assert (mine.member.num_layers, mine.member.hidden_size) == (alone.leaderboard.model.num_layers,
                                                                        alone.leaderboard.model.hidden_size)
    _costs_are_each_members_own(outcome.dir, small, wide)


def _costs_are_each_members_own(grid_dir: Path, small: Path, wide: Path) -> None:
    """(2,16) costs what the 2 x 16 model costs at 2 layers; (1,8) what the 3 x 32 model costs at 1 layer."""
    from elasticir.encoders.cost import EncoderShape, encode_flops_per_token
    from elasticir.report.build import cost_table
    from elasticir.report.rundir import load_run

    costs = cost_table(load_run(grid_dir), []).set_index(["dataset", "layer", "dim"])
    for model, (layer, dim), own_layer in ((small, (2, 16), 2), (wide, (1, 8), 1)):
        row = costs.loc[("toy-a", layer, dim)]
        assert row.flops_per_token == encode_flops_per_token(EncoderShape.from_folder(model), own_layer,
                                                             int(row.seq_len))
    assert costs.loc[("toy-a", 1, 8)].params > costs.loc[("toy-a", 2, 16)].params  # width 32 vs 16


@pytest.mark.parametrize("text, expected", [
    ('"2:16": /no/such/model-folder\n', "line 1 (key '2:16'): cannot load model"),
    ('"2:16": {small}\n"3:16": {small}\n', "line 2 (key '3:16'): cell (3,16) is outside"),
    ('"2:16": {small}\n"2:8": {wide}\n"2:16": {wide}@2:16\n', "line 3 (key '2:16'): cell (2,16) already has a member"),
    ('"2-16": {small}\n', "line 1 (key '2-16'): '2-16' is not a cell"),
])
def test_yaml_mistakes_are_one_error_naming_the_line(two_models, tiny_data_root, tmp_path, text, expected):
    small, wide = two_models
    spec_file = tmp_path / "baseline.yaml"
    spec_file.write_text(text.format(small=small, wide=wide))
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--baseline", str(spec_file)])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_run_with_a_train_separate_baseline_reports_and_reuses(tiny_model_dir, tiny_data_root, tmp_path):
    from elasticir.training.trainer import TrainConfig, train_separate

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": f"sentence {i} about topic {i % 5}",
                                         "positive": f"another text on topic {i % 5}, number {i}"}) + "\n"
                             for i in range(16)))
    separate = tmp_path / "separate"
    train_separate(TrainConfig(base=str(tiny_model_dir), data=[str(pairs)], out=str(separate), max_steps=2,
                               batch_size=4, device="cpu"), [(2, 8), (3, 16)])
    assert json.loads((separate / "separate.json").read_text())["variant"] == "exact"
    args = ["run", "--model", str(tiny_model_dir), "--sts", "toy-a,toy-b", "--retrieval", "", "--no-bm25",
            "--latency-texts", "0", "--data-root", str(tiny_data_root), "--out", str(tmp_path / "results"),
            "--device", "cpu", "--baseline", str(separate)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "baseline: evaluated 4 member datasets" in first.output
    run_dir = next(p for p in (tmp_path / "results").iterdir() if p.name.startswith("tiny"))
    figures = {p.name for p in (run_dir / "report" / "figures").iterdir()}
    assert {"diff_toy-a.png", "diff_mean.png", "pareto_toy-a_flops.png"} <= figures
    grid_dir = next(p for p in (tmp_path / "results").iterdir() if p.name.startswith("baseline-"))
    board = load_leaderboard(grid_dir / "leaderboard.json")
    shas = {r.member.weights_sha256 for r in board.results}
    assert len(shas) == 2 and all(len(s) == 64 for s in shas)
    report = (run_dir / "report" / "report.md").read_text()
    assert all(sha[:12] in report for sha in shas)  # the members are named in the report
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "baseline: evaluated 0 member datasets, reused 4" in second.output
    assert "reused finished results for: toy-a, toy-b" in second.output
    label = run_dir.name.rsplit("-", 1)[0]
    third = CliRunner().invoke(app, ["report", str(run_dir), "--baseline", str(separate), "--reference", label,
                                     "--out", str(tmp_path / "report2")])
    assert third.exit_code == 0, third.output
    paper = (tmp_path / "report2" / "tables" / "paper.md").read_text()
    assert f"{label} (reference)" in paper and "| separate | (2,8) |" in paper
    assert (tmp_path / "report2" / "tables" / "paper.tex").is_file()


def test_reproduce_a_baseline_grid(two_models, tiny_data_root, tmp_path):
    from elasticir.baselines import evaluate, parse_spec
    from elasticir.reproduce import reproduce

    small, wide = two_models
    spec_file = tmp_path / "baseline.yaml"
    spec_file.write_text(f'"2:16": {small}\n"3:32": {wide}\n')
    outcome = evaluate(parse_spec(spec_file), _config(tiny_data_root, tmp_path / "grid"))
    assert reproduce(outcome.dir / "leaderboard.json", out=tmp_path / "again") == []
    from elasticir.results.portable import make_portable
    from elasticir.results.schema import Leaderboard

    portable = make_portable(json.loads((outcome.dir / "leaderboard.json").read_text()))
    Leaderboard.model_validate(portable)
    assert str(tmp_path) not in json.dumps(portable) and str(small.parent) not in json.dumps(portable)
    again = next((tmp_path / "again").glob("baseline-*"))
    assert json.loads((again / "leaderboard.json").read_text())["model"]["weights_sha256"] == \
        json.loads((outcome.dir / "leaderboard.json").read_text())["model"]["weights_sha256"]


def test_full_width_members_fill_their_layer_row(two_models, tmp_path):
    import shutil

    from elasticir.baselines import parse_spec
    from elasticir.cells import Cell

    small, wide = two_models
    folder = tmp_path / "separate-fw"
    shutil.copytree(small, folder / "L2-full-width")
    shutil.copytree(wide, folder / "L3-full-width")
    (folder / "separate.json").write_text(json.dumps({"variant": "full-width", "members": [
        {"folder": "L2-full-width", "cell": [2, 16]}, {"folder": "L3-full-width", "cell": [3, 32]}]}))
    members = parse_spec(folder).expand([8, 16, 32])
    assert sorted((m.cell, Path(m.model).name) for m in members) == [
        (Cell(2, 8), "L2-full-width"), (Cell(2, 16), "L2-full-width"),
        (Cell(3, 8), "L3-full-width"), (Cell(3, 16), "L3-full-width"), (Cell(3, 32), "L3-full-width")]


def test_mean_significance_over_one_dataset_is_that_datasets_test(two_models, tiny_data_root, tmp_path):
    """The stratified bootstrap of the mean reduces to the per-dataset paired bootstrap for one dataset."""
    from elasticir.evaluation.significance import compare_mean, compare_runs
    from elasticir.report.rundir import load_run

    small, wide = two_models
    runs = [load_run(run(_config(tiny_data_root, tmp_path, model=str(m), layers=[1, 2], dims=[8, 16])).dir)
            for m in (small, wide)]
    single = compare_runs(*runs, datasets=["toy-a"], n_resamples=500).set_index(["layer", "dim"])
    mean = compare_mean(*runs, datasets=["toy-a"], n_resamples=500).set_index(["layer", "dim"])
    assert len(mean) == 4
    assert mean["p"].to_numpy() == pytest.approx(single.loc[mean.index, "p"].to_numpy())
    assert mean["diff"].to_numpy() == pytest.approx(single.loc[mean.index, "diff"].to_numpy())
    itself = compare_mean(runs[0], runs[0], n_resamples=500)
    assert (itself["diff"] == 0).all() and (itself["p"] == 1).all()


def test_members_are_compared_at_float32_cells_when_the_run_has_precisions(two_models, tmp_path):
    """An elastic run with --precisions: its baseline grid holds one float32 point per cell, no duplicates."""
    from elasticir.baselines import evaluate, parse_spec
    from tests.test_retrieval import write_beir

    write_beir(tmp_path / "data" / "beir" / "toyir")
    small, _ = two_models
    spec_file = tmp_path / "baseline.yaml"
    spec_file.write_text(f'"2:16": {small}\n')
    config = RunConfig(sts=[], retrieval=["toyir"], bm25=False, latency_texts=0, latency_samples=0,
                       data_root=str(tmp_path / "data"), out=str(tmp_path / "grid"), show_progress=False,
                       device="cpu", precisions=["float32", "binary"])
    board = load_leaderboard(evaluate(parse_spec(spec_file), config).dir / "leaderboard.json")
    assert [(r.dataset, r.layer, r.dim, r.precision) for r in board.results] == [("toyir", 2, 16, None)]
