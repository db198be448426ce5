"""The run config split by concern keeps every run id, recorded config and old YAML file as they were.

The run-id rule of the flat config (before the split) is written out here on its own (`flat_rule_numeric`), so
the config's parts are checked against it rather than against themselves: on every committed leaderboard, and
on fresh runs of `run`, `eval sts` and `eval retrieval` with the tiny model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import write_sts
from test_retrieval import write_beir
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.cli_support import load_config
from elasticir.config import RunConfig, leaf_fields
from elasticir.errors import ElasticIRError
from elasticir.results.store import run_id

REPO = Path(__file__).resolve().parents[1]
LEADERBOARDS = sorted([*REPO.glob("leaderboards/*.json"), *REPO.glob("results/examples/**/leaderboard*.json"),
                       *REPO.glob("results/examples/**/leaderboards/*.json")])


def flat_rule_numeric(config: dict, model: dict, grid: dict) -> dict:
    """The numeric config as the flat RunConfig built it: the loaded model and grid, the retrieval settings,
    and each optional key only when not default (missing keys of older records: their defaults)."""
    numeric = {"weights_sha256": model["weights_sha256"], "pooling": model["pooling"],
               "normalize": model["normalize"], "max_length": model["max_length"],
               "dtype": "torch." + model["dtype"], "layers": list(grid["layers"]), "dims": list(grid["dims"]),
               "retrieval": {"index": config.get("index", "flat"), "flat_backend": config.get("flat_backend", "torch"),
                             "k": config.get("k", 1000), "normalize": config.get("normalize"),
                             "query_prompt": config.get("query_prompt"), "doc_prompt": config.get("doc_prompt")}}
    if config.get("prompt_name") is not None:
        numeric["prompt_name"] = config["prompt_name"]
    if config.get("store_dtype", "float32") != "float32":
        numeric["store_dtype"] = config["store_dtype"]
    if config.get("precisions", ["float32"]) != ["float32"]:
        numeric["retrieval"]["precisions"] = list(config["precisions"])
    if config.get("funnels"):
        numeric["retrieval"]["funnels"] = list(config["funnels"])
    if config.get("limit_queries") is not None or config.get("limit_corpus") is not None:
        numeric["subset"] = {"limit_queries": config.get("limit_queries"), "limit_corpus": config.get("limit_corpus"),
                             "seed": config.get("seed", 0)}
    return numeric


def resolved(board: dict) -> dict:
    """What the runner adds from the loaded model and the grid, read back from a leaderboard."""
    model, grid = board["model"], board["grid"]
    return {"weights_sha256": model["weights_sha256"], "pooling": model["pooling"], "normalize": model["normalize"],
            "max_length": model["max_length"], "dtype": "torch." + model["dtype"], "layers": grid["layers"],
            "dims": grid["dims"]}


def recorded_config(board: dict) -> RunConfig:
    """The recorded (flat) config rebuilt as `reproduce` rebuilds it."""
    return RunConfig(**{k: v for k, v in board["config"].items() if k not in ("numeric", "baseline")})


def test_committed_leaderboards_keep_their_run_ids_and_recorded_configs():
    boards = [json.loads(path.read_text()) for path in LEADERBOARDS]
    boards = [b for b in boards if "baseline_grid" not in b["config"]]  # assembled grids: ids from their members
    assert len(boards) >= 8
    for board in boards:
        config = recorded_config(board)
        numeric = config.numeric(resolved(board))
        assert numeric == board["config"]["numeric"] == flat_rule_numeric(board["config"], board["model"], board["grid"])
        assert run_id(board["model"]["name"], numeric) == board["run_id"]
        # the flat dump keeps every recorded key, its value and its place (newer fields only add keys)
        dumped = config.model_dump(mode="json")
        recorded = {k: v for k, v in board["config"].items() if k not in ("numeric", "baseline")}
        assert [k for k in dumped if k in recorded] == list(recorded)
        assert {k: dumped[k] for k in recorded} == recorded


@pytest.fixture
def toy(tmp_path, tiny_model_dir):
    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_beir(root / "beir" / "toyir")
    return {"--model": tiny_model_dir, "--data-root": root, "--layers": "1,2", "--dims": "8,32",
            "--latency-texts": "0"}


def _invoke(*args) -> dict:
    """Run a command; its leaderboard."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    (board,) = out.glob("*/leaderboard.json")
    return json.loads(board.read_text())


@pytest.mark.parametrize("command, extra", [
    (["run", "--sts", "toy-a", "--retrieval", "toyir", "--no-bm25", "--no-report"],
     ["--precisions", "int8", "--limit-queries", "3", "--seed", "2", "--store-dtype", "float16"]),
    (["eval", "sts", "--datasets", "toy-a"], ["--pairs", "1:8,2:32", "--limit-queries", "4", "--seed", "3"]),
    (["eval", "retrieval", "--dataset", "toyir", "--no-bm25"], ["--k", "5", "--normalize", "--query-prompt", "q: "]),
    (["eval", "retrieval", "--dataset", "toyir", "--no-bm25"], []),
], ids=["run", "eval-sts", "eval-retrieval", "eval-retrieval-defaults"])
def test_fresh_runs_get_the_flat_rule_run_id(toy, tmp_path, command, extra):
    flags = [str(part) for pair in toy.items() for part in pair]
    board = _invoke(*command, *flags, *extra, "--out", tmp_path / "out")
    expected = flat_rule_numeric(board["config"], board["model"], board["grid"])
    assert board["config"]["numeric"] == expected
    assert board["run_id"] == run_id(board["model"]["name"], expected)
    if extra:  # the options that were new to the command reached the config, so they can change the id
        assert board["run_id"] != _invoke(*command, *flags, "--out", tmp_path / "plain")["run_id"]


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "240"})  # no option name cut short
    assert result.exit_code == 0, result.output
    return result.output


def _flags(kind=RunConfig, without=()) -> set[str]:
    """The flag of every command-line field of the config, outside the groups/fields in `without`."""
    skip = {leaf for name in without for leaf in (leaf_fields(RunConfig.model_fields[name].annotation)
                                                  if name in RunConfig.model_fields else (name,))}
    return {(field.json_schema_extra or {}).get("flags", ["--" + name.replace("_", "-")])[0]
            for name, field in leaf_fields(kind).items()
            if name not in skip and (field.json_schema_extra or {}).get("cli") is not False}


@pytest.mark.parametrize("command, without, must", [
    (("run",), (), {"--query-prompt", "--doc-prompt", "--normalize", "--funnels", "--sts", "--retrieval",
                    "--baseline", "--smoke", "--report", "--config", "-m"}),
    (("eval", "sts"), ("datasets", "search"), {"--limit-queries", "--pairs", "--seed", "--datasets", "--smoke"}),
    (("eval", "retrieval"), ("datasets",), {"--dataset", "--query-prompt", "--bm25", "--shard", "--store-dtype"}),
    (("eval", "funnel"), ("datasets", "funnels"), {"--pooling", "--max-length", "--backend", "--executor",
                                                   "--store-dtype", "--funnel", "--dataset"}),
])
def test_every_command_lists_every_option_that_applies(command, without, must):
    text = _help(*command)
    listed = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", text))
    assert must <= listed, must - listed
    assert _flags(without=without) <= listed, _flags(without=without) - listed
    if "search" in without:
        assert "--index" not in listed and "--query-prompt" not in listed  # retrieval-only options stay off STS


def test_help_is_literal_text():
    assert "[distributed]" in _help("eval", "sts")
    assert "[distributed]" in _help("run")


def test_old_flat_yaml_loads_and_flags_win(tmp_path):
    old = {"model": "m", "layers": [1, 2], "dims": [8], "sts": ["toy-a"], "retrieval": [], "k": 10, "bm25": False,
           "batch_size": 8, "limit_queries": 5, "out": "o", "executor": "local", "store_dtype": "float16"}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    config = load_config(RunConfig, path, batch_size=16, dims="8,32")
    assert (config.encoder.batch_size, config.grid.dims, config.search.k, config.subset.limit_queries) == (16, [8, 32], 10, 5)
    assert config.model_dump() == RunConfig().model_dump() | old | {"batch_size": 16, "dims": [8, 32]}
    grouped = tmp_path / "grouped.yaml"  # the parts may also be written out as groups
    grouped.write_text(yaml.safe_dump({"encoder": {"model": "m", "batch_size": 8}, "search": {"k": 10}, "sts": ["x"]}))
    assert load_config(RunConfig, grouped).model_dump() == RunConfig(model="m", batch_size=8, k=10, sts=["x"]).model_dump()


def test_flat_reads_copies_and_errors():
    config = RunConfig(batch_size=8, precisions=["int8"])
    assert config.batch_size == config.encoder.batch_size == 8 and config.precisions == ["float32", "int8"]
    copy = config.model_copy(update={"dims": [8], "out": "x"})
    assert (copy.grid.dims, copy.output.out, copy.batch_size, config.dims) == ([8], "x", 8, None)
    with pytest.raises(ElasticIRError, match=r"^--batch-size 0: must be a whole number >= 1$"):
        load_config(RunConfig, None, batch_size=0)
    with pytest.raises(ElasticIRError, match=r"layerz: unknown option"):
        load_config(RunConfig, None, layerz=[1])
    with pytest.raises(ElasticIRError, match=r"--workers 2 is for the Ray executor"):
        RunConfig(workers=2)
    with pytest.raises(ElasticIRError, match=r"--layers is empty"):
        RunConfig(layers=[])
