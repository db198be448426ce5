"""MS MARCO scale planning: memory and time of every index type per dim, on random unit vectors (no model).

For dims 32, 64, 128, 256, 384, 768 and index types
  flat-torch  CellIndex(index="flat", flat_backend="torch"): an fp32 matrix + exact_search (matmul + top-k)
  flat-faiss  CellIndex(index="flat", flat_backend="faiss"): faiss IndexFlat (inner product)
  sq8         CellIndex(index="sq8"):   faiss SQ8 (8-bit scalar quantiser, exhaustive scan)
  hnsw        CellIndex(index="hnsw"):  faiss HNSW32 (efSearch 128, which faiss raises to k)
  ivfpq       CellIndex(index="ivfpq"): faiss IVF<4 sqrt n>,PQ<d/4>x8 (nprobe left at faiss' default 1);
              as shipped, the factory string turns on faiss' polysemous training, a fixed cost per
              sub-quantiser (~7 s each on a busy 2-core CPU, independent of n): only --shipped-ivfpq-dims run
  ivfpq-np    the same string + "np" (no polysemous training; same codes, same bytes, same search): the fix
it builds the project's own CellIndex from n random unit vectors and measures, each config in a fresh
subprocess (so peak memory is that config's alone; the peak is reset with /proc/self/clear_refs after the
data is generated):
  build seconds (CellIndex.__init__, which for faiss includes serialising the index to count its bytes;
  the serialisation is timed again on its own), peak and resident RSS growth of the build, search seconds
  for 1,000 queries at k=1000 (CellIndex._raw_search, batched; slow exhaustive types run fewer queries and
  are scaled linearly), peak RSS growth of the search (torch's score scratch), index bytes
  (CellIndex.nbytes: faiss.serialize_index size, or the matrix bytes for torch), bytes per vector against
  the FAISS formula in `bytes_per_vector`, the share of empty (-1) result slots, and an extrapolation of
  memory and time to MS MARCO's 8,841,823 passages:
    memory  per-vector bytes x N (+ IVF centroids and PQ codebooks at N's nlist);
    time    flat, sq8: linear in n; hnsw: build n log n, search log n; ivfpq: train (k-means of min(n, 100k)
            points into 4 sqrt n lists) x the nlist and sample ratios + add (timed per vector on a re-added
            slice) x N x the nlist ratio, search sqrt n (nprobe 1). HNSW and IVF-PQ run on a smaller n.
    peak    index x the measured peak/index ratio (flat, sq8, hnsw: growth buffers and the serialised copy
            scale with n); ivfpq: 2 x index (the serialised copy) + the measured excess (training, fixed).
It also prints the on-disk embedding store per layer for 8.8M passages, fp32 (what EmbeddingStore writes
by default) vs fp16 (2 bytes x d).

Random unit vectors have no cluster structure, so quantiser quality (recall) is not measured here: only
cost. Timings drift on a shared machine; memory and bytes do not.

Run:  python benchmarks/bench_scale.py [--quick] [--n 1000000] [--n-graph 50000] [--dims 32,64,...]
                                       [--types flat-torch,flat-faiss,sq8,hnsw,ivfpq] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

MSMARCO = 8_841_823
TYPES = ("flat-torch", "flat-faiss", "sq8", "hnsw", "ivfpq", "ivfpq-np")
ALIAS = {"flat-torch": ("flat", "torch"), "flat-faiss": ("flat", "faiss"), "sq8": ("sq8", "faiss"),
         "hnsw": ("hnsw", "faiss"), "ivfpq": ("ivfpq", "faiss"), "ivfpq-np": ("ivfpq-np", "faiss")}
GRAPH_TYPES = ("hnsw", "ivfpq", "ivfpq-np")  # built on --n-graph vectors
SLOW_SCAN = ("sq8",)  # exhaustive non-BLAS scan: --scan-queries queries, scaled to --queries


# ------------------------------------------------------------------------------------------------- worker
def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _unit(rng, n: int, d: int, chunk: int = 1 << 18):
    import numpy as np

    out = np.empty((n, d), dtype=np.float32)
    for c0 in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - c0), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[c0:c0 + len(block)] = block
    return out


def worker(cfg: dict) -> dict:
    """Build one CellIndex and search it; returns numbers as a dict (printed as JSON by the subprocess)."""
    import numpy as np
    import torch

    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    from elasticir.index.dense import CellIndex, bytes_per_vector, factory_string, order_hits

    try:
        import faiss  # imported before the baseline RSS, so the library itself is not counted as the index

        if cfg["threads"] > 0:
            faiss.omp_set_num_threads(cfg["threads"])
    except ImportError:
        if ALIAS[cfg["type"]][1] == "faiss":
            raise
    n, d, nq, k = cfg["n"], cfg["d"], cfg["nq"], cfg["k"]
    rng = np.random.default_rng(cfg["seed"])
    t0 = time.perf_counter()
    docs, queries = _unit(rng, n, d), _unit(rng, nq, d)
    out = {"gen_s": time.perf_counter() - t0}
    index, backend = ALIAS[cfg["type"]]
    if index == "ivfpq-np":
        index = factory_string("ivfpq", n, d) + "np"
    device = cfg["device"] if cfg["type"] == "flat-torch" else "cpu"
    cuda = device.startswith("cuda")

    base = _status()["VmRSS"]
    out["peak_reset"] = _reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    cell = CellIndex(docs, d, normalize=False, index=index, flat_backend=backend, device=device)
    out["build_s"] = time.perf_counter() - t0
    st = _status()
    out["build_peak_bytes"] = st["VmHWM"] - base
    out["build_resident_bytes"] = st["VmRSS"] - base
    if cuda:
        out["build_peak_bytes"] = out["build_resident_bytes"] = torch.cuda.max_memory_allocated()
    out["factory"], out["backend"], out["nbytes"] = cell.factory, cell.backend, cell.nbytes
    out["bytes_per_vector"] = cell.nbytes / n
    out["formula_bytes_per_vector"] = bytes_per_vector(cell.factory, d)
    if cell.faiss is not None:
        t0 = time.perf_counter()
        cell._serialized_bytes()
        out["serialize_s"] = time.perf_counter() - t0
        if cell.factory.startswith("IVF"):
            out["nlist"] = cell._cpu_index.nlist
    else:
        out["serialize_s"] = 0.0

    cell._raw_search(queries[:8], k)  # warm-up
    base = _status()["VmRSS"]
    _reset_peak()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    scores, ids = cell._raw_search(queries, k)
    out["search_s"] = time.perf_counter() - t0
    out["search_peak_bytes"] = _status()["VmHWM"] - base
    if cuda:
        out["search_peak_bytes"] = torch.cuda.max_memory_allocated() - gpu_base
    out["empty_slots"] = float((ids < 0).mean())
    if cfg["latency_samples"]:  # one query at a time, as CellIndex.latency_ms (the grid's latency_samples)
        out["latency_p50_ms"], out["latency_p95_ms"] = cell.latency_ms(queries, k, cfg["latency_samples"])
    tie_rank = np.arange(n, dtype=np.int64)[::-1].copy()
    t0 = time.perf_counter()
    order_hits(scores, ids, tie_rank, k)
    out["order_hits_s"] = time.perf_counter() - t0
    if cell.factory.startswith("IVF"):  # split the build: re-add a slice to the trained index, time per vector
        extra = docs[: min(n, 20_000)]
        t0 = time.perf_counter()
        cell._cpu_index.add(extra)
        out["add_s_per_vector"] = (time.perf_counter() - t0) / len(extra)
        out["train_s"] = max(0.0, out["build_s"] - out["serialize_s"] - out["add_s_per_vector"] * n)
    return out


# ----------------------------------------------------------------------------------------- extrapolation
def nlist_for(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(n)), n // 39))  # as factory_string


def extrapolate(r: dict, N: int, queries: int) -> dict:
    n, d, kind = r["n"], r["d"], r["type"]
    search_1000 = r["search_s"] * queries / r["nq"]  # batched search is linear in the query count
    peak_ratio = r["build_peak_bytes"] / r["nbytes"]
    if kind.startswith("ivfpq"):
        fixed = lambda m: nlist_for(m) * d * 4 + 256 * d * 4
        per_vec = (r["nbytes"] - fixed(n)) / n
        mem = per_vec * N + fixed(N)
        lists = nlist_for(N) / nlist_for(n)
        # train: k-means on min(n, 100k) points into nlist lists; add: assignment to nlist lists per vector
        build_N = (r["train_s"] * lists * min(N, 100_000) / min(n, 100_000)
                   + r["add_s_per_vector"] * N * lists + r["serialize_s"] * N / n)
        scale_build = build_N / r["build_s"]
        scale_search = math.sqrt(N / n)
        peak_N = 2 * mem + max(0.0, r["build_peak_bytes"] - 2 * r["nbytes"])  # index + serialised copy + training
    else:
        per_vec = r["nbytes"] / n
        mem = per_vec * N
        if kind == "hnsw":
            scale_build = (N / n) * math.log(N) / math.log(n)
            scale_search = math.log(N) / math.log(n)
        else:
            scale_build = scale_search = N / n
    return {"search_s_1000q": search_1000, "search_s_1000q_per_1M": search_1000 * 1e6 / n if kind not in
            GRAPH_TYPES else None, "build_s_per_1M": r["build_s"] * 1e6 / n, "per_vector_marginal": per_vec,
            "mem_at_N": mem, "peak_over_index": peak_ratio,
            "build_peak_at_N": peak_N if kind.startswith("ivfpq") else mem * max(1.0, peak_ratio),
            "build_s_at_N": r["build_s"] * scale_build, "search_s_1000q_at_N": search_1000 * scale_search,
            "latency_p50_ms_at_N": r.get("latency_p50_ms", float("nan")) * scale_search}


# --------------------------------------------------------------------------------------------------- main
def fmt_bytes(x: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f} {unit}"
    return f"{x:.0f} B"


def fmt_s(x: float) -> str:
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 60:
        return f"{x / 60:.1f} min"
    return f"{x:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="~1 minute: n 100k, n-graph 10k")
    parser.add_argument("--n", type=int, default=None, help="vectors for flat and sq8 (default 1,000,000)")
    parser.add_argument("--n-graph", type=int, default=None, help="vectors for hnsw and ivfpq (default 50,000)")
    parser.add_argument("--dims", default="32,64,128,256,384,768")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--scan-queries", type=int, default=None,
                        help="queries actually run for sq8 (exhaustive scan, no BLAS); scaled to --queries "
                             "(default 100; --quick 100)")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--shipped-ivfpq-dims", default="32",
                        help="dims at which the shipped ivfpq (with polysemous training) runs; ivfpq-np runs at all")
    parser.add_argument("--latency-samples", type=int, default=10,
                        help="one-query searches timed per config (CellIndex.latency_ms); 0 to skip")
    parser.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: library default)")
    parser.add_argument("--device", default="cpu", help="device of the torch flat index (cpu or cuda)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per config subprocess")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 240))
    n = args.n or (100_000 if args.quick else 1_000_000)
    n_graph = args.n_graph or (10_000 if args.quick else 50_000)
    scan_q = args.scan_queries or 100
    dims = [int(x) for x in args.dims.split(",")]
    types = [t for t in args.types.split(",") if t]
    shipped_dims = {int(x) for x in args.shipped_ivfpq_dims.split(",") if x}
    for t in types:
        if t not in TYPES:
            parser.error(f"unknown type {t!r}; choose from {', '.join(TYPES)}")
    load_start = os.getloadavg()
    console.print(f"[bold]bench_scale[/bold]: random unit vectors; flat/sq8 n={n:,}, hnsw/ivfpq n={n_graph:,}; "
                  f"dims {dims}; {args.queries} queries at k={args.k} (sq8: {scan_q} run, scaled); torch flat on "
                  f"{args.device}; threads {'default' if args.threads <= 0 else args.threads}; cpu_count "
                  f"{os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in load_start)}; extrapolated to "
                  f"N = {MSMARCO:,} (MS MARCO passages)")
    results = []
    started = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for kind in types:
        for d in dims:
            if kind == "ivfpq" and d not in shipped_dims:
                continue
            cfg = {"type": kind, "d": d, "n": n_graph if kind in GRAPH_TYPES else n, "k": args.k,
                   "nq": scan_q if kind in SLOW_SCAN else args.queries, "seed": args.seed,
                   "threads": args.threads, "device": args.device, "latency_samples": args.latency_samples}
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], check=False,
                                      capture_output=True, text=True, timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                console.print(f"  {kind} d={d}: [red]timed out after {args.timeout}s[/red]")
                continue
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                console.print(f"  {kind} d={d}: [red]failed (rc {proc.returncode})[/red]\n{proc.stderr[-2000:]}")
                continue
            r = cfg | json.loads(lines[-1][len("RESULT "):])
            r["wall_s"] = time.perf_counter() - t0
            r |= extrapolate(r, MSMARCO, args.queries)
            results.append(r)
            console.print(f"  {kind:10s} d={d:4d} n={r['n']:,}: build {r['build_s']:.2f}s, search {r['nq']}q "
                          f"{r['search_s']:.2f}s, {r['bytes_per_vector']:.1f} B/vec, subprocess {r['wall_s']:.0f}s "
                          f"(total {time.perf_counter() - started:.0f}s)")

    for r in results:  # the shipped ivfpq = ivfpq-np + a fixed polysemous-training cost (independent of n)
        fix = next((x for x in results if x["type"] == "ivfpq-np" and x["d"] == r["d"]), None)
        if r["type"] == "ivfpq" and fix is not None:
            r["polysemous_s"] = r["build_s"] - fix["build_s"]
            r["build_s_at_N"] = fix["build_s_at_N"] + r["polysemous_s"]

    t = Table(title=f"Measured (flat/sq8 n={n:,}; hnsw/ivfpq n={n_graph:,}); search = {args.queries} queries, "
                    f"k={args.k}, batched")
    cols = ["type", "d", "n", "factory", "build", "build /1M", "serialize", "search", "search /1M", "order_hits",
            "1-query p50", "index bytes", "B/vec", "formula", "build peak ΔRSS", "resident ΔRSS", "search peak Δ",
            "empty slots"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("type", "factory") else "right")
    for r in results:
        t.add_row(r["type"], str(r["d"]), f"{r['n']:,}", r["factory"], fmt_s(r["build_s"]), fmt_s(r["build_s_per_1M"]),
                  fmt_s(r["serialize_s"]), fmt_s(r["search_s_1000q"]) + ("*" if r["nq"] != args.queries else ""),
                  fmt_s(r["search_s_1000q_per_1M"]) if r["search_s_1000q_per_1M"] is not None else "-",
                  fmt_s(r["order_hits_s"] * args.queries / r["nq"]),
                  f"{r['latency_p50_ms']:.1f} ms" if "latency_p50_ms" in r else "-", fmt_bytes(r["nbytes"]),
                  f"{r['bytes_per_vector']:.1f}", f"{r['formula_bytes_per_vector']:.0f}",
                  fmt_bytes(r["build_peak_bytes"]), fmt_bytes(r["build_resident_bytes"]),
                  fmt_bytes(r["search_peak_bytes"]), f"{r['empty_slots']:.1%}")
    console.print(t)
    console.print(f"  * sq8 searched {scan_q} queries, scaled linearly to {args.queries}. /1M columns scale "
                  "linearly in n (hnsw/ivfpq: see the models below). peak ΔRSS = growth of the process's "
                  "high-water mark over the RSS before the step" + ("" if all(r["peak_reset"] for r in results)
                                                                    else " (peak reset FAILED: lifetime peaks)"))

    t = Table(title=f"Extrapolated to MS MARCO, N = {MSMARCO:,} passages (one cell; a 6x5 grid holds 30 such "
                    "indexes one at a time)")
    for c in ("type", "d", "index memory", "B/vec (marginal)", "build peak (model)", "build time",
              "search 1000q", "1-query p50", "latency_samples=100 x 30 cells",
              "model", "empty slots at N (nprobe 1, k=1000)"):
        t.add_column(c, justify="left" if c in ("type", "model") else "right")
    for r in results:
        ivf = "train x nlist ratio, add x N x nlist ratio; search sqrt n"
        model = {"hnsw": "build n log n, search log n", "ivfpq": ivf, "ivfpq-np": ivf}.get(r["type"], "linear in n")
        if "polysemous_s" in r:
            model = f"ivfpq-np + {r['polysemous_s']:.0f} s polysemous (fixed)"
        empty = ""
        if r["type"].startswith("ivfpq"):
            per_list = MSMARCO / nlist_for(MSMARCO)
            empty = f"~{max(0.0, 1 - per_list / args.k):.0%} (lists of ~{per_list:.0f})"
        t.add_row(r["type"], str(r["d"]), fmt_bytes(r["mem_at_N"]), f"{r['per_vector_marginal']:.1f}",
                  fmt_bytes(r["build_peak_at_N"]), fmt_s(r["build_s_at_N"]), fmt_s(r["search_s_1000q_at_N"]),
                  f"{r['latency_p50_ms_at_N']:.0f} ms", fmt_s(r["latency_p50_ms_at_N"] * 100 * 30 / 1000),
                  model, empty)
    console.print(t)

    t = Table(title=f"Embedding store on disk for N = {MSMARCO:,} passages (EmbeddingStore writes every layer at "
                    "full width)")
    for c in ("hidden d", "layers", "fp32 / layer (4 B x d)", "fp16 / layer (2 B x d)", "fp32 all layers",
              "fp16 all layers"):
        t.add_column(c, justify="right")
    for d, layers in ((384, 6), (768, 12), (1024, 24)):
        t.add_row(str(d), str(layers), fmt_bytes(4 * d * MSMARCO), fmt_bytes(2 * d * MSMARCO),
                  fmt_bytes(4 * d * MSMARCO * layers), fmt_bytes(2 * d * MSMARCO * layers))
    console.print(t)
    load_end = os.getloadavg()
    console.print(f"load average at end {' '.join(f'{x:.2f}' for x in load_end)}; total "
                  f"{time.perf_counter() - started:.0f}s")
    if args.json:
        record = {"settings": vars(args) | {"n": n, "n_graph": n_graph, "scan_queries": scan_q},
                  "msmarco_passages": MSMARCO, "load_average": {"start": load_start, "end": load_end},
                  "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        console.print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
