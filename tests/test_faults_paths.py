"""Fault suite, paths: elasticir reads datasets only by name, writes only under --out / --cache-dir, and deletes
only what it made.

Every error case asserts exit status 2, exactly one `error:` line, no traceback, and, for the path cases, lists
every file and folder under the test's tmp folder (the data root, the configs, the leaderboards) before and after
and asserts nothing changed outside --out. The cases that train a model are marked slow.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import SENTENCES, write_sts
from test_retrieval import write_beir
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.data.catalog import check_dataset_name
from elasticir.errors import ElasticIRError
from elasticir.outputs import OUTPUT_MARKER, claim_output, release_output

ERROR_LINE = re.compile(r"^error:", re.MULTILINE)


def invoke(args: list, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_error(result, pattern: str) -> None:
    assert result.exit_code == 2, f"exit {result.exit_code} (expected 2):\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(ERROR_LINE.findall(result.output)) == 1, result.output
    assert re.search(pattern, result.output, re.DOTALL), f"{pattern!r} not in:\n{result.output}"


def listing(root: Path) -> dict[str, tuple]:
    """Every file and folder under root: (kind, size, mtime) by relative path."""
    found = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(root))] = ("dir" if path.is_dir() else "file", 0 if path.is_dir() else
                                              stat.st_size, 0 if path.is_dir() else stat.st_mtime_ns)
    return found


def assert_nothing_outside(before: dict, after: dict, *allowed: str) -> None:
    """No file or folder appeared, changed or vanished outside the `allowed` relative prefixes (--out)."""
    def outside(key: str) -> bool:
        return not any(key == a or key.startswith(a + "/") for a in allowed)

    changed = sorted(k for k in before.keys() | after.keys() if outside(k) and before.get(k) != after.get(k))
    assert not changed, f"written or deleted outside --out: {changed}"


@pytest.fixture
def world(tmp_path, tiny_model_dir):
    """A tmp copy of a tiny data root (two STS sets, one BEIR set) and the tiny model; `tmp` is listed whole."""
    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_sts(root / "sts" / "toy-b" / "test.jsonl.gz", SENTENCES[::-1])
    write_beir(root / "beir" / "toyir")
    return {"tmp": tmp_path, "root": root, "out": tmp_path / "out", "model": tiny_model_dir}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_encoder) -> Path:
    """A finished run directory of the tiny model on toy-a (what reproduce / report / leaderboard read)."""
    from elasticir.runner import RunConfig, run

    base = tmp_path_factory.mktemp("finished")
    write_sts(base / "data" / "sts" / "toy-a" / "test.jsonl.gz")
    config = RunConfig(model="unused", sts=["toy-a"], retrieval=[], layers=[1, 4], dims=[8, 32],
                       pairs=[(1, 8), (4, 32)], latency_texts=0, data_root=str(base / "data"),
                       out=str(base / "results"), show_progress=False)
    return run(config, tiny_encoder).dir


def hostile_copy(run_dir: Path, dest: Path, name: str, *, config_only: bool = False) -> Path:
    """A copy of a run directory whose leaderboard names the dataset `name` (everywhere, or only in its
    recorded config)."""
    shutil.copytree(run_dir, dest)
    board = json.loads((dest / "leaderboard.json").read_text())
    board["config"]["sts"] = [name]
    if not config_only:
        for record in board["datasets"]:
            record["name"] = name
        for cell in board["results"]:
            cell["dataset"] = name
    (dest / "leaderboard.json").write_text(json.dumps(board, indent=2))
    return dest


def sts_args(w: dict, datasets: str, *extra) -> list:
    return ["eval", "sts", "--model", w["model"], "--layers", "1,2", "--dims", "8,32", "--datasets", datasets,
            "--data-root", w["root"], "--out", w["out"], *extra]


def ir_args(w: dict, dataset: str, command: str = "retrieval", *extra) -> list:
    return ["eval", command, "--model", w["model"], "--dataset", dataset, "--layers", "1,2", "--dims", "8,32",
            "--data-root", w["root"], "--out", w["out"], *extra]


def run_args(w: dict, sts: str, retrieval: str) -> list:
    return ["run", "--model", w["model"], "--layers", "1,2", "--dims", "8,32", "--sts", sts, "--retrieval",
            retrieval, "--data-root", w["root"], "--out", w["out"], "--no-bm25", "--no-report"]


NAME_ERROR = r"a dataset is a name from the catalog or a folder name under the data root, not a path"

# ---- path-like dataset names, every entry point -------------------------------------------------------------

FLAG_CASES = [  # (id, args builder taking the world, the flag the error names)
    ("eval-sts-absolute", lambda w: sts_args(w, str(w["root"] / "sts" / "toy-a")), r"--datasets"),
    ("eval-sts-climbing", lambda w: sts_args(w, "../sts/toy-a"), r"--datasets \(YAML key sts\) '\.\./sts/toy-a'"),
    ("eval-sts-dotdot", lambda w: sts_args(w, "toy-a,.."), r"'\.\.'"),
    ("eval-sts-home", lambda w: sts_args(w, "~/toy-a"), r"'~/toy-a'"),
    ("eval-sts-backslash", lambda w: sts_args(w, "..\\toy-a"), r"path separator"),
    ("eval-retrieval-absolute", lambda w: ir_args(w, str(w["root"] / "beir" / "toyir")), r"--dataset"),
    ("eval-retrieval-inner-dotdot", lambda w: ir_args(w, "toyir/../toyir"), r"'toyir/\.\./toyir'"),
    ("eval-funnel-absolute", lambda w: ir_args(w, str(w["root"] / "beir" / "toyir"), "funnel"), r"--dataset"),
    ("run-retrieval-absolute", lambda w: run_args(w, "toy-a", str(w["root"] / "beir" / "toyir")), r"--retrieval"),
    ("run-sts-climbing", lambda w: run_args(w, "../../escape", "toyir"), r"--sts"),
    ("run-sts-control-character", lambda w: run_args(w, "toy-a\nx", "toyir"), r"characters other than"),
]


@pytest.mark.parametrize("builder, flag", [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_a_path_as_a_dataset_name_is_refused_and_nothing_is_written(world, builder, flag):
    before = listing(world["tmp"])
    result = invoke(builder(world))
    assert_one_error(result, flag)
    assert re.search(NAME_ERROR + r".*Fix: put the folder under .*/data/beir/.*/data/sts/", result.output, re.DOTALL)
    assert_nothing_outside(before, listing(world["tmp"]), "out")
    assert not list(world["out"].rglob("*.json")) if world["out"].exists() else True


@pytest.mark.parametrize("key, text", [
    ("sts", "sts: [toy-a, '{abs}']\nretrieval: []\n"),
    ("retrieval", "sts: []\nretrieval: ['../../beir/toyir']\n"),
], ids=["yaml-sts-absolute", "yaml-retrieval-climbing"])
def test_a_path_in_a_yaml_config_is_refused(world, key, text):
    config = world["tmp"] / "run.yaml"
    config.write_text(text.format(abs=world["root"] / "sts" / "toy-b"))
    before = listing(world["tmp"])
    result = invoke(["run", "--model", world["model"], "--layers", "1", "--dims", "8", "--data-root", world["root"],
                     "--out", world["out"], "--no-report", "--config", config])
    assert_one_error(result, rf"run.yaml: key {key} '.*': {NAME_ERROR}")
    assert_nothing_outside(before, listing(world["tmp"]), "out")


@pytest.mark.parametrize("name, config_only", [("../../escape", False), ("ABS", False), ("../x", True)],
                         ids=["climbing", "absolute", "only-in-the-recorded-config"])
def test_reproduce_refuses_a_hostile_leaderboard(world, finished_run, name, config_only):
    name = str(world["tmp"] / "elsewhere") if name == "ABS" else name
    board = hostile_copy(finished_run, world["tmp"] / "hostile", name, config_only=config_only)
    before = listing(world["tmp"])
    result = invoke(["reproduce", board / "leaderboard.json", "--out", world["out"], "--data-root", world["root"],
                     "--model", world["model"], "--device", "cpu"])
    assert_one_error(result, r"hostile/leaderboard.json: (datasets\[0\].name|config.sts\[0\]) .*" + NAME_ERROR
                     + r".*correct that name")
    assert_nothing_outside(before, listing(world["tmp"]), "out")
    assert not (world["tmp"] / "elsewhere").exists() and not (world["tmp"].parent / "escape").exists()


def test_report_refuses_a_hostile_run_and_writes_nothing(world, finished_run):
    board = hostile_copy(finished_run, world["tmp"] / "hostile", "../../escape")
    before = listing(world["tmp"])
    result = invoke(["report", board, "--out", world["out"]])
    assert_one_error(result, r"datasets\[0\].name '\.\./\.\./escape'.*" + NAME_ERROR)
    assert_nothing_outside(before, listing(world["tmp"]), "out")


def test_report_refuses_a_hostile_run_to_overlay(world, finished_run):
    good = world["tmp"] / "good"
    shutil.copytree(finished_run, good)
    board = hostile_copy(finished_run, world["tmp"] / "hostile", str(world["tmp"] / "abs"))
    before = listing(world["tmp"])
    result = invoke(["report", good, "--also", board, "--out", world["out"]])
    assert_one_error(result, NAME_ERROR)
    assert_nothing_outside(before, listing(world["tmp"]), "out")


def test_report_refuses_a_hostile_baseline(world, finished_run):
    good = world["tmp"] / "good"
    shutil.copytree(finished_run, good)
    board = hostile_copy(finished_run, world["tmp"] / "hostile", "../../escape")
    before = listing(world["tmp"])
    result = invoke(["report", good, "--baseline", board, "--out", world["out"]])
    assert_one_error(result, r"hostile/leaderboard.json: datasets\[0\].name.*" + NAME_ERROR)
    assert_nothing_outside(before, listing(world["tmp"]), "out")


def test_baseline_grid_of_a_hostile_run_is_refused(world, finished_run):
    """`report RUN --baseline GRID.yaml` re-runs RUN's recorded datasets for each member: a RUN whose recorded
    config names a path is refused before any member is evaluated."""
    board = hostile_copy(finished_run, world["tmp"] / "hostile", "../x", config_only=True)
    grid = world["tmp"] / "grid.yaml"
    grid.write_text(f'"1:8": {world["model"]}\n')
    before = listing(world["tmp"])
    result = invoke(["report", board, "--baseline", grid, "--out", world["out"]])
    assert_one_error(result, r"config.sts\[0\] '\.\./x'.*" + NAME_ERROR)
    assert_nothing_outside(before, listing(world["tmp"]), "out")


def test_leaderboard_refuses_a_hostile_file(world, finished_run):
    board = hostile_copy(finished_run, world["tmp"] / "hostile", "../../escape")
    before = listing(world["tmp"])
    result = invoke(["leaderboard", board, "--out", world["out"]])
    assert_one_error(result, NAME_ERROR)
    assert_nothing_outside(before, listing(world["tmp"]), "out")


def _model_field(finished_run: Path, run: Path, field: str, value: str) -> Path:
    shutil.copytree(finished_run, run)
    board = json.loads((run / "leaderboard.json").read_text())
    board["model"][field] = value
    (run / "leaderboard.json").write_text(json.dumps(board))
    return run


@pytest.mark.parametrize("field, value", [("revision", "../../../escape"), ("name", ".."), ("revision", "a/b")])
def test_mteb_export_refuses_a_climbing_model_name_or_revision(world, finished_run, field, value):
    from elasticir.report.mteb_export import export_mteb

    run = _model_field(finished_run, world["tmp"] / "named", field, value)
    before = listing(world["tmp"])
    with pytest.raises(ElasticIRError, match=rf"leaderboard model.{field} '{re.escape(value)}' cannot be a folder"):
        export_mteb(run, world["tmp"] / "mteb")
    assert_nothing_outside(before, listing(world["tmp"]), "mteb")


@pytest.mark.slow
def test_report_mteb_with_a_climbing_revision_is_one_clean_error(world, finished_run):
    field, value = "revision", "../../../escape"
    run = _model_field(finished_run, world["tmp"] / "named", field, value)
    before = listing(world["tmp"])
    result = invoke(["report", run, "--out", world["out"], "--mteb", world["tmp"] / "mteb"])
    assert_one_error(result, rf"leaderboard model.{field} '{re.escape(value)}' cannot be a folder name .*--mteb")
    assert_nothing_outside(before, listing(world["tmp"]), "out", "mteb")
    assert not (world["tmp"].parent / "escape").exists()


@pytest.mark.parametrize("name", ["scifact", "toy-a", "cqadupstack-tex", "x[red]", "my set", "sts12.v2", "a+b@1"])
def test_names_pass(name):
    assert check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["", " ", "/abs/beir/x", "beir/x", "..", ".", "../x", "x/..", ".hidden", "~x",
                                  "a\\b", " lead", "trail ", "x\ty", "x:y", "_downloads", "x" * 201])
def test_paths_and_odd_names_are_refused(name):
    with pytest.raises(ElasticIRError, match=r"--flag .*not a path .*Fix: put the folder under"):
        check_dataset_name(name, "--flag")


def test_the_run_store_never_joins_an_unchecked_name(tmp_path):
    from elasticir.results.store import RunStore

    store = RunStore(tmp_path / "out", "run")
    with pytest.raises(ElasticIRError, match=NAME_ERROR):
        store.has_part("sts", "../../x")
    with pytest.raises(ElasticIRError, match=NAME_ERROR):
        store.lock("sts", str(tmp_path / "abs"))


# ---- deletes: only what elasticir made ------------------------------------------------------------------------

def _pairs(w: dict) -> Path:
    path = w["tmp"] / "pairs.jsonl"
    if not path.exists():  # written once: the listings before and after see the same file
        path.write_text("".join(json.dumps({"anchor": f"a{i}", "positive": f"p{i}"}) + "\n" for i in range(8)))
    return path


def _text(w: dict) -> Path:
    path = w["tmp"] / "text.txt"
    if not path.exists():
        path.write_text("".join(f"document number {i} about things\n" for i in range(8)))
    return path


def _users_folder(w: dict, *, forged: str | None = None) -> Path:
    folder = w["tmp"] / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "chapters" / "one.tex").write_text("months of work")
    (folder / "notes.txt").write_text("keep me")
    if forged:  # a config file of elasticir's name, but no marker: still not elasticir's folder
        (folder / forged).write_text("{}")
    return folder


TRAINERS = {
    "train": lambda w, out, *extra: ["train", "--method", "plain", "--base", w["model"], "--data", _pairs(w),
                                     "--out", out, "--max-steps", "2", "--batch-size", "4", "--device", "cpu", *extra],
    "pretrain": lambda w, out, *extra: ["pretrain", "--method", "mlm", "--base", w["model"], "--data", _text(w),
                                        "--out", out, "--max-steps", "2", "--batch-size", "4", "--device", "cpu",
                                        *extra],
}


@pytest.mark.parametrize("command, forged", [("train", None), ("pretrain", None), ("train", "train_config.json"),
                                             ("pretrain", "pretrain_config.json")],
                         ids=["train", "pretrain", "train-forged-config", "pretrain-forged-config"])
def test_recompute_refuses_to_delete_a_folder_elasticir_did_not_make(world, command, forged):
    folder = _users_folder(world, forged=forged)
    plain = invoke(TRAINERS[command](world, folder))
    before = listing(world["tmp"])
    result = invoke(TRAINERS[command](world, folder, "--recompute"))
    assert_one_error(result, r"thesis exists and is not an elasticir (pre-)?training folder; choose another --out")
    if forged is None:  # the same refusal as without --recompute
        assert_one_error(plain, r"thesis exists and is not an elasticir (pre-)?training folder; choose another --out")
    else:  # no marker: not offered for deletion
        assert_one_error(plain, r"thesis holds a .*different config.*choose another --out \(it lacks "
                                r"\.elasticir-output\.json, so --recompute will not delete it\)")
    assert listing(world["tmp"]) == before
    assert (folder / "chapters" / "one.tex").read_text() == "months of work"


def test_recompute_deletes_a_folder_elasticir_made(tmp_path):
    out = tmp_path / "model"
    assert claim_output(out, {"a": 1}, started="s.json", finished="f.json", what="training") == "new"
    assert (out / OUTPUT_MARKER).is_file()
    (out / "checkpoints").mkdir()
    assert claim_output(out, {"a": 2}, started="s.json", finished="f.json", what="training", recompute=True) == "new"
    assert not (out / "checkpoints").exists() and json.loads((out / "s.json").read_text()) == {"a": 2}


def test_recompute_refuses_a_symbolic_link(tmp_path):
    real = tmp_path / "real"
    assert claim_output(real, {"a": 1}, started="s.json", finished="f.json", what="training") == "new"
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ElasticIRError, match=r"is a symbolic link; --recompute deletes only a real folder"):
        claim_output(link, {"a": 2}, started="s.json", finished="f.json", what="training", recompute=True)
    assert json.loads((real / "s.json").read_text()) == {"a": 1}


# ---- interrupted checkpoints ----------------------------------------------------------------------------------

def test_incomplete_checkpoints_are_skipped_for_the_last_complete_one(tmp_path, capsys):
    from elasticir.training.trainer import _checkpoint

    folder = tmp_path / "checkpoints"
    for step, state in [(2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, None), (8, '{"global_st')]:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w")
        if state is not None:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert _checkpoint(tmp_path) == folder / "checkpoint-4"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert "checkpoint-6: incomplete checkpoint" in capsys.readouterr().err
    assert _checkpoint(tmp_path / "none") is None


@pytest.mark.slow
def test_a_checkpoint_cut_short_by_kill_9_resumes_from_the_last_whole_one(world):
    """kill -9 while the trainer writes checkpoint-4 leaves it without trainer_state.json (written last): the
    rerun resumes from checkpoint-2 instead of failing on every rerun."""
    from transformers import TrainerCallback

    from elasticir.training.trainer import TrainConfig, train

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    out = world["tmp"] / "trained"
    config = TrainConfig(base=str(world["model"]), data=[str(_pairs(world))], out=str(out), method="plain",
                         max_steps=6, batch_size=4, checkpoint_steps=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Stop()])
    whole = out / "checkpoints" / "checkpoint-2"
    cut = out / "checkpoints" / "checkpoint-4"
    shutil.copytree(whole, cut)
    (cut / "trainer_state.json").unlink()
    result = invoke(["train", "--method", "plain", "--base", world["model"], "--data", world["tmp"] / "pairs.jsonl",
                     "--out", out, "--max-steps", "6", "--batch-size", "4", "--checkpoint-steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    meta = json.loads((out / "elastic.json").read_text())
    assert meta["resumed_from"] == "checkpoint-2" and meta["log_history"][-1]["step"] == 6


KILLED_WHILE_SAVING = """
import os, signal, sys
from transformers.trainer_callback import TrainerState
real = TrainerState.save_to_json
def save(self, path):
    if self.global_step == 4 and "checkpoint-4" in str(path):  # weights, optimiser and RNG written; state next
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, path)
TrainerState.save_to_json = save
from elasticir.cli import app
sys.argv = ["elasticir", *sys.argv[1:]]
app()
"""


@pytest.mark.slow
def test_a_real_kill_9_while_a_checkpoint_is_written_then_the_rerun_finishes(world):
    import os
    import subprocess
    import sys

    out = world["tmp"] / "trained"
    args = ["train", "--method", "plain", "--base", world["model"], "--data", _pairs(world), "--out", out,
            "--max-steps", "6", "--batch-size", "4", "--checkpoint-steps", "2", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *map(str, args)], check=False,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    assert not (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    rerun = invoke(args)
    assert rerun.exit_code == 0, rerun.output
    assert "checkpoint-4: incomplete checkpoint" in rerun.output and "Traceback" not in rerun.output
    meta = json.loads((out / "elastic.json").read_text())
    assert meta["resumed_from"] == "checkpoint-2" and meta["log_history"][-1]["step"] == 6


# ---- early failures give the folder back ----------------------------------------------------------------------

@pytest.mark.parametrize("command, started", [("train", "train_config.json"), ("pretrain", "pretrain_config.json")])
def test_a_run_failing_before_its_first_step_releases_its_folder(world, command, started):
    out = world["tmp"] / "model"
    missing = world["tmp"] / "no-such-model"
    args = TRAINERS[command](world, out)
    args[args.index("--base") + 1] = missing
    assert_one_error(invoke(args), r"no-such-model")
    assert not out.exists()  # elasticir created it, so it goes
    corrected = [*args[:args.index("--max-steps")], "--max-steps", "3", *args[args.index("--max-steps") + 2:]]
    result = invoke(corrected)  # another config into the same folder: not refused over a leftover config
    assert_one_error(result, r"no-such-model")
    assert "different config" not in result.output and not (out / started).exists()


def test_an_existing_empty_folder_is_emptied_not_removed(tmp_path):
    out = tmp_path / "given"
    out.mkdir()
    assert claim_output(out, {"a": 1}, started="s.json", finished="f.json", what="training") == "new"
    (out / "checkpoints").mkdir()
    release_output(out)
    assert out.is_dir() and not list(out.iterdir())
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("x")
    release_output(user)  # no marker: left alone
    assert (user / "mine.txt").read_text() == "x"


@pytest.mark.slow
def test_a_training_refused_after_loading_releases_and_the_corrected_command_runs(world):
    out = world["tmp"] / "model"
    too_big = invoke(TRAINERS["train"](world, out)[:-4] + ["--batch-size", "64", "--device", "cpu"])
    assert_one_error(too_big, r"--batch-size 64 is larger than the training data")
    assert not out.exists()
    fixed = invoke(TRAINERS["train"](world, out))
    assert fixed.exit_code == 0, fixed.output
    assert (out / "elastic.json").is_file() and (out / OUTPUT_MARKER).is_file()


# ---- leaderboard output --------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_leaderboard_out_on_an_existing_file_is_one_clean_error(world, finished_run, where):
    target = world["tmp"] / "board.md"
    target.write_text("my notes")
    before = listing(world["tmp"])
    result = invoke(["leaderboard", finished_run, "--out", target if where == "file" else target / "sub"])
    assert_one_error(result, r"--out .*board.md.* is a file, not a folder")
    assert listing(world["tmp"]) == before and target.read_text() == "my notes"


def test_leaderboard_markdown_escapes_names(world, finished_run):
    from elasticir.report.leaderboard import md_text, render_leaderboards

    run = world["tmp"] / "named"
    shutil.copytree(finished_run, run)
    board = json.loads((run / "leaderboard.json").read_text())
    board["model"]["name"], board["model"]["hub_id"] = "<img src=x onerror=alert(1)>|a*b*_[l](u)", None
    (run / "leaderboard.json").write_text(json.dumps(board))
    markdown, _ = render_leaderboards([run], page=False)
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(1)&gt;\\|a\\*b\\*\\_\\[l\\](u)" in markdown
    for block in re.split(r"\n(?!\|)", markdown):  # every table: each row has as many cells as its header
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in rows}) <= 1, rows
    assert md_text("a|b\nc") == "a\\|b c" and md_text("x & <y>") == "x &amp; &lt;y&gt;"
