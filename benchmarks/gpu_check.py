"""GPU check: encode throughput and model FLOP utilisation at MS MARCO passage lengths, exact search speed,
and the projection to all of MS MARCO. One script, one run (< ~6 minutes on an H100), every section fail-soft.

What it measures, per model (all-MiniLM-L6-v2's architecture, 6 x 384; a bert-base-shaped 12 x 768), both with
random weights (speed does not depend on the weights; the configs are the real ones):
  st        sentence-transformers `encode`, bf16 model, batch 256 (last layer only: it has no per-layer output)
  padded    elasticir, every layer captured, fixed batches of 256, padded SDPA
  budget    elasticir, every layer captured, padded SDPA, batches of <= --max-tokens padded tokens (cap 1024)
  unpadded  elasticir, every layer captured, packed sequences (varlen attention), <= --max-tokens real tokens
Each path gets an untimed warm-up, then --repeats timed runs (paths interleaved in a shuffled order per repeat,
torch.cuda.synchronize around each); the table gives the median. tokens/s counts real (non-pad) tokens incl.
[CLS]/[SEP], so padding shows up as lower throughput, not as more tokens.

FLOPs (forward, counted analytically for the real tokens; embeddings, LayerNorm, softmax, pooling ignored, < 2%):
    per sequence of n tokens and per layer:  2 n (4 d^2 + 2 d f)  +  4 n^2 d
(QKV and output projections, the two FFN matmuls, then QK^T and AV), summed over the layers run.
MFU = FLOPs / s / peak, against the H100 SXM bf16 dense datasheet peak (989 TFLOP/s) and against the bf16
8192^3 matmul rate measured here at the start (section `matmul`; ~798 TFLOP/s measured on an H100 before).

Texts: real text cut to MS MARCO passage lengths. `.gpu/texts.txt` holds real SciFact abstracts (title + text)
and STS sentences, one per line (written by --prepare). Passages are drawn from the word stream of those
lines: each starts at a random line start and takes w consecutive words, w ~ lognormal with mean 56 and sd 25
words (clipped to 8..220), MS MARCO's passage-length statistics in words; the word counts are then rescaled
once so the mean tokenized length is 75 tokens, MS MARCO's, since scientific text has more word pieces per word.

Also: max |diff| of the pooled embeddings between the paths (same texts; bf16, plus an fp32 padded-vs-unpadded
check on the MiniLM shape), the tokenizer's own throughput (tokenization cost), torch exact search
(matmul + topk, k=1000) over 1M x 768 random unit vectors in bf16 and fp32 (fp32 without TF32), and the hours
to encode MS MARCO (8.84M passages x the mean tokens here) at all 12 layers of the 12 x 768 model on 1, 8, 16
GPUs from the measured tokens/s (linear scaling assumed), against the target of <= 10 minutes on one H100.

Run (GPU):   python benchmarks/gpu_check.py --data .gpu --out $OUT
Short run:   python benchmarks/gpu_check.py --data .gpu --out $OUT --models bert-base --paths st,unpadded
                 --repeats 2 --skip fp32_check,search        (about a minute: one model, two paths)
Run (CPU):   python benchmarks/gpu_check.py --cpu-smoke   (every section, tiny; checks the script itself)
Prepare:     python benchmarks/gpu_check.py --prepare     (writes .gpu/ from $ELASTICIR_DATA and the MiniLM wheel)
Only torch, transformers, sentence-transformers, numpy and elasticir.encoders are imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's elasticir, not an installed one
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                     ("TRANSFORMERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "true")):
    os.environ.setdefault(_key, _value)  # the GPU machine has no network; keep the output for the table

DATASHEET_PEAK = 989e12  # H100 SXM bf16 dense
MSMARCO_PASSAGES = 8_841_823
MSMARCO_MEAN_TOKENS = 75
TARGET_SECONDS = 600  # all 12 layers of a 12 x 768 model over MS MARCO on one H100
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
MAX_LENGTH = 256  # all-MiniLM-L6-v2's own; MS MARCO passages hardly ever exceed it
MODELS = ("minilm", "bert-base")
PATHS = ("st", "padded", "budget", "unpadded")
SKIPPABLE = ("matmul", "fp32_check", "search")


# ---------------------------------------------------------------- preparing .gpu/ (run here, not on the GPU)

def prepare(folder: Path) -> None:
    """Copy the MiniLM config/tokenizer files and a real-text pool (< 10 MB) into `folder`."""
    import gzip

    from elasticir.encoders import resolve_model_path

    data = Path(os.environ.get("ELASTICIR_DATA", Path.home() / ".cache/elasticir/data"))
    model, _ = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    (folder / "minilm").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(model / name, folder / "minilm" / name)
    lines = []  # STS sentences first (all of them), then SciFact abstracts up to the size cap
    for path in sorted((data / "sts").glob("*/*.jsonl.gz")):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            row = json.loads(line)
            lines.extend(" ".join(row[key].split()) for key in ("sentence1", "sentence2") if key in row)
    for line in (data / "beir/scifact/corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        lines.append(" ".join(f"{doc.get('title', '')} {doc['text']}".split()))
    text, size = [], 0
    for line in dict.fromkeys(lines):  # distinct, in order
        size += len(line.encode()) + 1
        if size > 5_000_000:
            break
        text.append(line)
    (folder / "texts.txt").write_text("\n".join(text) + "\n")
    print(f"wrote {folder}: {len(text)} lines of real text, MiniLM config + tokenizer")


# ---------------------------------------------------------------- texts at MS MARCO lengths

def build_passages(lines: list[str], tokenizer, count: int, seed: int = 0) -> tuple[list[str], dict]:
    rng = np.random.default_rng(seed)
    words, starts = [], []
    for line in lines:
        starts.append(len(words))
        words.extend(line.split())
    sigma = np.sqrt(np.log(1 + (25 / 56) ** 2))
    lengths = np.clip(rng.lognormal(np.log(56) - sigma**2 / 2, sigma, count), 8, 220)
    origins = rng.choice(np.array(starts[:-1] or [0]), count)

    def cut(scale: float) -> list[str]:
        return [" ".join(words[o : o + max(4, int(w * scale))]) for o, w in zip(origins, lengths)]

    def mean_tokens(texts):
        sample = texts[: min(len(texts), 4096)]
        return float(np.mean([len(ids) for ids in tokenizer(sample, truncation=True, max_length=MAX_LENGTH)["input_ids"]]))

    first = mean_tokens(cut(1.0))
    passages = cut(MSMARCO_MEAN_TOKENS / first)
    return passages, {"passages": count, "mean_words_drawn": float(lengths.mean()),
                      "mean_words": float(np.mean([len(p.split()) for p in passages])),
                      "mean_tokens_before_rescale": first, "word_scale": MSMARCO_MEAN_TOKENS / first}


def section_texts(ctx: dict) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx["data"] / "minilm")
    lines = (ctx["data"] / "texts.txt").read_text().splitlines()
    passages, stats = build_passages(lines, tokenizer, ctx["passages"])
    start = time.perf_counter()
    ids = tokenizer(passages, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    seconds = time.perf_counter() - start
    lengths = np.array([len(x) for x in ids])
    ctx.update(passages=passages, lengths=lengths, tokenizer=tokenizer)
    return stats | {"source_lines": len(lines), "mean_tokens": float(lengths.mean()),
                    "p50_tokens": float(np.median(lengths)), "p99_tokens": float(np.percentile(lengths, 99)),
                    "max_tokens": int(lengths.max()), "tokenize_seconds": seconds,
                    "tokenize_passages_per_s": len(passages) / seconds,
                    "tokenize_msmarco_minutes": MSMARCO_PASSAGES / (len(passages) / seconds) / 60}


# ---------------------------------------------------------------- matmul peak

def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def section_matmul(ctx: dict) -> dict:
    device, n = ctx["device"], ctx["matmul_n"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(ctx["matmul_reps"]):
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    flops = 2 * n**3 / min(times)
    ctx["measured_peak"] = flops
    return {"n": n, "dtype": str(dtype), "tflops": flops / 1e12, "fraction_of_datasheet": flops / DATASHEET_PEAK}


# ---------------------------------------------------------------- encode throughput

def model_flops(lengths: np.ndarray, config) -> float:
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = lengths.astype(np.float64)
    return float(layers * (2 * n.sum() * (4 * d * d + 2 * d * f) + 4 * (n * n).sum() * d))


def build_model(ctx: dict, name: str, root: Path) -> tuple[Path, object]:
    """A sentence-transformers folder (Transformer + mean Pooling) with random weights for `name`'s shape."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(ctx["data"] / "minilm" / "config.json")
    for key, value in (ctx["bert_base"] if name == "bert-base" else ctx["minilm"]).items():
        setattr(config, key, value)
    folder = root / name
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    for file in TOKENIZER_FILES[1:]:
        shutil.copy(ctx["data"] / "minilm" / file, folder / file)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_LENGTH, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True}))
    return folder, config


def make_paths(ctx: dict, folder: Path) -> tuple[dict, dict]:
    """{path name: encode(texts) -> {layer: array}} and each path's notes; every path fail-soft."""
    from sentence_transformers import SentenceTransformer

    from elasticir.encoders import ElasticEncoder, tokens

    device, dtype, batch = ctx["device"], ctx["dtype"], ctx["batch"]
    paths, notes = {}, {}
    try:
        if "st" not in ctx["paths"]:
            raise LookupError("not in --paths")
        st = SentenceTransformer(str(folder), device=str(device)).to(dtype)
        last = None

        def st_encode(texts, st=st):
            return {last: st.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)}

        paths["st"] = st_encode
        notes["st"] = f"sentence-transformers {__import__('sentence_transformers').__version__}, batch {batch}"
    except LookupError:
        pass
    except Exception as exc:  # noqa: BLE001 - fail soft: the other paths still run
        notes["st"] = f"failed: {type(exc).__name__}: {exc}"
    variants = {"padded": ("padded", None, batch), "budget": ("padded", ctx["max_tokens"], 1024),
                "unpadded": ("unpadded", ctx["max_tokens"], 1024)}
    workers = tokens.auto_workers(len(ctx["passages"]), device.type)
    for name, (attention, budget, cap) in variants.items():
        if name not in ctx["paths"]:
            continue
        try:
            encoder = ElasticEncoder(str(folder), device=device, dtype=dtype, attention=attention,
                                     max_tokens_per_batch=budget)
            layers = list(range(1, encoder.num_layers + 1))

            def ei_encode(texts, encoder=encoder, layers=layers, cap=cap):
                return encoder.encode(texts, layers, batch_size=cap, show_progress=False)

            paths[name] = ei_encode
            notes[name] = (f"{encoder.attention_note}; batch cap {cap}; token budget {budget}; all {len(layers)} "
                           f"layers; {workers} tokenizer processes")
        except Exception as exc:  # noqa: BLE001
            notes[name] = f"failed: {type(exc).__name__}: {exc}"
    return paths, notes


def time_paths(ctx: dict, paths: dict, texts: list[str]) -> dict[str, list[float]]:
    device, times = ctx["device"], {name: [] for name in paths}
    for fn in paths.values():  # warm-up: kernels, allocator, autotuning
        fn(texts[: min(len(texts), 4 * ctx["batch"])])
    rng = random.Random(0)
    for repeat in range(ctx["repeats"]):
        order = list(paths)
        rng.shuffle(order)
        for name in order:
            if time.monotonic() > ctx["deadline"] and repeat > 0:
                continue  # out of time budget: keep what is measured
            sync(device)
            start = time.perf_counter()
            paths[name](texts)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def max_diffs(outputs: dict) -> dict:
    """max |a - b| per pair of paths, on the last layer (st has only that) and over every layer (elasticir)."""
    diffs = {}
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            last_a, last_b = outputs[a][max(k for k in outputs[a] if k)], outputs[b][max(k for k in outputs[b] if k)]
            entry = {"last_layer": float(np.abs(last_a - last_b).max())}
            common = set(outputs[a]) & set(outputs[b]) - {None}
            if len(common) > 1:
                entry["all_layers"] = float(max(np.abs(outputs[a][k] - outputs[b][k]).max() for k in common))
            diffs[f"{a} vs {b}"] = entry
    return diffs


def section_encode(ctx: dict, name: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        folder, config = build_model(ctx, name, root)
        paths, notes = make_paths(ctx, folder)
        texts, lengths = ctx["passages"], ctx["lengths"]
        flops = model_flops(lengths, config)
        times = time_paths(ctx, paths, texts)
        rows = {}
        for path, seconds in times.items():
            if not seconds:
                continue
            median = statistics.median(seconds)
            rows[path] = {"seconds": seconds, "median_s": median, "texts_per_s": len(texts) / median,
                          "tokens_per_s": float(lengths.sum()) / median, "tflops": flops / median / 1e12,
                          "mfu_datasheet": flops / median / DATASHEET_PEAK,
                          "mfu_measured_peak": flops / median / ctx["measured_peak"] if ctx.get("measured_peak") else None}
        sample = texts[: ctx["diff_texts"]]
        outputs = {}
        for path, fn in paths.items():
            try:
                result = fn(sample)
                outputs[path] = {(config.num_hidden_layers if k is None else k): v for k, v in result.items()}
            except Exception as exc:  # noqa: BLE001
                notes[path] += f"; diff run failed: {exc}"
        return {"layers": config.num_hidden_layers, "hidden": config.hidden_size, "texts": len(texts),
                "tokens": int(lengths.sum()), "flops_per_pass": flops, "notes": notes, "paths": rows,
                "max_abs_diff": max_diffs(outputs), "dtype": str(ctx["dtype"])}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def section_fp32_check(ctx: dict) -> dict:
    """Padded vs unpadded in fp32 on the MiniLM shape: the packed path must give the same numbers (<= 1e-5)."""
    from elasticir.encoders import ElasticEncoder

    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        folder, config = build_model(ctx, "minilm", root)
        texts = ctx["passages"][: ctx["diff_texts"]]
        layers = list(range(1, config.num_hidden_layers + 1))
        out, notes = {}, {}
        for attention in ("padded", "unpadded"):
            encoder = ElasticEncoder(str(folder), device=ctx["device"], dtype=torch.float32, attention=attention,
                                     max_tokens_per_batch=ctx["max_tokens"])
            out[attention], notes[attention] = encoder.encode(texts, layers, batch_size=256, show_progress=False), \
                encoder.attention_note
        diff = max(float(np.abs(out["padded"][k] - out["unpadded"][k]).max()) for k in layers)
        return {"texts": len(texts), "max_abs_diff_all_layers": diff, "ok": diff <= 1e-5, "notes": notes}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- exact search

def time_search(queries, corpus, chunk: int, k: int, device) -> list[float]:
    """Seconds of three timed passes (after one warm-up) of matmul + topk over all queries, `chunk` at a time."""
    times = []
    for repeat in range(4):
        sync(device)
        start = time.perf_counter()
        for first in range(0, len(queries), chunk):
            torch.topk(queries[first : first + chunk] @ corpus.T, k, dim=1)
        sync(device)
        if repeat:
            times.append(time.perf_counter() - start)
    return times


def section_search(ctx: dict) -> dict:
    """Torch exact search (no faiss on the GPU machine): matmul + topk over random unit vectors."""
    device, results = ctx["device"], {}
    dtypes = (torch.bfloat16, torch.float32) if device.type == "cuda" else (torch.float32,)
    for dtype in dtypes:
        try:
            results[str(dtype).removeprefix("torch.")] = search_one(ctx, dtype)
        except Exception as exc:  # noqa: BLE001 - fail soft: the other dtype still runs
            results[str(dtype).removeprefix("torch.")] = {"error": f"{type(exc).__name__}: {exc}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def search_one(ctx: dict, dtype: torch.dtype) -> dict:
    device, n, dim, k = ctx["device"], ctx["search_n"], 768, ctx["search_k"]
    generator = torch.Generator(device=device).manual_seed(0)
    corpus = torch.randn(n, dim, device=device, generator=generator)
    corpus = torch.nn.functional.normalize(corpus, dim=1).to(dtype)
    queries = torch.nn.functional.normalize(torch.randn(ctx["search_queries"], dim, device=device,
                                                        generator=generator), dim=1).to(dtype)
    chunk = ctx["search_chunk"]
    times = time_search(queries, corpus, chunk, k, device)
    median = statistics.median(times)
    return {"corpus": n, "dim": dim, "k": k, "queries": len(queries), "query_chunk": chunk, "median_s": median,
            "queries_per_s": len(queries) / median, "tf32": False}


# ---------------------------------------------------------------- projection and table

def projection(results: dict, mean_tokens: float) -> dict:
    bert = results.get("encode_bert-base", {}).get("paths", {})
    total_tokens = MSMARCO_PASSAGES * mean_tokens
    needed = total_tokens / TARGET_SECONDS
    out = {"passages": MSMARCO_PASSAGES, "mean_tokens": mean_tokens, "target_s_one_gpu": TARGET_SECONDS,
           "tokens_per_s_needed": needed, "paths": {}}
    for path, row in bert.items():
        hours = {g: total_tokens / (row["tokens_per_s"] * g) / 3600 for g in (1, 8, 16)}
        out["paths"][path] = {"hours": hours, "fraction_of_target_speed": row["tokens_per_s"] / needed}
    return out


def table(results: dict) -> str:
    lines = [f"{'model':<10} {'path':<9} {'tok/s':>10} {'texts/s':>9} {'TFLOP/s':>8} {'MFU%':>6} {'MFUm%':>6}  note"]
    for model in ("minilm", "bert-base"):
        section = results.get(f"encode_{model}", {})
        for path, note in section.get("notes", {}).items():
            row = section["paths"].get(path)
            if row:
                mfu_m = f"{100 * row['mfu_measured_peak']:6.1f}" if row.get("mfu_measured_peak") else "     -"
                lines.append(f"{model:<10} {path:<9} {row['tokens_per_s']:>10.0f} {row['texts_per_s']:>9.0f} "
                             f"{row['tflops']:>8.1f} {100 * row['mfu_datasheet']:>6.1f} {mfu_m}  {note[:70]}")
            else:
                lines.append(f"{model:<10} {path:<9} {'-':>10}  {note[:100]}")
        for pair, diff in section.get("max_abs_diff", {}).items():
            lines.append(f"{model:<10} diff {pair:<22} last {diff['last_layer']:.2e}"
                         + (f"  all layers {diff['all_layers']:.2e}" if "all_layers" in diff else ""))
    check = results.get("fp32_check", {})
    if "max_abs_diff_all_layers" in check:
        lines.append(f"fp32 padded vs unpadded (MiniLM shape, all layers): {check['max_abs_diff_all_layers']:.2e} "
                     f"{'OK' if check['ok'] else 'ABOVE 1e-5'}")
    for dtype, row in results.get("search", {}).items():
        if isinstance(row, dict) and "queries_per_s" in row:
            lines.append(f"search {dtype:<8} {row['corpus']}x{row['dim']} k={row['k']}: {row['queries_per_s']:.0f} q/s")
    proj = results.get("projection", {})
    for path, row in proj.get("paths", {}).items():
        hours = row["hours"]
        lines.append(f"MS MARCO 12x768 all layers, {path:<8}: {hours[1]:.2f} h on 1 GPU, {hours[8]:.3f} h on 8, "
                     f"{hours[16]:.3f} h on 16; {row['fraction_of_target_speed']:.2f}x the speed of the 10-min target")
    texts = results.get("texts", {})
    if "tokenize_passages_per_s" in texts:
        lines.append(f"texts: mean {texts['mean_tokens']:.1f} tokens ({texts['mean_words']:.1f} words), tokenizer "
                     f"{texts['tokenize_passages_per_s']:.0f} passages/s = {texts['tokenize_msmarco_minutes']:.1f} "
                     "min for MS MARCO")
    if "tflops" in results.get("matmul", {}):
        lines.append(f"matmul {results['matmul']['n']}^3 {results['matmul']['dtype']}: "
                     f"{results['matmul']['tflops']:.0f} TFLOP/s")
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:
        lines.append(f"FAILED sections: {', '.join(failed)} (see the JSON)")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def run_section(results: dict, name: str, fn, *args) -> None:
    start = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    try:
        results[name] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - fail soft: record and go on with the next section
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(f"  {name} failed: {type(exc).__name__}: {exc}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if isinstance(results[name], dict):
        results[name]["section_seconds"] = time.perf_counter() - start
    print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)


def context(args) -> dict:
    smoke = args.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    ctx = {"data": Path(args.data), "device": device, "dtype": torch.float32 if smoke else torch.bfloat16,
           "passages": 48 if smoke else args.passages, "batch": 16 if smoke else 256,
           "max_tokens": 2048 if smoke else args.max_tokens, "repeats": 1 if smoke else args.repeats,
           "diff_texts": 32 if smoke else 2048, "matmul_n": 256 if smoke else 8192, "matmul_reps": 3 if smoke else 10,
           "search_n": 20_000 if smoke else 1_000_000, "search_k": 100 if smoke else 1000,
           "search_queries": 64 if smoke else 8192, "search_chunk": 32 if smoke else 1024,
           "bert_base": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 128} if smoke else BERT_BASE,
           "minilm": {"num_hidden_layers": 2} if smoke else {},  # smoke: the MiniLM shape cut to 2 layers
           "models": args.models, "paths": args.paths}
    ctx["deadline"] = time.monotonic() + args.budget_s
    return ctx


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".gpu", help="folder written by --prepare (texts.txt, minilm/)")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="folder for the JSON")
    parser.add_argument("--passages", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=65536, help="token budget of the budget/unpadded paths")
    parser.add_argument("--budget-s", type=float, default=240, help="stop adding repeats after this many seconds")
    parser.add_argument("--cpu-smoke", action="store_true", help="every section tiny on CPU")
    parser.add_argument("--prepare", action="store_true", help="write --data from local data and the MiniLM wheel")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to leave out, of {', '.join(SKIPPABLE)}")
    args = parser.parse_args(argv)
    for flag, allowed in (("models", MODELS), ("paths", PATHS), ("skip", SKIPPABLE)):
        chosen = [name.strip() for name in getattr(args, flag).split(",") if name.strip()]
        unknown = [name for name in chosen if name not in allowed]
        if unknown or (flag != "skip" and not chosen):
            print(f"error: --{flag} {getattr(args, flag)!r}: unknown {unknown or 'empty'}; choose from "
                  f"{', '.join(allowed)}", file=sys.stderr)
            return 2
        setattr(args, flag, chosen)
    if args.prepare:
        prepare(Path(args.data))
        return 0
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device; use --cpu-smoke to check the script on CPU", file=sys.stderr)
        return 2
    if not (Path(args.data) / "texts.txt").is_file():
        print(f"error: {args.data}/texts.txt not found; run with --prepare first (and carry the folder)",
              file=sys.stderr)
        return 2
    torch.set_float32_matmul_precision("highest")
    if args.cpu_smoke:
        torch.set_num_threads(1)
    ctx = context(args)
    import transformers

    results: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__,
                             "transformers": transformers.__version__,
                             "device": torch.cuda.get_device_name() if ctx["device"].type == "cuda" else "cpu",
                             "args": vars(args)}}
    if "matmul" not in args.skip:
        run_section(results, "matmul", section_matmul, ctx)
    run_section(results, "texts", section_texts, ctx)
    if "passages" in ctx and isinstance(ctx["passages"], list):
        for model in args.models:
            run_section(results, f"encode_{model}", section_encode, ctx, model)
        if "fp32_check" not in args.skip:
            run_section(results, "fp32_check", section_fp32_check, ctx)
    if "search" not in args.skip:
        run_section(results, "search", section_search, ctx)
    mean_tokens = results.get("texts", {}).get("mean_tokens", MSMARCO_MEAN_TOKENS)
    run_section(results, "projection", projection, results, mean_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfull results: {out / 'gpu_check.json'}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
