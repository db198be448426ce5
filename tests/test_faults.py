"""Fault suite: bad inputs and faults a new user meets, each checked for a clean outcome.

Every error case asserts exit status 2, a message naming the flag / file / line, no traceback, and that nothing
half-written is marked finished. The fault cases (a held lock, a full disk, changed data, a kill -9, two runs
into one folder) also check that what is finished equals a clean run's numbers. The subprocess cases are
marked slow.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import SENTENCES, write_sts
from test_retrieval import DOCS, QRELS, QUERIES, write_beir
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.io import atomic_write
from elasticir.locking import exclusive

REPO = Path(__file__).resolve().parents[1]
METRICS = ["spearman", "pearson", "nDCG@10", "RR@10", "R@100", "R@1000"]


@dataclass
class Ctx:
    root: Path  # data root with toy-a (STS) and toyir (BEIR)
    out: Path
    model: Path
    tmp: Path


@pytest.fixture
def ctx(tmp_path, tiny_model_dir) -> Ctx:
    root = tmp_path / "data"
    write_sts(root / "sts" / "toy-a" / "test.jsonl.gz")
    write_sts(root / "sts" / "toy-b" / "test.jsonl.gz", SENTENCES[::-1])
    write_beir(root / "beir" / "toyir")
    return Ctx(root, tmp_path / "out", tiny_model_dir, tmp_path)


def sts_args(c: Ctx, **flags) -> list[str]:
    base = {"--model": c.model, "--layers": "1,2", "--dims": "8,32", "--datasets": "toy-a", "--data-root": c.root,
            "--out": c.out}
    return ["eval", "sts", *_flags(base, flags)]


def ir_args(c: Ctx, **flags) -> list[str]:
    base = {"--model": c.model, "--dataset": "toyir", "--layers": "1,2", "--dims": "8,32", "--data-root": c.root,
            "--out": c.out, "--no-bm25": True}
    return ["eval", "retrieval", *_flags(base, flags)]


def _flags(base: dict, flags: dict) -> list[str]:
    merged = base | {("--" + key.strip("_").replace("_", "-")): value for key, value in flags.items()}
    args = []
    for flag, value in merged.items():
        if value is True:
            args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args


def invoke(args: list[str], env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def finished_marks(out: Path) -> list[Path]:
    """Anything that would be presented as finished: part marks and summaries."""
    if not out.is_dir():
        return []
    return [*out.glob("*/sts/*.json"), *out.glob("*/retrieval/*.json"), *out.glob("*/leaderboard.json")]


def assert_clean_error(result, pattern: str, out: Path | None = None) -> None:
    import re

    assert result.exit_code == 2, f"exit {result.exit_code} (expected 2):\n{result.output}"
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert re.search(pattern, result.output, re.DOTALL), f"{pattern!r} not in:\n{result.output}"
    assert result.output.count("error:") == 1
    if out is not None:
        assert not finished_marks(out), finished_marks(out)
        assert not list(out.rglob("*.tmp")) if out.is_dir() else True


# ---- setups: each edits the data or the environment of a case and returns extra flags (or None) ----------

def _sts_rows(c: Ctx, *lines: str, name: str = "toy-a") -> None:
    path = c.root / "sts" / name / "test.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


GOOD = '{"sentence1": "a b", "sentence2": "c d", "score": 1.5}'


def _qrels(c: Ctx, text: str) -> None:
    (c.root / "beir" / "toyir" / "qrels" / "test.tsv").write_text(text)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def _yaml(c: Ctx, text: str) -> dict:
    (c.tmp / "config.yaml").write_text(text)
    return {"config": c.tmp / "config.yaml"}


def _pickle_model(c: Ctx) -> dict:
    """A copy of the tiny model whose weights are a pickle with a Python object weights_only refuses."""
    import torch
    from safetensors.torch import load_file

    folder = c.tmp / "pickled"
    shutil.copytree(c.model, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": argparse.Namespace(note="not a tensor")}, folder / "pytorch_model.bin")
    return {"model": folder}


def _file_as_out(c: Ctx) -> dict:
    c.tmp.joinpath("a-file").write_text("x")
    return {"out": c.tmp / "a-file"}


CASES = [  # (id, args builder, setup, pattern the one error line must match)
    ("k-zero", ir_args, lambda c: {"k": 0}, r"--k 0: must be a whole number >= 1"),
    ("k-negative", ir_args, lambda c: {"k": -5}, r"--k -5"),
    ("batch-size-zero", sts_args, lambda c: {"batch_size": 0}, r"--batch-size 0"),
    ("max-length-zero", sts_args, lambda c: {"max_length": 0}, r"--max-length 0"),
    ("max-length-negative", ir_args, lambda c: {"max_length": -3}, r"--max-length -3"),
    ("device-unknown", sts_args, lambda c: {"device": "bogus"}, r"--device 'bogus' is not a device torch knows"),
    ("out-is-a-file", sts_args, _file_as_out, r"a-file is a file, not a folder"),
    ("out-under-a-file", sts_args, lambda c: {"out": _file_as_out(c)["out"] / "sub"}, r"is a file, not a folder"),
    ("out-unwritable", sts_args, lambda c: {"out": "/proc/elasticir-out"}, r"--out /proc/elasticir-out is not writable"),
    ("layer-out-of-range", sts_args, lambda c: {"layers": "9"}, r"layer 9 is out of range"),
    ("dim-out-of-range", sts_args, lambda c: {"dims": "64"}, r"64"),
    ("layers-not-integers", sts_args, lambda c: {"layers": "one,two"}, r"--layers must be a comma list of integers"),
    ("index-unknown-factory", ir_args, lambda c: {"index": "XYZ"}, r"--index 'XYZ'.*could not parse index string"),
    ("index-ivf-lists-exceed-corpus", ir_args, lambda c: {"index": "IVF100,Flat"},
     r"needs at least 100 training vectors.*corpus has 7 documents"),
    ("index-ivfpq-tiny-corpus", ir_args, lambda c: {"index": "ivfpq"}, r"256 PQ centroids.*7 documents"),
    ("index-pq-not-dividing-dim", ir_args, lambda c: {"index": "PQ5", "dims": "8"},
     r"--index 'PQ5'.*multiple of the number of subquantizers"),
    ("index-checked-on-the-model-grid", ir_args, lambda c: {"index": "PQ7", "dims": None},
     r"--index 'PQ7'.*cannot be built at dim \d+"),
    ("yaml-list", sts_args, lambda c: _yaml(c, "- 1\n- 2\n"), r"config.yaml must be a YAML mapping.*got a list"),
    ("yaml-scalar", sts_args, lambda c: _yaml(c, "just text\n"), r"must be a YAML mapping.*got a str"),
    ("yaml-syntax", sts_args, lambda c: _yaml(c, "layers: [1, 2\n"), r"cannot read config .*config.yaml"),
    ("yaml-unknown-key", sts_args, lambda c: _yaml(c, "layerz: [1]\n"), r"in .*config.yaml:.*layerz: unknown option"),
    ("yaml-bad-k", ir_args, lambda c: _yaml(c, "k: 0\n"), r"--k 0"),
    ("yaml-missing", sts_args, lambda c: {"config": c.tmp / "nope.yaml"}, r"cannot read config .*nope.yaml"),
    ("dataset-unknown", sts_args, lambda c: {"datasets": "nosuchset"}, r"unknown dataset 'nosuchset'"),
    ("beir-folder-without-corpus", ir_args,
     lambda c: (c.root / "beir" / "toyir" / "corpus.jsonl").unlink(), r"toyir/ exists but has no corpus.jsonl"),
    ("sts-folder-without-file", sts_args,
     lambda c: (c.root / "sts" / "toy-a" / "test.jsonl.gz").unlink(), r"toy-a/ exists but has no test.jsonl.gz"),
    ("sts-bad-json-line", sts_args, lambda c: _sts_rows(c, GOOD, '{"sentence1": oops}'),
     r"test.jsonl.gz line 2: not valid JSON"),
    ("sts-boolean-score", sts_args,
     lambda c: _sts_rows(c, GOOD, '{"sentence1": "a", "sentence2": "b", "score": true}'),
     r"line 2: score True is not a finite number"),
    ("sts-text-score", sts_args, lambda c: _sts_rows(c, GOOD, '{"sentence1": "a", "sentence2": "b", "score": "hi"}'),
     r"line 2: score 'hi' is not a finite number"),
    ("sts-nan-score", sts_args, lambda c: _sts_rows(c, GOOD, '{"sentence1": "a", "sentence2": "b", "score": NaN}'),
     r"line 2: score nan is not a finite number"),
    ("sts-empty-sentence", sts_args,
     lambda c: _sts_rows(c, GOOD, '{"sentence1": " ", "sentence2": "b", "score": 1}'), r"line 2: sentence1 is empty"),
    ("sts-missing-field", sts_args, lambda c: _sts_rows(c, GOOD, '{"sentence1": "a", "sentence2": "b"}'),
     r"line 2: missing field\(s\) score"),
    ("sts-array-line", sts_args, lambda c: _sts_rows(c, GOOD, "[1, 2]"), r"line 2: expected a JSON object"),
    ("sts-one-pair", sts_args, lambda c: _sts_rows(c, GOOD), r"1 pair\(s\); a correlation needs at least 2"),
    ("sts-not-gzip", sts_args, lambda c: (c.root / "sts" / "toy-a" / "test.jsonl.gz").write_text(GOOD + "\n"),
     r"test.jsonl.gz: cannot be read as \(gzipped\) UTF-8"),
    ("qrels-missing", ir_args, lambda c: (c.root / "beir" / "toyir" / "qrels" / "test.tsv").unlink(),
     r"test.tsv not found; splits present: none"),
    ("qrels-first-grade-not-integer", ir_args, lambda c: _qrels(c, "q1\td1\thigh\nq2\td2\t1\n"),
     r"test.tsv line 1: score 'high' is not an integer"),
    ("qrels-two-fields", ir_args, lambda c: _qrels(c, "query-id\tcorpus-id\tscore\nq1\td1\n"),
     r"test.tsv line 2: expected 3 tab-separated fields"),
    ("qrels-unknown-doc", ir_args, lambda c: _qrels(c, "q1\tnope\t1\n"), r"judged document id.*'nope'"),
    ("qrels-unknown-query", ir_args, lambda c: _qrels(c, "q9\td1\t1\n"), r"judged query id.*'q9'"),
    ("qrels-empty", ir_args, lambda c: _qrels(c, "query-id\tcorpus-id\tscore\n"), r"test.tsv: no judgements"),
    ("corpus-duplicate-id", ir_args, lambda c: _append(c.root / "beir" / "toyir" / "corpus.jsonl",
                                                       '{"_id": "d1", "text": "again"}\n'),
     r"corpus.jsonl line 8: duplicate document id 'd1' \(first on line 1\)"),
    ("corpus-missing-text-field", ir_args, lambda c: _append(c.root / "beir" / "toyir" / "corpus.jsonl",
                                                             '{"_id": "d7"}\n'),
     r"corpus.jsonl line 8: missing field\(s\) text"),
    ("query-empty-text", ir_args, lambda c: (c.root / "beir" / "toyir" / "queries.jsonl").write_text(
        '{"_id": "q1", "text": " "}\n{"_id": "q2", "text": "cat"}\n{"_id": "d3", "text": "markets"}\n'),
     r"queries.jsonl line 1: query 'q1' has empty text"),
    ("markup-in-error-text", sts_args, lambda c: {"data_root": c.tmp / "[/bold]data", "datasets": "x[red]"},
     r"unknown dataset 'x\[red\]'.*\[/bold\]data"),
    ("model-missing", sts_args, lambda c: {"model": c.tmp / "no-model"}, r"no-model"),
    ("model-pickle-refused", sts_args, _pickle_model, r"pickled/pytorch_model.bin: the checkpoint is a pickle .*weights_only=True"),
    ("no-datasets", ir_args, lambda c: _yaml(c, "retrieval: []\n") | {"dataset": None}, r"no datasets to evaluate"),
]
if not __import__("torch").cuda.is_available():
    CASES.append(("device-cuda-without-cuda", sts_args, lambda c: {"device": "cuda"}, r"--device cuda: CUDA is not available"))


@pytest.mark.parametrize("builder, setup, pattern", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_clean_error(ctx, builder, setup, pattern):
    flags = setup(ctx)
    flags = flags if isinstance(flags, dict) else {}  # setups that only edit files return None (or a size)
    result = invoke(builder(ctx, **flags))
    assert_clean_error(result, pattern, ctx.out)


# ---- correct behaviour where a guess used to read data wrongly ----------------------------------------------

def _cells(out: Path) -> pd.DataFrame:
    (run_dir,) = [p for p in out.iterdir() if (p / "leaderboard.json").is_file()]
    return pd.read_csv(run_dir / "cells.csv")


def _same_metrics(a: pd.DataFrame, b: pd.DataFrame) -> None:
    keys = ["task", "dataset", "layer", "dim"]
    columns = keys + [m for m in METRICS if m in a.columns]
    pd.testing.assert_frame_equal(a[columns].sort_values(keys).reset_index(drop=True),
                                  b[columns].sort_values(keys).reset_index(drop=True), rtol=1e-6)


def test_bom_and_header_variants_read_the_same_numbers(ctx):
    assert invoke(ir_args(ctx)).exit_code == 0
    clean = _cells(ctx.out)
    folder = ctx.root / "beir" / "toyir"
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())  # a Windows BOM
    _qrels(ctx, "\ufeff" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))  # BOM and no header
    other = ctx.tmp / "out2"
    result = invoke(ir_args(ctx, out=other))
    assert result.exit_code == 0, result.output
    _same_metrics(clean, _cells(other))


def test_files_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", "{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)


# ---- faults: locks, disk full, changed data, summaries ---------------------------------------------------------

def _part_lock(out: Path, task: str, name: str) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir / task / f"{name}.lock"


def test_a_held_part_is_refused_naming_the_pid(ctx):
    assert invoke(sts_args(ctx)).exit_code == 0
    before = _cells(ctx.out)
    with exclusive(_part_lock(ctx.out, "sts", "toy-a"), "test"):
        result = invoke(sts_args(ctx, recompute=True), env={"ELASTICIR_LOCK_TIMEOUT": "0"})
    assert_clean_error(result, rf"another run \(pid {os.getpid()}\) is writing the sts part toy-a .*another --out")
    _same_metrics(before, _cells(ctx.out))  # the finished part is untouched


def test_a_second_writer_waits_then_reuses(ctx):
    assert invoke(sts_args(ctx)).exit_code == 0
    before = _cells(ctx.out)
    lock = _part_lock(ctx.out, "sts", "toy-a")
    held, release = threading.Event(), threading.Event()

    def holder():
        with exclusive(lock, "test"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    result = invoke(sts_args(ctx))
    thread.join()
    assert result.exit_code == 0, result.output
    assert f"waiting for another run (pid {os.getpid()})" in result.output and "reusing" in result.output
    _same_metrics(before, _cells(ctx.out))


def test_disk_full_leaves_nothing_marked_finished_and_resumes(ctx, monkeypatch):
    clean_out = ctx.tmp / "clean"
    assert invoke(sts_args(ctx, datasets="toy-a,toy-b", out=clean_out)).exit_code == 0
    real_fsync = os.fsync

    def full_disk(fd):
        if ".toy-b.json." in os.readlink(f"/proc/self/fd/{fd}"):  # the finished mark of the second part
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    result = invoke(sts_args(ctx, datasets="toy-a,toy-b"))
    assert_clean_error(result, r"cannot write .*toy-b.json: No space left on device")
    (run_dir,) = [p for p in ctx.out.iterdir() if p.is_dir()]
    assert (run_dir / "sts" / "toy-a.json").is_file() and not (run_dir / "sts" / "toy-b.json").exists()
    assert not (run_dir / "leaderboard.json").exists() and not list(run_dir.rglob("*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    resumed = invoke(sts_args(ctx, datasets="toy-a,toy-b"))
    assert resumed.exit_code == 0 and "reused finished results for: toy-a" in resumed.output
    _same_metrics(_cells(clean_out), _cells(ctx.out))


def test_changed_data_under_the_same_name_is_recomputed(ctx):
    other_root = ctx.tmp / "data2"
    write_sts(other_root / "sts" / "toy-a" / "test.jsonl.gz", [(a, b, 5 - s) for a, b, s in SENTENCES])
    assert invoke(sts_args(ctx)).exit_code == 0
    first = _cells(ctx.out)
    result = invoke(sts_args(ctx, data_root=other_root))
    assert result.exit_code == 0 and "reused" not in result.output and "recomputing" in result.output
    clean = ctx.tmp / "clean"
    assert invoke(sts_args(ctx, data_root=other_root, out=clean)).exit_code == 0
    _same_metrics(_cells(clean), _cells(ctx.out))
    assert not _cells(ctx.out).spearman.equals(first.spearman)
    back = invoke(sts_args(ctx))  # and back: the first data's numbers again, not the second's
    assert back.exit_code == 0
    _same_metrics(first, _cells(ctx.out))


def test_an_edited_finished_table_is_not_trusted(ctx):
    assert invoke(sts_args(ctx)).exit_code == 0
    first = _cells(ctx.out)
    (part,) = ctx.out.glob("*/sts/toy-a.csv")
    part.write_text(part.read_text().replace("0.", "0.9", 1))
    result = invoke(sts_args(ctx))
    assert result.exit_code == 0 and "recomputing" in result.output
    _same_metrics(first, _cells(ctx.out))


def test_summary_keeps_every_finished_part(ctx):
    assert invoke(sts_args(ctx, datasets="toy-a")).exit_code == 0
    assert invoke(sts_args(ctx, datasets="toy-b")).exit_code == 0
    assert invoke(ir_args(ctx, layers="1,2", dims="8,32")).exit_code == 0
    cells = _cells(ctx.out)
    assert sorted(set(zip(cells.task, cells.dataset))) == [("retrieval", "toyir"), ("sts", "toy-a"), ("sts", "toy-b")]
    (board,) = ctx.out.glob("*/leaderboard.json")
    data = json.loads(board.read_text())
    assert [d["name"] for d in data["datasets"]] == ["toyir", "toy-a", "toy-b"]
    assert data["config"]["sts"] == ["toy-a", "toy-b"] and data["config"]["retrieval"] == ["toyir"]
    assert data["main_metric"] == {"sts": "spearman", "retrieval": "nDCG@10"}


def test_stale_embedding_temporaries_and_missing_layers_are_redone(ctx, tiny_encoder):
    from elasticir.encoders import EmbeddingStore

    store = EmbeddingStore(ctx.tmp / "cache", tiny_encoder, ["a", "b"], ["one text", "two texts"])
    assert store.ensure([1, 2], show_progress=False)
    reference = store.layer(2).copy()
    (store.dir / ".layer_2.999.dead.tmp").write_bytes(b"half")  # a killed writer's temporary
    (store.dir / "layer_2.npy").write_bytes(b"truncated")  # listed in meta.json but not whole
    assert store.missing([1, 2]) == [2]
    assert store.ensure([1, 2], show_progress=False)
    assert (store.layer(2) == reference).all() and not list(store.dir.glob("*.tmp"))


@pytest.mark.slow
def test_training_with_fewer_rows_than_a_batch_is_refused(ctx):
    data = ctx.tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps({"anchor": f"a{i}", "positive": f"p{i}"}) + "\n" for i in range(3)))
    out = ctx.tmp / "trained"
    result = invoke(["train", "--method", "plain", "--base", ctx.model, "--data", data, "--out", out,
                     "--batch-size", "8", "--max-steps", "2"])
    assert_clean_error(result, r"--batch-size 8 is larger than the training data: .*\(3 rows\)")
    assert not (out / "elastic.json").exists()


def test_training_max_length_zero_is_refused(ctx):
    result = invoke(["train", "--base", ctx.model, "--data", ctx.tmp / "x.jsonl", "--out", ctx.tmp / "t",
                     "--max-length", "0"])
    assert_clean_error(result, r"--max-length 0")


# ---- processes: kill -9 and two runs into one folder ------------------------------------------------------

def _cli(args: list, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    code = "from elasticir.cli import app; app()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _big_corpus(c: Ctx, docs: int = 4000) -> None:
    """toyir with enough extra documents that encoding them takes seconds (a window to kill in)."""
    extra = {f"x{i}": ("", f"filler document number {i} about things") for i in range(docs)}
    write_beir(c.root / "beir" / "toyir", DOCS | extra, QUERIES, QRELS)


def _run_args(c: Ctx, out: Path) -> list:
    """`run` with one STS part (finishes first) and one retrieval part (encoded in small batches)."""
    return ["run", "--model", c.model, "--layers", "1,2", "--dims", "8,32", "--sts", "toy-a", "--retrieval",
            "toyir", "--data-root", c.root, "--out", out, "--no-bm25", "--no-report", "--batch-size", "4"]


def _layers_being_written(cache: Path) -> list[Path]:
    """Layer files of an embedding store that its meta.json does not list yet (being encoded)."""
    found = []
    for path in cache.glob("*/layer_*.npy"):
        meta = path.parent / "meta.json"
        listed = json.loads(meta.read_text())["layers"] if meta.is_file() else []
        if int(path.stem.removeprefix("layer_")) not in listed:
            found.append(path)
    return found


@pytest.mark.slow
def test_kill_9_mid_encoding_then_resume_equals_a_clean_run(ctx):
    _big_corpus(ctx, 800)
    proc = _cli(_run_args(ctx, ctx.out))
    deadline = time.monotonic() + 120
    # the store creates its layer files first and lists them in meta.json only once every row is written
    while time.monotonic() < deadline and not _layers_being_written(ctx.out / "_cache" / "embeddings"):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-encoding"
    assert list(ctx.out.glob("*/sts/toy-a.json")), "the STS part should have finished before encoding started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(ctx.out.glob("*/retrieval/toyir.json")) and not list(ctx.out.glob("*/leaderboard.json"))
    resumed = _cli(_run_args(ctx, ctx.out))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "Traceback" not in stderr and "sts toy-a: finished earlier" in stderr
    assert not list(ctx.out.rglob("*.tmp"))
    clean = ctx.tmp / "clean"
    assert _cli(_run_args(ctx, clean)).wait(timeout=300) == 0
    _same_metrics(_cells(clean), _cells(ctx.out))


@pytest.mark.slow
def test_two_runs_into_one_folder_both_finish_with_clean_numbers(ctx):
    _big_corpus(ctx, 600)
    first = _cli(ir_args(ctx, batch_size=8))
    time.sleep(0.5)
    second = _cli(ir_args(ctx, batch_size=8))
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    for proc, (stdout, stderr) in zip((first, second), outputs):
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    clean = ctx.tmp / "clean"
    assert invoke(ir_args(ctx, out=clean, batch_size=8)).exit_code == 0
    _same_metrics(_cells(clean), _cells(ctx.out))
    # one of them evaluated the part; the other waited for it and reused it (or found it finished)
    assert sum("reusing" in stderr for _, stderr in outputs) == 1
