"""Token-budget batching and unpadded (packed) attention: same embeddings as the padded fixed-count path."""

import numpy as np
import pytest
import torch

from elasticir.encoders import ElasticEncoder, batching, varlen
from elasticir.errors import ElasticIRError

TEXTS = [
    "A man is playing a guitar on the street corner while people walk past.",
    "Cats sleep.",
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest to hide from the hunters.",
    "Stocks fell.",
    "Two children are swimming in a pool on a warm summer afternoon.",
    "Rain.",
    "A woman slices onions in the kitchen.",
] * 3


def test_plan_batches_respects_budget_and_cap():
    lengths = np.array([50, 40, 30, 20, 10, 10, 5, 5, 5, 5])
    padded = batching.plan_batches(lengths, batch_size=4, max_tokens=100, packed=False)
    packed = batching.plan_batches(lengths, batch_size=4, max_tokens=100, packed=True)
    for batches, cost in ((padded, lambda b: len(b) * lengths[b].max()), (packed, lambda b: lengths[b].sum())):
        assert np.array_equal(np.concatenate(batches), np.arange(len(lengths)))  # every text once, in order
        assert all(1 <= len(b) <= 4 for b in batches)
        assert all(cost(b) <= 100 for b in batches)
    assert [len(b) for b in padded] == [2, 3, 4, 1]  # 2x50, 3x30, 4x10, 1x5
    assert [len(b) for b in packed] == [2, 4, 4]  # 90, 45, 15
    assert [len(b) for b in batching.plan_batches(lengths, 3, None, packed=True)] == [3, 3, 3, 1]


def test_plan_batches_oversized_text_gets_its_own_batch():
    assert [len(b) for b in batching.plan_batches(np.array([300, 10]), 8, 100, packed=True)] == [1, 1]


def test_pack_boundaries():
    batch = batching.pack([[1, 2, 3], [4], [5, 6]])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 4, 6] and batch["max_seqlen"] == 3
    assert batch["starts"].tolist() == [0, 3, 4] and batch["segment_ids"].tolist() == [0, 0, 0, 1, 2, 2]


def test_pool_packed_matches_padded_pooling():
    hidden = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0))
    batch = batching.pack([[1, 2, 3], [4], [5, 6]])
    mean = varlen.pool_packed(hidden, batch, "mean")
    assert torch.allclose(mean[0], hidden[0, :3].mean(0)) and torch.allclose(mean[2], hidden[0, 4:].mean(0))
    assert torch.equal(varlen.pool_packed(hidden, batch, "cls"), hidden[0, [0, 3, 4]])


def test_iter_batches_covers_every_text_once():
    seen = []
    for rows, ids in batching.iter_batches(TEXTS, lambda ts: [list(range(len(t) // 4 + 1)) for t in ts],
                                           batch_size=4, max_tokens=40, packed=True, window=5):
        assert len(rows) == len(ids) <= 4 and sum(map(len, ids)) <= 40 or len(rows) == 1
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(TEXTS)))


@pytest.mark.parametrize("pooling", ["mean", pytest.param("cls", marks=pytest.mark.slow)])
def test_unpadded_and_budget_paths_equal_padded(tiny_model_dir, pooling):
    reference = ElasticEncoder(str(tiny_model_dir), device="cpu", pooling=pooling, attention="padded")
    unpadded = ElasticEncoder(str(tiny_model_dir), device="cpu", pooling=pooling, attention="unpadded",
                              max_tokens_per_batch=80)
    budget = ElasticEncoder(str(tiny_model_dir), device="cpu", pooling=pooling, attention="padded",
                            max_tokens_per_batch=64)
    assert reference.attention_note.startswith("padded") and unpadded.attention_note == "unpadded nested (flash: needs CUDA and fp16/bf16)"
    layers = [1, 3]  # early exit below the top layer, with a middle layer captured
    want = reference.encode(TEXTS, layers, batch_size=4, show_progress=False)
    for encoder in (unpadded, budget):
        got = encoder.encode(TEXTS, layers, batch_size=8, show_progress=False)
        for layer in layers:
            assert np.abs(got[layer] - want[layer]).max() <= 1e-5, (encoder.attention_note, layer)


def test_padded_encode_unchanged_from_model_call(tiny_encoder):
    """The pooled last layer equals a plain transformers forward with the tokenizer's own padding."""
    batch = tiny_encoder.tokenize(TEXTS[:5])
    with torch.inference_mode():
        hidden = tiny_encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()  # + Normalize
    got = tiny_encoder.encode(TEXTS[:5], [4], show_progress=False)[4]
    assert np.abs(got - expected).max() <= 1e-5


def test_bad_attention_and_budget_are_clear_errors(tiny_model_dir):
    with pytest.raises(ElasticIRError, match="attention 'flash'"):
        ElasticEncoder(str(tiny_model_dir), device="cpu", attention="flash")
    with pytest.raises(ElasticIRError, match="max-tokens-per-batch 10 is below the max length 64"):
        ElasticEncoder(str(tiny_model_dir), device="cpu", max_tokens_per_batch=10)


@pytest.mark.slow
def test_cli_token_budget_flag_and_its_error(tiny_model_dir, tiny_data_root, tmp_path):
    import json

    from typer.testing import CliRunner

    from elasticir.cli import app

    args = ["eval", "sts", "--model", str(tiny_model_dir), "--layers", "1,2", "--dims", "8,32", "--datasets",
            "toy-a", "--data-root", str(tiny_data_root), "--out", str(tmp_path), "--max-tokens-per-batch"]
    result = CliRunner().invoke(app, [*args, "200"])
    assert result.exit_code == 0, result.output
    board = json.loads(next(tmp_path.rglob("leaderboard.json")).read_text())
    assert board["config"]["max_tokens_per_batch"] == 200
    assert "encoder attention: padded sdpa" in board["notes"]
    bad = CliRunner().invoke(app, [*args, "10"])
    assert bad.exit_code == 2 and "--max-tokens-per-batch 10 is below the max length 64" in bad.output


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section(tmp_path, monkeypatch):
    """The GPU script's own check: --prepare then --cpu-smoke, every section without an error, packed = padded."""
    import importlib.util
    import json
    import os
    from pathlib import Path

    data = Path(os.environ.get("ELASTICIR_DATA", "/nonexistent"))
    if not (data / "beir/scifact/corpus.jsonl").is_file():
        pytest.skip("needs SciFact and STS under $ELASTICIR_DATA")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--prepare", "--data", str(tmp_path / "gpu")]) == 0
    assert gpu_check.main(["--cpu-smoke", "--data", str(tmp_path / "gpu"), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [name for name, value in results.items() if "error" in value] == []
    assert results["fp32_check"]["ok"] and set(results["encode_minilm"]["paths"]) == {"st", "padded", "budget", "unpadded"}
    assert 70 <= results["texts"]["mean_tokens"] <= 80


def test_packed_attention_does_not_recompile_under_torch_compile(monkeypatch):
    """The call counter (a module global) must not become a compile guard: one compile, then cached calls.
    (A stand-in kernel: the counter is what is tested, and the CPU kernel does not compile everywhere.)"""
    from torch._dynamo.testing import CompileCounter

    monkeypatch.setitem(varlen._KERNEL_FUNCTIONS, "identity", lambda query, *_: query)

    torch._dynamo.reset()
    counter = CompileCounter()
    attention = torch.compile(varlen.varlen_attention_forward, backend=counter)
    qkv = torch.randn(1, 2, 10, 8)
    cu_seqlens = torch.tensor([0, 4, 10], dtype=torch.int32)
    frames = []
    for _ in range(3):
        attention(None, qkv, qkv, qkv, None, elasticir_cu_seqlens=cu_seqlens, elasticir_max_seqlen=6,
                  elasticir_kernel="identity")
        frames.append(counter.frame_count)
    torch._dynamo.reset()
    assert frames[0] >= 1 and frames[2] == frames[0], frames


@pytest.mark.slow
def test_gpu_profile_cpu_smoke_runs_every_section(tmp_path):
    """The profiling script's own check on CPU: every section and every CPU-capable variant runs."""
    import importlib.util
    import json
    import os
    from pathlib import Path

    data = Path(os.environ.get("ELASTICIR_DATA", "/nonexistent"))
    if not (data / "beir/scifact/corpus.jsonl").is_file():
        pytest.skip("needs SciFact and STS under $ELASTICIR_DATA")
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    modules = {}
    for name in ("gpu_check", "gpu_profile"):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    assert modules["gpu_check"].main(["--prepare", "--data", str(tmp_path / "gpu")]) == 0
    assert modules["gpu_profile"].main(["--cpu-smoke", "--data", str(tmp_path / "gpu"), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "gpu_profile.json").read_text())
    assert [name for name, value in results.items() if "error" in value] == []
    assert set(results["split"]["unpadded"]["rows"]) == {"e2e", "pretok", "gpu_only"}
    assert all("tokens_per_s" in row for row in results["split"]["unpadded"]["rows"].values())
    assert results["profile"]["gpu_only"]["batches"] == 2
    rows = results["variants"]["rows"]
    assert "tokens_per_s" in rows["unpadded_1024"] and "tokens_per_s" in rows["padded_fp32_tf32"]
    assert any(name.startswith("compile") and "tokens_per_s" in row for name, row in rows.items())


def test_gpu_check_rejects_unknown_models_and_paths(capsys):
    """--models/--paths/--skip are checked before any work: one error line, exit status 2."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--cpu-smoke", "--models", "bert"]) == 2
    assert gpu_check.main(["--cpu-smoke", "--paths", "st,fast"]) == 2
    assert gpu_check.main(["--cpu-smoke", "--skip", "texts"]) == 2
    assert "error: --models 'bert': unknown ['bert']; choose from minilm, bert-base" in capsys.readouterr().err
