"""Training end to end on the tiny BERT: data readers, every method's trainer, save -> load, resume, baselines."""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_sts
from sentence_transformers import SentenceTransformer
from test_retrieval import write_beir
from transformers import TrainerCallback
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.encoders import ElasticEncoder, truncate
from elasticir.errors import ElasticIRError, InputFormatError
from elasticir.runner import RunConfig, run
from elasticir.training.data import load_training_data
from elasticir.training.trainer import METHODS, TrainConfig, train, train_separate

TOPICS = ["guitar music", "cats sleeping", "stock markets", "cooking onions", "planes flying", "kids swimming"]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


@pytest.fixture
def triplets(tmp_path):
    rows = [{"anchor": f"a sentence {i} on {topic}", "positive": f"text {i} about {topic}",
             "negative": f"something else entirely {i}"} for i in range(4) for topic in TOPICS]
    return write_jsonl(tmp_path / "data" / "pairs" / "toy" / "train.jsonl.gz", rows)


def config(tiny_model_dir, data, out, **kw) -> TrainConfig:
    return TrainConfig(base=str(tiny_model_dir), data=[str(d) for d in data], out=str(out),
                       **{"max_steps": 2, "batch_size": 4, "device": "cpu", **kw})


def test_pair_files_scored_pairs_and_mixing(tmp_path, triplets):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": "a", "positive": "b"}])
    data = load_training_data([str(triplets), str(pairs)])
    assert data.kind == "pairs" and data.rows == 25
    assert {name: ds.column_names for name, ds in data.datasets.items()} == {
        "toy": ["anchor", "positive", "negative"], "pairs": ["anchor", "positive"]}
    scored = write_sts(tmp_path / "data" / "sts" / "stsbenchmark" / "train.jsonl.gz")
    data = load_training_data([str(scored)])
    assert data.kind == "scored" and data.datasets["stsbenchmark"]["score"][0] == 4.2
    assert any("low-resource" in note for note in data.notes)
    with pytest.raises(InputFormatError, match="mixes scored pairs"):
        load_training_data([str(scored), str(pairs)])


@pytest.mark.parametrize("rows, message", [
    ([{"anchor": "a", "positive": "b"}, {"anchor": "a", "positive": ""}], "line 2: 'positive' is empty"),
    ([{"anchor": "a", "positive": "b"}, {"anchor": "a"}], "line 2: 'positive' is missing"),
    ([{"query": "a", "doc": "b"}], "line 1: fields"),
    ([{"sentence1": "a", "sentence2": "b", "score": "high"}], "line 1: score 'high' is not a number"),
    ([], "no rows"),
])
def test_bad_training_files_name_file_and_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl.gz", rows)
    with pytest.raises(InputFormatError, match=message):
        load_training_data([str(path)])


def test_evaluation_sets_and_missing_data_are_refused(tmp_path):
    sick = write_sts(tmp_path / "data" / "sts" / "sickr" / "test.jsonl.gz")
    with pytest.raises(InputFormatError, match="evaluation set"):
        load_training_data([str(sick)])
    with pytest.raises(InputFormatError, match="evaluation set"):
        load_training_data(["sts/sickr/test.jsonl.gz"], root=tmp_path / "data")
    with pytest.raises(ElasticIRError, match="not found"):
        load_training_data(["nowhere.jsonl"], root=tmp_path / "data")
    write_beir(tmp_path / "data" / "beir" / "toyir")  # test qrels only
    with pytest.raises(InputFormatError, match="qrels/train.tsv"):
        load_training_data(["toyir"], root=tmp_path / "data")


def test_retrieval_groups_from_train_qrels_with_mined_negatives(tmp_path, tiny_model_dir):
    folder = write_beir(tmp_path / "data" / "beir" / "toyir")
    shutil.copy(folder / "qrels" / "test.tsv", folder / "qrels" / "train.tsv")
    data = load_training_data(["toyir"], root=tmp_path / "data", negatives=2, miner="model",
                              model=str(tiny_model_dir))
    rows = data.datasets["toyir"].to_list()
    assert data.datasets["toyir"].column_names == ["anchor", "positive", "negative_1", "negative_2"]
    # q1 -> d1, q2 -> d2 and d9 (graded), d3 -> d3 (d4 has grade 0: never a positive)
    assert [row["anchor"] for row in rows] == ["who plays the guitar", "sleeping cat", "sleeping cat",
                                                 "Markets Stock markets fell sharply on Monday."]
    for row in rows:  # negatives: not relevant to the query, not empty, distinct
        assert row["positive"] not in (row["negative_1"], row["negative_2"])
        assert row["negative_1"] != row["negative_2"] and row["negative_1"] and row["negative_2"]
    cats = "Cats The cat sleeps on the warm sofa."
    assert all(cats not in (row["negative_1"], row["negative_2"]) for row in rows[1:3])
    plain = load_training_data(["toyir"], root=tmp_path / "data", negatives=0)
    assert plain.datasets["toyir"].column_names == ["anchor", "positive"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_and_loads(tmp_path, tiny_model_dir, triplets, method):
    dims = [8, 16, 32] if method in ("mrl", "srl-grid", "2dmse") else None  # srl, sortednet: the pair list
    folder = train(config(tiny_model_dir, [triplets], tmp_path / method, method=method, dims=dims))
    meta = json.loads((folder / "elastic.json").read_text())
    assert meta["method"] == method and meta["config"]["max_steps"] == 2
    assert meta["log_history"] and meta["data"]["files"][0]["sha256"]
    assert not (folder / "checkpoints").exists()
    # the folder loads in sentence-transformers as-is, and our encoder gives the same full-cell embeddings
    texts = ["a man plays a guitar", "markets fell", "kids are swimming in a pool"]
    st = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    encoder = ElasticEncoder(str(folder), device="cpu")
    pooled = encoder.encode(texts, [encoder.num_layers], show_progress=False)[encoder.num_layers]
    assert encoder.info.normalize and encoder.info.pooling == "mean" and encoder.info.max_length == 64
    np.testing.assert_allclose(truncate(pooled, 32, normalize=True), st, atol=1e-5)
    assert encoder.info.training["method"] == method
    trained = {tuple(cell) for cell in meta["trained_cells"]}
    expected = {"plain": {(4, 32)}, "mrl": {(4, 8), (4, 16), (4, 32)},
                "srl": {(1, 4), (2, 8), (3, 16), (4, 32)},
                "sortednet": {(1, 4), (2, 8), (3, 16), (4, 32)}}.get(method)
    if expected:
        assert trained == expected
    else:  # the grid methods: every layer x default dim
        assert trained == {(layer, dim) for layer in range(1, 5) for dim in (8, 16, 32)}


def test_training_changes_weights_and_reuses_a_finished_folder(tmp_path, tiny_model_dir, triplets):
    cfg = config(tiny_model_dir, [triplets], tmp_path / "srl", lr=1e-3)
    folder = train(cfg)
    before = SentenceTransformer(str(tiny_model_dir), device="cpu")[0].auto_model.embeddings.word_embeddings.weight
    after = SentenceTransformer(str(folder), device="cpu")[0].auto_model.embeddings.word_embeddings.weight
    assert not torch.equal(before, after)
    stamp = (folder / "elastic.json").stat().st_mtime_ns
    assert train(cfg) == folder and (folder / "elastic.json").stat().st_mtime_ns == stamp  # reused
    with pytest.raises(ElasticIRError, match="differs in: lr"):
        train(cfg.model_copy(update={"lr": 2e-3}))
    train(cfg.model_copy(update={"lr": 2e-3, "recompute": True}))
    assert json.loads((folder / "elastic.json").read_text())["config"]["lr"] == 2e-3


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, tiny_model_dir, triplets):
    cfg = config(tiny_model_dir, [triplets], tmp_path / "resumed", max_steps=4, checkpoint_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "resumed" / "elastic.json").exists()  # not presented as finished
    folder = train(cfg)
    meta = json.loads((folder / "elastic.json").read_text())
    assert meta["resumed_from"] == "checkpoint-2" and meta["log_history"][-1]["step"] == 4
    straight = train(cfg.model_copy(update={"out": str(tmp_path / "straight")}))
    resumed = SentenceTransformer(str(folder), device="cpu").encode(TOPICS)
    np.testing.assert_allclose(resumed, SentenceTransformer(str(straight), device="cpu").encode(TOPICS), atol=1e-5)


def test_separate_baselines_are_small_models_trained_at_their_cell(tmp_path, tiny_model_dir, triplets):
    base = config(tiny_model_dir, [triplets], tmp_path / "separate")
    exact = train_separate(base, [(1, 8), (2, 16)])
    assert [f.name for f in exact] == ["L1_d8", "L2_d16"]  # Cell.slug, the one file-name form
    for folder, (layer, dim) in zip(exact, [(1, 8), (2, 16)]):
        encoder = ElasticEncoder(str(folder), device="cpu")
        assert encoder.num_layers == layer and encoder.info.trained_pairs == [(layer, dim)]
        assert json.loads((folder / "elastic.json").read_text())["trained_cells"] == [[layer, dim]]
    wide = train_separate(base, [(1, 8), (1, 16)], variant="full-width")
    assert [f.name for f in wide] == ["L1-full-width"]
    assert json.loads((wide[0] / "elastic.json").read_text())["trained_cells"] == [[1, 32]]
    with pytest.raises(ElasticIRError, match="layers 1..4"):
        train_separate(base, [(5, 8)])


def test_trained_pairs_drive_the_evaluation_grid(tmp_path, tiny_model_dir, triplets, tiny_data_root):
    folder = train(config(tiny_model_dir, [triplets], tmp_path / "srl", pairs=[(1, 4), (2, 12), (4, 32)]))
    outcome = run(RunConfig(model=str(folder), sts=["toy-a"], retrieval=[], out=str(tmp_path / "results"),
                            data_root=str(tiny_data_root), device="cpu", latency_texts=0, show_progress=False))
    board = outcome.leaderboard
    assert board.grid.pairs == [(1, 4), (2, 12), (4, 32)]
    assert {4, 12} <= set(board.grid.dims) and board.model.training["method"] == "srl"


def test_train_cli_with_yaml_config(tmp_path, tiny_model_dir, triplets):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(f"method: mrl\nbase: {tiny_model_dir}\nmax_steps: 2\nbatch_size: 4\ndims: [8, 32]\n")
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_file), "--data", str(triplets),
                                      "--out", str(tmp_path / "m"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "elastic.json").read_text())
    assert meta["method"] == "mrl" and meta["trained_cells"] == [[4, 8], [4, 32]]
    bad = CliRunner().invoke(app, ["train", "--base", str(tiny_model_dir), "--data", str(triplets),
                                   "--out", str(tmp_path / "x"), "--method", "nope"])
    assert bad.exit_code == 2 and "method" in bad.output


def test_train_cli_records_the_preset_and_the_overrides(tmp_path, tiny_model_dir, triplets):
    result = CliRunner().invoke(app, [
        "train", "--preset", "starbucks-retrieval", "--pooling", "mean", "--negatives", "1", "--base",
        str(tiny_model_dir), "--data", str(triplets), "--out", str(tmp_path / "r"), "--device", "cpu",
        "--max-steps", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r" / "elastic.json").read_text())
    assert meta["recipe"] == {"preset": "starbucks-retrieval", "overrides": {"pooling": "mean", "negatives": 1}}
    assert meta["loss"]["loss"] == "MultipleNegativesRankingLoss" and meta["loss"]["normalize"] is False
    assert (meta["loss"]["kl"], meta["loss"]["temperature"], meta["config"]["similarity"]) == ("scores", 1.0, "dot")


def test_train_cli_takes_cls_pooling_from_the_preset(tmp_path, tiny_model_dir, triplets):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(f"preset: starbucks-retrieval\nbase: {tiny_model_dir}\nmax_steps: 1\nbatch_size: 4\n")
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_file), "--data", str(triplets),
                                      "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert ElasticEncoder(str(tmp_path / "c"), device="cpu").info.pooling == "cls"  # saved with the model


@pytest.mark.parametrize("flags, message", [
    (["--preset", "starbucks-retrieval", "--similarity", "cosine"], "base loss would score cosines while the KL"),
    (["--kl", "scores", "--kl-point", "pooled"], "kl_point applies to embedding KLs"),
    (["--method", "srl", "--schedule", "cyclic"], "schedule is not used by method 'srl'"),
    (["--preset", "nope"], "preset"),
])
def test_train_cli_refuses_disagreeing_choices_before_any_work(tmp_path, tiny_model_dir, triplets, flags, message):
    result = CliRunner().invoke(app, ["train", *flags, "--base", str(tiny_model_dir), "--data", str(triplets),
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
