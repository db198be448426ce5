"""GPU end to end: encode at MS MARCO passage lengths with a token store, every layer captured, and the whole
grid searched on the GPU. One script, one run (< ~8 minutes on one H100/H200), every section fail-soft.

Sections:
  matmul     the bf16 8192^3 matmul rate here (the measured peak MFU is also given against)
  texts      synthetic passages with MS MARCO's length distribution (gpu_check's builder: real STS / SciFact
             words, lognormal ~56 words, rescaled to 75 tokens mean)
  store      the token store (elasticir.encoders.token_store) built once for those texts (tokenizer workers as
             the encoder picks them), then reopened (what every later run and every model sharing the tokenizer
             pays)
  encode_*   all-MiniLM-L6-v2 (real weights when the package or folder is here, else its config with random
             weights: speed does not depend on the weights) and a 12 x 768 BERT config (random weights), bf16,
             packed (unpadded) batches of <= --max-tokens tokens, every layer captured, three levels:
               e2e        `ElasticEncoder.encode(texts)`: tokenizing as today (background thread / workers)
               store      the same `encode` reading ids from the token store (`token_store=`): collation,
                          pinned copies, forward, pooling and the overlapped host copies still run
               gpu_only   the same batches collated and on the device up front; forward + pooled stack only
               compiled   (--compile) `store` with the model under torch.compile (early-exit hooks inside)
             tokens/s counts real tokens; FLOPs are analytic (elasticir.encoders.cost: matmuls only, per layer
             8H^2 + 4HI + 4nH per token, summed over every layer run); MFU against the bf16 dense datasheet peak
             (989 TFLOP/s, H100 SXM and H200 alike) and against the measured matmul rate.
  grid       the 72-cell grid (12 layers x dims 32..768) searched exactly over a 1M x 768 float16 store held
             in pinned host memory, streamed to the GPU in chunks (elasticir.index.streamed.grid_search: one pass
             per layer serves its 6 dims), --grid-queries queries, k = --grid-k (+ the tie margin); then the
             tie-ordering of every cell on the host (dense.order_hits). Each layer's pass is the same work, so
             the layers timed (until the time budget) stand for all 12.
  projection MS MARCO (8.84M passages at the measured mean tokens; 6,980 dev queries): encode of the 12 x 768
             model at every layer from the `store` rate, plus the grid scaled linearly in documents and queries
             from the grid section, on 1 GPU and on 8 (passages and store rows split 8 ways: linear).

Run (GPU):  python benchmarks/gpu_check.py --prepare            (here: writes .gpu/, the texts and tokenizer)
            python benchmarks/gpu_e2e.py --data .gpu --out $OUT --compile   (.gpu/ travels with the checkout)
Run (CPU):  python benchmarks/gpu_e2e.py --cpu-smoke           (every section, tiny; checks the script itself)
Without a GPU (and without --cpu-smoke) it prints one error line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's elasticir, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check as gc

MSMARCO_DEV_QUERIES = 6_980
GRID_DIMS = (32, 64, 128, 256, 512, 768)
GPUS = (1, 8)


# ---------------------------------------------------------------- texts and the token store

def section_texts(ctx: dict) -> dict:
    stats = gc.section_texts(ctx)
    return {key: value for key, value in stats.items() if not isinstance(value, list)}


def section_store(ctx: dict) -> dict:
    """Build the token store of the passages once, then reopen it; both timed."""
    from elasticir.encoders import ElasticEncoder

    ctx["root"] = Path(tempfile.mkdtemp(prefix="gpu_e2e_"))
    ctx["models"] = {name: model_folder(ctx, name) for name in ("minilm", "bert-base")}
    encoder = ElasticEncoder(str(ctx["models"]["bert-base"][0]), device=ctx["device"], dtype=ctx["dtype"])
    start = time.perf_counter()
    store = encoder.build_token_store(ctx["passages"], ctx["root"] / "cache")
    built = time.perf_counter() - start
    start = time.perf_counter()
    ctx["store"] = encoder.build_token_store(ctx["passages"], ctx["root"] / "cache")
    reopened = time.perf_counter() - start
    tokens = int(store.offsets[-1])
    return {"texts": len(store), "tokens": tokens, "build_s": built, "reopen_s": reopened,
            "build_tokens_per_s": tokens / built, "msmarco_build_minutes": gc.MSMARCO_PASSAGES / (len(store) / built) / 60,
            "folder_bytes": sum(p.stat().st_size for p in store.folder.iterdir())}


def model_folder(ctx: dict, name: str) -> tuple[Path, str]:
    """(sentence-transformers folder, what its weights are): real all-MiniLM-L6-v2 when present, else random."""
    from elasticir.encoders import resolve_model_path
    from elasticir.errors import ElasticIRError

    why = "random weights (speed does not depend on them)"
    if name == "minilm" and not ctx["smoke"]:
        try:
            return resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")[0], "real weights"
        except ElasticIRError as exc:  # not installed on this machine: its config with random weights
            why += f"; real weights not found: {str(exc)[:120]}"
    return gc.build_model(ctx, name, ctx["root"])[0], why


# ---------------------------------------------------------------- encoding

def encode_flops(lengths: np.ndarray, folder: Path) -> float:
    """Analytic FLOPs of every layer over these texts (elasticir.encoders.cost, matmuls only)."""
    from elasticir.encoders.cost import EncoderShape, encode_flops_per_token

    shape = EncoderShape.from_folder(folder)
    values, counts = np.unique(lengths, return_counts=True)
    return float(sum(int(n) * int(c) * encode_flops_per_token(shape, shape.num_layers, int(n), pooling="none")
                     for n, c in zip(values, counts)))


def device_batches(encoder, texts, store, cap: int) -> list[dict]:
    """The packed batches `encode` forms from the store, collated and on the device once (gpu_only)."""
    from elasticir.encoders import batching

    out = [batching.to_device(batching.pack(ids), encoder.device) for _rows, ids in batching.iter_batches(
        texts, None, batch_size=cap, max_tokens=encoder.max_tokens_per_batch, packed=True,
        window=max(8 * cap, 4096), pretokenized=store.arrays)]
    gc.sync(encoder.device)
    return out


def encode_paths(ctx: dict, folder: Path) -> dict:
    """{path: run()} for e2e, store, gpu_only (and compiled with --compile)."""
    from elasticir.encoders import ElasticEncoder

    texts, store, cap = ctx["passages"], ctx["store"], ctx["cap"]

    def encoder_of():
        return ElasticEncoder(str(folder), device=ctx["device"], dtype=ctx["dtype"], attention="unpadded",
                              max_tokens_per_batch=ctx["max_tokens"])

    encoder = encoder_of()
    layers = list(range(1, encoder.num_layers + 1))
    batches = device_batches(encoder, texts, store, cap)

    def gpu_only():
        with torch.inference_mode():
            for batch in batches:
                pooled = encoder.forward_packed(batch, layers)
                torch.stack([pooled[layer].float() for layer in layers])

    paths = {"e2e": lambda: encoder.encode(texts, layers, batch_size=cap, show_progress=False),
             "store": lambda: encoder.encode(texts, layers, batch_size=cap, show_progress=False, token_store=store),
             "gpu_only": gpu_only}
    if ctx["compile"]:
        compiled = encoder_of()
        compiled.model = torch.compile(compiled.model, dynamic=True, backend=ctx["compile_backend"])
        paths["compiled"] = lambda: compiled.encode(texts, layers, batch_size=cap, show_progress=False,
                                                    token_store=store)
    return {"paths": paths, "note": encoder.attention_note, "layers": len(layers), "batches": len(batches)}


def time_paths(ctx: dict, paths: dict, outputs: dict) -> dict[str, list[float] | str]:
    """One untimed warm-up each (the e2e and store embeddings kept in `outputs`), then --repeats timed runs
    interleaved; repeats stop at the deadline."""
    times: dict = {}
    for name, run in paths.items():
        left = ctx["deadline"] - time.monotonic()
        if name == "compiled" and left < ctx["compile_reserve_s"]:  # compiling takes minutes: not past the budget
            times[name] = f"skipped: {left:.0f} s of the time budget left, compiling needs {ctx['compile_reserve_s']} s"
            continue
        try:
            result = run()
            if name in ("e2e", "store"):
                outputs[name] = result
            times[name] = []
        except Exception as exc:  # noqa: BLE001 - fail soft: this path is dropped, the others run
            times[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    for repeat in range(ctx["repeats"]):
        for name in [n for n, t in times.items() if isinstance(t, list)]:
            if repeat and time.monotonic() > ctx["deadline"]:
                continue
            gc.sync(ctx["device"])
            start = time.perf_counter()
            paths[name]()
            gc.sync(ctx["device"])
            times[name].append(time.perf_counter() - start)
    return times


def section_encode(ctx: dict, name: str) -> dict:
    folder, weights = ctx["models"][name]
    built = encode_paths(ctx, folder)
    flops, tokens = encode_flops(ctx["lengths"], folder), int(ctx["lengths"].sum())
    rows, outputs = {}, {}
    for path, seconds in time_paths(ctx, built.pop("paths"), outputs).items():
        if isinstance(seconds, str) or not seconds:
            rows[path] = {"error": seconds or "not timed (deadline)"}
            continue
        median = statistics.median(seconds)
        rows[path] = {"seconds": seconds, "median_s": median, "tokens_per_s": tokens / median,
                      "texts_per_s": len(ctx["lengths"]) / median, "tflops": flops / median / 1e12,
                      "mfu_datasheet": flops / median / gc.DATASHEET_PEAK,
                      "mfu_measured": flops / median / ctx["measured_peak"] if ctx.get("measured_peak") else None}
    if ctx["device"].type == "cuda":
        torch.cuda.empty_cache()
    if len(outputs) == 2:  # the store must change nothing but where the ids come from
        built["store_vs_e2e_max_abs_diff"] = max(float(np.abs(outputs["store"][layer] - outputs["e2e"][layer]).max())
                                                 for layer in outputs["e2e"])
    return built | {"weights": weights, "tokens": tokens, "flops": flops, "rows": rows}


# ---------------------------------------------------------------- the grid on the GPU

def unit_store(n: int, dim: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """n random unit vectors in float16, made on the device in slices and kept in (pinned) host memory."""
    generator = torch.Generator(device=device).manual_seed(seed)
    host = torch.empty((n, dim), dtype=torch.float16, pin_memory=device.type == "cuda")
    for first in range(0, n, 1 << 18):
        block = torch.randn((min(1 << 18, n - first), dim), device=device, generator=generator)
        host[first:first + len(block)] = torch.nn.functional.normalize(block, dim=1).half().cpu()
    return host


def section_grid(ctx: dict) -> dict:
    """Every layer's one-pass streamed search over the same 1M x 768 store; then the per-cell tie ordering."""
    from elasticir.index.dense import TIE_MARGIN, order_hits, tie_ranks
    from elasticir.index.streamed import grid_search

    n, dims, k, device = ctx["grid_n"], ctx["grid_dims"], ctx["grid_k"], ctx["device"]
    store = unit_store(n, max(dims), device)
    queries = unit_store(ctx["grid_queries"], max(dims), device, seed=1).float().numpy()
    ranks = tie_ranks([f"{i:08d}" for i in range(n)])
    search = lambda: grid_search(queries, store, dims, k + TIE_MARGIN, normalize=True, device=device,
                                 dtype=torch.float16, chunk=ctx["grid_chunk"])
    search()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    layer_s, raw = [], None
    for _layer in range(ctx["grid_layers"]):
        if layer_s and time.monotonic() > ctx["deadline"] + ctx["grid_reserve_s"]:
            break
        gc.sync(device)
        start = time.perf_counter()
        raw = search()
        gc.sync(device)
        layer_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    for dim in dims:
        order_hits(*raw[dim], ranks, k)
    order_s = time.perf_counter() - start
    per_layer = statistics.median(layer_s)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {"store": [n, max(dims)], "dims": list(dims), "queries": len(queries), "k": k, "chunk": ctx["grid_chunk"],
            "layers_timed": len(layer_s), "layer_seconds": layer_s, "per_layer_s": per_layer,
            "order_per_layer_s": order_s, "grid_s": ctx["grid_layers"] * (per_layer + order_s),
            "cells": ctx["grid_layers"] * len(dims), "device_peak_bytes": peak}


# ---------------------------------------------------------------- projection, table, main

def section_projection(results: dict) -> dict:
    mean_tokens = results.get("texts", {}).get("mean_tokens", gc.MSMARCO_MEAN_TOKENS)
    rows = results.get("encode_bert-base", {}).get("rows", {})
    rate = next((rows[p]["tokens_per_s"] for p in ("compiled", "store", "e2e") if "tokens_per_s" in rows.get(p, {})),
                None)
    grid = results.get("grid", {})
    if rate is None or "grid_s" not in grid:
        return {"error": "needs the encode_bert-base and grid sections"}
    encode_s = gc.MSMARCO_PASSAGES * mean_tokens / rate
    search_scale = (gc.MSMARCO_PASSAGES / grid["store"][0]) * (MSMARCO_DEV_QUERIES / grid["queries"])
    grid_s = grid["grid_s"]
    return {"passages": gc.MSMARCO_PASSAGES, "mean_tokens": mean_tokens, "encode_tokens_per_s": rate,
            "queries": MSMARCO_DEV_QUERIES,
            "gpus": {g: {"encode_s": encode_s / g, "grid_s": grid_s * search_scale / g,
                         "total_s": (encode_s + grid_s * search_scale) / g} for g in GPUS}}


def table(results: dict) -> str:
    lines = []
    if "tflops" in results.get("matmul", {}):
        lines.append(f"matmul {results['matmul']['dtype']}: {results['matmul']['tflops']:.0f} TFLOP/s")
    store = results.get("store", {})
    if "build_s" in store:
        lines.append(f"token store: {store['texts']} texts / {store['tokens']} tokens built in {store['build_s']:.2f} s "
                     f"({store['build_tokens_per_s']:.0f} tok/s; MS MARCO {store['msmarco_build_minutes']:.1f} min, once), "
                     f"reopened in {1e3 * store['reopen_s']:.1f} ms")
    for name in ("minilm", "bert-base"):
        section = results.get(f"encode_{name}", {})
        if "store_vs_e2e_max_abs_diff" in section:
            lines.append(f"{name:<10} store vs e2e embeddings, all layers: max |diff| "
                         f"{section['store_vs_e2e_max_abs_diff']:.1e} ({section['weights']})")
        for path, row in section.get("rows", {}).items():
            if "error" in row:
                lines.append(f"{name:<10} {path:<9} {row['error'][:100]}")
                continue
            measured = f"{100 * row['mfu_measured']:5.1f}" if row.get("mfu_measured") else "    -"
            lines.append(f"{name:<10} {path:<9} {row['tokens_per_s']:>11.0f} tok/s {row['texts_per_s']:>9.0f} texts/s "
                         f"{row['tflops']:>7.1f} TFLOP/s  MFU {100 * row['mfu_datasheet']:5.1f}% (measured peak "
                         f"{measured}%)")
    grid = results.get("grid", {})
    if "per_layer_s" in grid:
        lines.append(f"grid {grid['cells']} cells over {grid['store'][0]}x{grid['store'][1]} float16 (streamed, chunk "
                     f"{grid['chunk']}), {grid['queries']} queries, k={grid['k']}: {grid['per_layer_s']:.3f} s search "
                     f"+ {grid['order_per_layer_s']:.3f} s tie order per layer -> {grid['grid_s']:.1f} s "
                     f"({grid['layers_timed']} layer(s) timed)")
    for gpus, row in results.get("projection", {}).get("gpus", {}).items():
        lines.append(f"MS MARCO on {gpus} GPU(s): encode {row['encode_s'] / 60:.1f} min + grid "
                     f"{row['grid_s'] / 60:.1f} min = {row['total_s'] / 60:.1f} min")
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:
        lines.append(f"FAILED sections: {', '.join(failed)} (see the JSON)")
    return "\n".join(lines)


def context(args) -> dict:
    smoke = args.cpu_smoke
    ctx = {"data": Path(args.data), "smoke": smoke, "device": torch.device("cpu" if smoke else "cuda"),
           "dtype": torch.float32 if smoke else torch.bfloat16, "passages": 96 if smoke else args.passages,
           "max_tokens": 512 if smoke else args.max_tokens, "repeats": 1 if smoke else args.repeats,
           "compile": args.compile, "compile_backend": "aot_eager" if smoke else "inductor",
           "compile_reserve_s": 0 if smoke else 120,
           "matmul_n": 256 if smoke else 8192, "matmul_reps": 3 if smoke else 10,
           "grid_n": 5000 if smoke else args.grid_n, "grid_dims": (8, 16, 32) if smoke else GRID_DIMS,
           "grid_queries": 16 if smoke else args.grid_queries, "grid_k": 10 if smoke else args.grid_k,
           "grid_chunk": 1024 if smoke else args.grid_chunk, "grid_layers": 2 if smoke else 12,
           "grid_reserve_s": 0 if smoke else 90,
           "bert_base": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 128} if smoke else gc.BERT_BASE,
           "minilm": {"num_hidden_layers": 2} if smoke else {}}
    ctx["cap"] = max(16, ctx["max_tokens"] // 64)
    ctx["deadline"] = time.monotonic() + args.budget_s
    return ctx


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".gpu", help="folder written by gpu_check.py --prepare")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_e2e_out"), help="folder for the JSON")
    parser.add_argument("--passages", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=131072, help="token budget per packed batch")
    parser.add_argument("--compile", action="store_true", help="also time the store path under torch.compile")
    parser.add_argument("--grid-n", type=int, default=1_000_000)
    parser.add_argument("--grid-queries", type=int, default=1000)
    parser.add_argument("--grid-k", type=int, default=1000)
    parser.add_argument("--grid-chunk", type=int, default=1 << 16, help="store rows per streamed chunk")
    parser.add_argument("--budget-s", type=float, default=300, help="stop adding repeats / grid layers after this")
    parser.add_argument("--cpu-smoke", action="store_true", help="every section tiny on the CPU")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA GPU here: benchmarks/gpu_e2e.py measures the GPU; run it on a GPU machine, or use "
              "--cpu-smoke to check the script on the CPU", file=sys.stderr)
        return 2
    if not (Path(args.data) / "texts.txt").is_file():
        print(f"error: {args.data}/texts.txt not found; run `python benchmarks/gpu_check.py --prepare --data "
              f"{args.data}` first (and carry the folder)", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        torch.set_num_threads(1)
    ctx = context(args)
    results: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__, "args": vars(args),
                             "device": torch.cuda.get_device_name() if ctx["device"].type == "cuda" else "cpu"}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def section(name, fn, *extra):  # the JSON is rewritten after every section: a killed run keeps its part
        gc.run_section(results, name, fn, *extra)
        (out / "gpu_e2e.json").write_text(json.dumps(results, indent=1, default=str))

    try:
        section("matmul", gc.section_matmul, ctx)
        section("texts", section_texts, ctx)
        section("store", section_store, ctx)
        if "store" in ctx:
            for name in ("minilm", "bert-base"):
                section(f"encode_{name}", section_encode, ctx, name)
        ctx.pop("store", None)
        section("grid", section_grid, ctx)
        section("projection", section_projection, results)
    finally:
        if "root" in ctx:
            shutil.rmtree(ctx["root"], ignore_errors=True)
    print(f"\nfull results: {out / 'gpu_e2e.json'}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
