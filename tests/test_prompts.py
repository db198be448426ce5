"""Prompts as MTEB selects them: the rule, the flags, what a run records and keys on, and the vectors."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from elasticir.cli import app
from elasticir.encoders.prompts import EMPTY, Prompt, choose, dataset_prompts
from elasticir.errors import ElasticIRError
from elasticir.runner import RunConfig, run
from tests.test_retrieval import write_beir

PROMPTS = {"STS": "similar: ", "query": "q: ", "Retrieval-document": "d: ", "SciFact": "sf: "}


@pytest.mark.parametrize("task_name, task_type, side, expected", [
    ("STSBenchmark", "STS", None, "STS"),  # the task type
    ("SciFact", "Retrieval", "query", "SciFact"),  # the task name beats the type-side and side keys
    ("NFCorpus", "Retrieval", "document", "Retrieval-document"),  # type-side beats the side
    ("NFCorpus", "Retrieval", "query", "query"),  # the side last
    (None, "Classification", None, None),  # nothing matches: no prompt
])
def test_mteb_order(task_name, task_type, side, expected):
    got = choose(PROMPTS, None, task_name=task_name, task_type=task_type, prompt_type=side)
    assert got == (Prompt(expected, PROMPTS[expected]) if expected else EMPTY)


def test_default_prompt_and_overrides():
    assert choose(PROMPTS, "query", task_name=None, task_type="Classification", prompt_type=None) == Prompt("query", "q: ")
    assert choose(PROMPTS, None, task_name="STS12", task_type="STS", prompt_type=None, prompt_name="none") == EMPTY
    assert choose(PROMPTS, None, task_name="STS12", task_type="STS", prompt_type=None,
                  prompt_name="query") == Prompt("query", "q: ")
    sides = dataset_prompts(PROMPTS, None, task="retrieval", task_name="SciFact", task_type="Retrieval",
                            query_prompt="literal: ")
    assert sides == {"query": Prompt(None, "literal: "), "document": Prompt("SciFact", "sf: ")}
    with pytest.raises(ElasticIRError, match="no such prompt.*STS, SciFact"):
        choose(PROMPTS, None, task_name=None, task_type="STS", prompt_type=None, prompt_name="nope")


@pytest.fixture(scope="module")
def prompted_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with task prompts in its config_sentence_transformers.json."""
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"STS": "similar: ", "query": "q: ", "document": "d: "}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}))
    return folder


def _sts_run(model, root, out, **config):
    return run(RunConfig(model=str(model), sts=["toy-a"], retrieval=[], layers=[2, 4], dims=[8, 32],
                         data_root=str(root), out=str(out), show_progress=False, latency_texts=0, **config))


def _cosines(outcome):
    with np.load(outcome.dir / "sts" / "toy-a" / "pair_scores.npz") as saved:
        return saved["cosines"], [tuple(c) for c in saved["cells"]]


def _st_cosines(model, pairs, **encode):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model), device="cpu")
    left = st.encode([p[0] for p in pairs], **encode)
    right = st.encode([p[1] for p in pairs], **encode)
    return np.einsum("ij,ij->i", left, right) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


def test_sts_gets_the_sts_prompt_recorded_and_keyed(prompted_model, tiny_data_root, tmp_path):
    from tests.conftest import SENTENCES

    outcome = _sts_run(prompted_model, tiny_data_root, tmp_path)
    assert outcome.leaderboard.datasets[0].prompts["text"].model_dump() == {"name": "STS", "text": "similar: "}
    cosines, cells = _cosines(outcome)
    np.testing.assert_allclose(cosines[cells.index((4, 32))], _st_cosines(prompted_model, SENTENCES, prompt_name="STS"),
                               atol=1e-5)
    # no prompt: a different part (not the one above reused) with sentence-transformers' no-prompt vectors
    bare = _sts_run(prompted_model, tiny_data_root, tmp_path, prompt_name="none")
    assert bare.skipped == [] and bare.leaderboard.datasets[0].prompts is None
    cosines, cells = _cosines(bare)
    np.testing.assert_allclose(cosines[cells.index((4, 32))], _st_cosines(prompted_model, SENTENCES), atol=1e-5)
    assert not np.allclose(cosines[cells.index((4, 32))], _st_cosines(prompted_model, SENTENCES, prompt_name="STS"))
    # the same command again reuses its finished part
    assert _sts_run(prompted_model, tiny_data_root, tmp_path).skipped == ["toy-a"]


def test_retrieval_records_query_and_document_prompts(prompted_model, tmp_path):
    root = tmp_path / "data"
    write_beir(root / "beir" / "toyir")
    outcome = run(RunConfig(model=str(prompted_model), sts=[], retrieval=["toyir"], bm25=False, layers=[4], dims=[32],
                            data_root=str(root), out=str(tmp_path / "out"), show_progress=False, latency_texts=0,
                            latency_samples=0, doc_prompt="passage: "))
    prompts = {side: p.model_dump() for side, p in outcome.leaderboard.datasets[0].prompts.items()}
    assert prompts == {"query": {"name": "query", "text": "q: "}, "document": {"name": None, "text": "passage: "}}


def test_unknown_prompt_name_is_one_error(prompted_model, tiny_data_root, tmp_path):
    result = CliRunner().invoke(app, ["eval", "sts", "--model", str(prompted_model), "--datasets", "toy-a",
                                      "--data-root", str(tiny_data_root), "--out", str(tmp_path),
                                      "--prompt-name", "Retrieval"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "STS, document, query" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.csv"))  # stopped before any dataset was evaluated


def test_retrieval_refuses_a_distance_similarity(prompted_model, tmp_path):
    folder = tmp_path / "euclid"
    shutil.copytree(prompted_model, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "euclidean"}))
    root = tmp_path / "data"
    write_beir(root / "beir" / "toyir")
    with pytest.raises(ElasticIRError, match="similarity_fn_name is 'euclidean'"):
        run(RunConfig(model=str(folder), sts=[], retrieval=["toyir"], bm25=False, layers=[4], dims=[32],
                      data_root=str(root), out=str(tmp_path / "out"), show_progress=False, latency_texts=0))
