"""Tokens/s of the encode loop's input side alone (tokenize windows, form token-budget batches, collate them
packed), at MS MARCO passage lengths, for each way of tokenizing: no model, no device.

  lists     the tokenizer's own call (Python lists of ids) in one background thread (the previous path)
  arrays    the Rust backend's ids as flat arrays, in one background thread (the small-input path)
  procN     arrays from N forked worker processes, 2 windows in flight, each split across the N (the
            large-input path)

Variants run interleaved, in a shuffled order per repeat; the table gives the median and the spread, and the
main process's CPU time per token (all its threads; not the workers'): on a many-core GPU host that, not the
wall time of a busy small box, says how much of the main process (whose GIL also launches the model's kernels)
the input side takes. The main process does only what the encode loop does besides the model.
TOKENIZERS_PARALLELISM is left as the environment sets it (the in-process variants use Rust threads if it is
not "false"). Texts: gpu_check's (needs `python benchmarks/gpu_check.py --prepare` first).

Run: python benchmarks/bench_tokenize.py --data .gpu --passages 32768 --workers 2,4 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elasticir.encoders import batching, tokens


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).with_name("gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_once(texts, hf, standalone, variant: str, args) -> tuple[float, float, int]:
    if variant == "lists":
        tokenize, workers = (lambda chunk: hf(chunk, truncation=True, max_length=256)["input_ids"]), 0
    else:
        tokenize = lambda chunk: tokens.encode_arrays(standalone, chunk)
        workers = int(variant[4:]) if variant.startswith("proc") else 0
    start, cpu, count = time.perf_counter(), time.process_time(), 0
    for _rows, ids in batching.iter_batches(texts, tokenize, batch_size=1024, max_tokens=args.max_tokens,
                                            packed=True, window=args.window, standalone=standalone,
                                            workers=workers):
        count += int(batching.pack(ids)["lengths"].sum())
    return time.perf_counter() - start, time.process_time() - cpu, count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".gpu")
    parser.add_argument("--passages", type=int, default=16384)
    parser.add_argument("--workers", default="2", help="comma-separated worker counts for the proc variants")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=65536)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    gpu_check = load_gpu_check()
    hf = AutoTokenizer.from_pretrained(Path(args.data) / "minilm")
    lines = (Path(args.data) / "texts.txt").read_text().splitlines()
    texts, _ = gpu_check.build_passages(lines, hf, args.passages)
    standalone = tokens.standalone_tokenizer(hf, 256)
    variants = ["lists", "arrays"] + [f"proc{n}" for n in args.workers.split(",") if n.strip()]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpu_us: dict[str, list[float]] = {v: [] for v in variants}
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(variants)
        for variant in variants:
            seconds, cpu, count = run_once(texts, hf, standalone, variant, args)
            rates[variant].append(count / seconds)
            cpu_us[variant].append(cpu / count * 1e6)
    print(f"{len(texts)} passages, {count / len(texts):.1f} tokens each; tokens/s of the input side alone")
    for variant, values in rates.items():
        print(f"  {variant:<7} {statistics.median(values):>10.0f} tok/s  (min {min(values):.0f}, max {max(values):.0f})"
              f"   main process CPU {statistics.median(cpu_us[variant]):.3f} us/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
