"""Local executor vs Ray (1 and 2 workers) on this machine, and a projection to full MS MARCO on 1, 8, 16 GPUs.

Measured part: one `elasticir` retrieval run (encode corpus + queries at every layer, then the whole grid:
index, exact search, scoring, run files) over a synthetic corpus with MS MARCO's passage-length distribution,
with the executor as the only change: `local` (this process, 2 torch threads), `ray` with 1 actor (2 threads)
and with 2 actors (1 thread each), on a local Ray cluster of 2 CPUs started once before the timings (its start
is reported apart; its workers at nice 0 like the local process, not Ray's default 15). Every configuration gets a fresh embedding cache, so each one encodes; the wall time
includes the actors' start and model load (a real cost of the executor). Configurations are interleaved, in a
shuffled order per repeat; the table gives the median and every metric's largest difference to `local`.

Corpus: real texts (SciFact titles + abstracts and STS sentences from $ELASTICIR_DATA) repeated and cut to
MS MARCO's passage lengths by `build_passages` of benchmarks/gpu_check.py: each passage starts at a random line
start of the word stream and takes w consecutive words, w ~ lognormal (mean 56, sd 25 words, clipped 8..220),
rescaled once so the mean is 75 tokens. Queries: a known-item task (a query = 4..10 consecutive words from the
middle of a random passage, qrel = that passage), enough to check that every executor gives the same ranking.

Projection: MS MARCO (8,841,823 passages x 75.7 tokens, 6,980 dev queries) for a 12 x 768 model at all 12
layers and its 72-cell grid (12 layers x dims 32..768), from the per-GPU encode throughput measured on an H100
(results/examples/gpu: 947,427 tokens/s end to end, unpadded, every layer captured) and the H100 exact-search
rate (105,247 queries/s over 1M x 768 bf16, k=1000), linear in GPUs; cell scoring from the per-query-cell
seconds measured here; reading each cell's layer from the store at an assumed (not measured) 2 GB/s.

Run:  ELASTICIR_DATA=... ELASTICIR_MODELS=... python benchmarks/bench_distributed.py [--passages 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MSMARCO_PASSAGES, MSMARCO_QUERIES, MSMARCO_MEAN_TOKENS = 8_841_823, 6_980, 75.7
H100_TOKENS_PER_S = 947_427  # bert-base shape, all 12 layers, unpadded, results/examples/gpu (tokenize workers)
H100_SEARCH_QPS_1M_768 = 105_247  # torch matmul+topk bf16, 1M x 768, k=1000, results/examples/gpu
DISK_BYTES_PER_S = 2e9  # assumed store read rate (NVMe); not measured here
GRID_LAYERS, GRID_DIMS = 12, (32, 64, 128, 256, 512, 768)
BEIR_ANCHOR = "BEIR multi-node encoding: MS MARCO with e5-large on 16 GPUs in 1 h 03 min"


def real_lines(data: Path) -> list[str]:
    lines = []
    with open(data / "beir" / "scifact" / "corpus.jsonl") as handle:
        for line in handle:
            doc = json.loads(line)
            lines.append(f"{doc['title']} {doc['text']}".strip())
    from elasticir.data.sts import load_sts

    pairs = load_sts(data / "sts" / "stsbenchmark" / "test.jsonl.gz")
    return lines + pairs.sentence1 + pairs.sentence2


def write_corpus(folder: Path, passages: list[str], queries: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps({"_id": f"p{i}", "title": "", "text": text}) + "\n" for i, text in enumerate(passages))
    chosen = rng.sample(range(len(passages)), queries)
    with open(folder / "queries.jsonl", "w") as handle, open(folder / "qrels" / "test.tsv", "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for q, row in enumerate(chosen):
            words = passages[row].split()
            size = min(len(words), rng.randint(4, 10))
            start = rng.randint(0, len(words) - size)
            handle.write(json.dumps({"_id": f"q{q}", "text": " ".join(words[start:start + size])}) + "\n")
            qrels.write(f"q{q}\tp{row}\t1\n")


def one_run(name: str, encoder, data_root: Path, tmp: Path, workers: int | None, dims: list[int]) -> dict:
    from elasticir.runner import RunConfig, run

    out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{name}-"))
    config = RunConfig(model="unused", sts=[], retrieval=["msmarco-like"], dims=dims, bm25=False,
                       latency_texts=0, latency_samples=0, data_root=str(data_root), out=str(out / "runs"),
                       cache_dir=str(out / "cache"), show_progress=False,
                       executor="local" if workers is None else "ray", workers=workers)
    from elasticir.execution.ray import RayExecutor

    startups, close = [], RayExecutor.close

    def recording_close(executor):  # the run's executor is closed inside run(): read its actor start-up first
        startups.extend(executor.startup_s)
        close(executor)

    RayExecutor.close = recording_close
    try:
        started = time.perf_counter()
        outcome = run(config, encoder)
        wall = time.perf_counter() - started
    finally:
        RayExecutor.close = close
    timings = {t.stage: t.seconds for t in outcome.leaderboard.timings if t.dataset == "msmarco-like"}
    if workers is not None:
        timings["actor_startup"] = sum(startups)
    cells = outcome.cells.sort_values(["layer", "dim"])
    return {"config": name, "wall_s": wall, "timings": timings,
            "metrics": cells[["layer", "dim", "nDCG@10", "RR@10", "R@100"]].to_dict("records")}


def measure(args) -> dict:
    import ray
    import torch
    from gpu_check import build_passages

    from elasticir.encoders import ElasticEncoder

    torch.set_num_threads(2)
    data = Path(os.environ["ELASTICIR_DATA"])
    encoder = ElasticEncoder(args.model, device="cpu")
    passages, stats = build_passages(real_lines(data), encoder.tokenizer, args.passages)
    lengths = [len(ids) for ids in encoder.tokenizer(passages[:2000], truncation=True,
                                                     max_length=encoder.info.max_length)["input_ids"]]
    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    write_corpus(tmp / "data" / "beir" / "msmarco-like", passages, args.queries)
    started = time.perf_counter()
    # Ray runs its workers at nice 15 by default: on a machine shared with other jobs they would lose the CPU to
    # every normal process and the comparison would measure the scheduler, not the executor
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - started
    configs = {"local": None, "ray-1": 1, "ray-2": 2}
    dims = [d for d in (32, 64, 128, 256, 384, 512, 768) if d <= encoder.hidden_size]
    runs = []
    order = list(configs)
    for repeat in range(args.repeats):
        random.Random(repeat).shuffle(order)
        for name in order:
            result = one_run(name, encoder, tmp / "data", tmp, configs[name], dims)
            print(f"repeat {repeat}: {name:6s} {result['wall_s']:.1f} s", flush=True)
            runs.append(result)
    ray.shutdown()
    return {"model": args.model, "layers": encoder.num_layers, "dims": dims, "passages": args.passages,
            "queries": args.queries, "corpus": stats | {"mean_tokens": float(np.mean(lengths)),
                                                        "p99_tokens": float(np.percentile(lengths, 99))},
            "ray_start_s": ray_start, "cpus": os.cpu_count(), "runs": runs,
            "load_average": os.getloadavg()}


def summarise(measured: dict) -> dict:
    by = {}
    for run in measured["runs"]:
        by.setdefault(run["config"], []).append(run)
    local = by["local"][0]["metrics"]
    rows = {}
    for name, runs in by.items():
        walls = [r["wall_s"] for r in runs]
        diff = max(abs(a[m] - b[m]) for r in runs for a, b in zip(r["metrics"], local)
                   for m in ("nDCG@10", "RR@10", "R@100"))
        encode = statistics.median(r["timings"].get("encode", float("nan")) for r in runs)
        grid = statistics.median(sum(r["timings"].get(s, 0) for s in ("index", "search", "evaluate")) for r in runs)
        startup = statistics.median(r["timings"].get("actor_startup", 0.0) for r in runs)
        rows[name] = {"median_wall_s": statistics.median(walls), "walls_s": walls, "median_encode_s": encode,
                      "median_cells_cpu_s": grid, "median_actor_startup_s": startup,
                      "max_metric_diff_vs_local": diff}
    for row in rows.values():
        row["speedup_vs_local"] = rows["local"]["median_wall_s"] / row["median_wall_s"]
    local_runs = by["local"]
    cells = len(local) * measured["queries"]
    per_query_cell = statistics.median(r["timings"].get("evaluate", 0) / cells for r in local_runs)
    return {"table": rows, "score_s_per_query_cell": per_query_cell}


def projection(score_s_per_query_cell: float) -> dict:
    tokens = MSMARCO_PASSAGES * MSMARCO_MEAN_TOKENS
    encode_1 = tokens / H100_TOKENS_PER_S
    search_cell = MSMARCO_QUERIES / H100_SEARCH_QPS_1M_768 * MSMARCO_PASSAGES / 1e6  # at d=768: an upper bound
    score_cell = score_s_per_query_cell * MSMARCO_QUERIES
    rows = []
    for dtype, size in (("float32", 4), ("float16", 2)):
        store = GRID_LAYERS * MSMARCO_PASSAGES * max(GRID_DIMS) * size
        read_cell = MSMARCO_PASSAGES * max(GRID_DIMS) * size / DISK_BYTES_PER_S  # a prefix read touches every page
        cell = read_cell + search_cell + score_cell
        for gpus in (1, 8, 16):
            cells = GRID_LAYERS * len(GRID_DIMS)
            rows.append({"store_dtype": dtype, "store_GB": store / 1e9, "gpus": gpus,
                         "encode_min": encode_1 / gpus / 60, "grid_min": np.ceil(cells / gpus) * cell / 60,
                         "total_min": (encode_1 / gpus + np.ceil(cells / gpus) * cell) / 60})
    e5_ratio = (24 * (4 * 1024**2 + 2 * 1024 * 4096)) / (12 * (4 * 768**2 + 2 * 768 * 3072))
    return {"tokens": tokens, "encode_s_1gpu": encode_1, "target_s_1gpu": 600,
            "fraction_of_target_speed": 600 / encode_1, "search_s_per_cell_d768": search_cell,
            "score_s_per_cell": score_cell, "rows": rows,
            "e5_large_flops_ratio": e5_ratio, "e5_large_16gpu_min": encode_1 * e5_ratio / 16 / 60,
            "anchor": BEIR_ANCHOR}


def markdown(measured: dict, summary: dict, proj: dict) -> str:
    c = measured["corpus"]
    lines = [f"# bench_distributed ({measured['model']}, {measured['layers']} layers, dims {measured['dims']})", "",
             (f"{measured['passages']} synthetic passages (mean {c['mean_tokens']:.1f} tokens, p99 {c['p99_tokens']:.0f}),"
             f" {measured['queries']} known-item queries; {measured['cpus']} CPUs shared with other jobs (load "
             f"average at the end {measured['load_average'][0]:.1f}); Ray local cluster start "
             f"{measured['ray_start_s']:.1f} s (not in the walls)."), "",
             ("| executor | threads | median wall s | walls s | encode s | of which actor start + model load s "
             "| cells (index+search+score) s | speed-up | max metric diff vs local |"),
             "|---|---|---|---|---|---|---|---|---|"]
    threads = {"local": "2", "ray-1": "1 actor x 2", "ray-2": "2 actors x 1"}
    for name, row in summary["table"].items():
        lines.append(f"| {name} | {threads[name]} | {row['median_wall_s']:.1f} | "
                     f"{', '.join(f'{w:.1f}' for w in row['walls_s'])} | {row['median_encode_s']:.1f} | "
                     f"{row['median_actor_startup_s']:.1f} | "
                     f"{row['median_cells_cpu_s']:.1f} | {row['speedup_vs_local']:.2f}x | "
                     f"{row['max_metric_diff_vs_local']:.1e} |")
    lines += ["", "## Projection: MS MARCO, 12 x 768, all 12 layers, 72-cell grid (H100 rates; linear in GPUs)", "",
              (f"Encode {proj['tokens'] / 1e6:.0f}M tokens at {H100_TOKENS_PER_S:,} tok/s per GPU: "
              f"{proj['encode_s_1gpu'] / 60:.1f} min on 1 GPU ({proj['fraction_of_target_speed']:.2f}x the speed the "
              f"10-minute target needs). Per cell: search {proj['search_s_per_cell_d768']:.2f} s (d=768 bound), "
              f"scoring {proj['score_s_per_cell']:.1f} s (CPU, measured here per query-cell), store read at an "
              f"assumed {DISK_BYTES_PER_S / 1e9:.0f} GB/s."), "",
              "| store dtype | store GB | GPUs | encode min | grid min | total min |", "|---|---|---|---|---|---|"]
    for r in proj["rows"]:
        lines.append(f"| {r['store_dtype']} | {r['store_GB']:.0f} | {r['gpus']} | {r['encode_min']:.1f} | "
                     f"{r['grid_min']:.1f} | {r['total_min']:.1f} |")
    lines += ["", (f"Anchor: {proj['anchor']}. e5-large (24 x 1024) costs {proj['e5_large_flops_ratio']:.2f}x the "
              f"FLOPs per token of bert-base; at our measured per-GPU rate that is {proj['e5_large_16gpu_min']:.1f} "
              "min on 16 GPUs (projection, not measured; their passages, lengths and stack differ).")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(os.environ.get("ELASTICIR_MODELS", ""),
                                                        "paraphrase-MiniLM-L3-v2"))
    parser.add_argument("--passages", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "examples" / "distributed"))
    args = parser.parse_args(argv)
    measured = measure(args)
    summary = summarise(measured)
    proj = projection(summary["score_s_per_query_cell"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in measured["runs"]:
        run.pop("metrics")  # kept small: the equality is in the summary
    measured["model"] = Path(measured["model"]).name
    (out / "bench_distributed.json").write_text(json.dumps(
        {"measured": measured, "summary": summary, "projection": proj}, indent=2, default=float))
    text = markdown(measured, summary, proj)
    (out / "bench_distributed.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
