"""Encode-cost benchmark: is the elastic grid as cheap as `ElasticEncoder` claims?

Every (layer, dim) cell comes from ONE early-exiting forward pass, so on all-MiniLM-L6-v2 (N = 6 layers):
  A     the full 6 x 5 = 30-cell STS grid (`evaluate_sts`: encode at layers 1..6 in one pass, then
        score 30 cells) should cost about one plain full-model encode, `encode(texts, [6])`:
                                                                        target A <= 1.15
  B(L)  a layer-L encode should cost about L/N of a full one (layers above L never run):
                                                                        target B(L) <= L/N + 0.10
  ST    our full-model encode should be as fast as sentence-transformers' own `encode` on the same
        model and texts (both run the same Hugging Face forward) and give the same embeddings after
        L2 normalisation:                           targets speed >= 0.90 x ST, max |diff| <= 1e-5
  ONNX  the same with elasticir's ONNX Runtime backend (`--backend onnx`), side by side with
        sentence-transformers torch `encode` and sentence-transformers' own ONNX backend, on the
        STS texts and on SciFact passages (`--passages N`, title + text as retrieval encodes them):
        elasticir's fastest backend / ST torch                          target >= 1.30
        elasticir's fastest backend / ST onnx                           target >= 1.00
        A(onnx) = grid with the onnx backend / its own full encode      target <= 1.15
        plus the max abs difference of every backend's (normalised) embeddings from ST torch's.
        With --metrics the full cell (layer N, full width) is evaluated through the runner with each
        elasticir backend on STSb, SICK-R (Spearman) and SciFact (nDCG@10, no BM25), each backend with
        its own embedding cache: |onnx - torch| <= 1e-4 per metric.
  PRECISIONS (--precisions, instead of all of the above) elasticir's encoder precisions float32, bfloat16
        (CPU autocast) and int8 (ONNX Runtime dynamic quantization) side by side with sentence-transformers
        torch fp32 and sentence-transformers' int8 ONNX model, on the STS texts and on --passages SciFact
        passages, interleaved like every variant here. A faster encoder changes the vectors, so the speed
        target is for the fastest precision that keeps the full cell within 0.005 of float32 on STSb and
        SICK-R (Spearman) and SciFact (nDCG@10), measured with --metrics through the runner (one run with
        `encoder_precisions`, each precision its own store; --cache-dir reuses stores already encoded);
        without --metrics every precision counts as eligible:
        fastest eligible precision / ST torch fp32                      target >= 2.00
        fastest eligible precision / ST int8 ONNX                       target >= 1.00
        plus the min cosine of every variant's vectors to ST torch fp32's. ST's int8 model comes from
        `export_dynamic_quantized_onnx_model`, which needs optimum-onnx (see below); the script always runs
        its stand-in: the fp32 stand-in's graph quantized with onnxruntime's `quantize_dynamic` at the
        settings optimum-onnx's "avx512_vnni" preset hands to onnxruntime (ST_INT8_PRESET), and says so.
A and B are the project's acceptance criteria; the two ST thresholds are this script's own choice.
sentence-transformers' ONNX backend needs optimum-onnx, whose releases (<= 0.1.0) require
transformers < 4.58; where it cannot load, the script runs what that backend runs instead (the whole
model exported with torch.onnx, last hidden state out, onnxruntime with its default graph
optimisations, then sentence-transformers' own Pooling and Normalize modules) and says so.

Texts: the distinct sentence1 + sentence2 strings of the STS-benchmark test set (2,552), or with
--texts N the distinct sentences of a seeded random subset of pairs holding ~N of them (the grid is
scored on exactly those pairs, so every variant encodes the very same texts).

Why ratios, interleaved: the machines this runs on are small, shared and noisy (timings drift up to
3x within minutes), so absolute seconds mean little. Every repeat runs every variant in a freshly
shuffled order and then in the reverse order (a palindrome: a slow drift hits every variant alike).
Each ratio is formed within one repeat from the faster of each variant's two runs (other processes
can only slow a run down, and on a shared 2-core box they do so in bursts of seconds); the table
gives the median, min and max of those per-repeat ratios. Column "best" is the fastest run of the
numerator over the fastest run of the baseline, over all repeats: the least contended estimate.
An untimed warm-up of every variant runs first.

Contention: with torch's default of one thread per core, a competing process makes the threads wait
for each other and a run can take 3x longer; `--threads 1` is far steadier on a busy machine (the
ratios measure the early exit, not the threading). The CPU-use diagnostic (process CPU seconds /
wall seconds of the baseline runs; ideally the thread count) shows how contended the runs were.
Other diagnostics (no target) explain a failing B(L): tokenisation alone, the intercept of a
straight-line fit of B(L) on L (the fixed cost per encode that does not shrink with L:
tokenisation, embeddings, pooling, Python), and the score stage's share of the grid call.

Run:  python benchmarks/bench_encode.py [--repeats 5] [--texts N] [--passages N] [--data-root DIR]
                                        [--json OUT] [--threads T] [--no-st] [--no-onnx] [--metrics]
                                        [--no-palindrome]
      python benchmarks/bench_encode.py --precisions [--metrics [--cache-dir DIR]] [--threads T] ...
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from elasticir.cells import Grid
from elasticir.data.catalog import DEFAULT_DATA_ROOT, sts_path
from elasticir.data.sts import StsPairs, load_sts
from elasticir.encoders import ElasticEncoder
from elasticir.evaluation.standalone import evaluate_sts
from elasticir.io import file_checksum
from elasticir.results.portable import portable_model, relative_data_path

REPO = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"
DEFAULT_TEXTS = 192  # 3 batches: the default run stays under ~5 minutes on a busy 2-core CPU; 0 = all
TARGET_A = 1.15
TARGET_B_SLACK = 0.10
TARGET_ST_SPEED = 0.90
TARGET_ST_DIFF = 1e-5
TARGET_FASTEST_OVER_ST = 1.30
TARGET_FASTEST_OVER_ST_ONNX = 1.00
TARGET_METRIC_DIFF = 1e-4
DEFAULT_PASSAGES = 96


# ----------------------------------------------------------------------------------------------------- inputs
def find_sts_file(flag: str | None) -> tuple[Path, str]:
    """STSb test: --data-root, else $ELASTICIR_DATA, else the package default, else shared/data beside us."""
    candidates: list[tuple[Path, str]] = []
    if flag:
        candidates.append((Path(flag), "--data-root"))
    elif os.environ.get("ELASTICIR_DATA"):
        candidates.append((Path(os.environ["ELASTICIR_DATA"]), "$ELASTICIR_DATA"))
    else:
        candidates += [
            (DEFAULT_DATA_ROOT, "package default"),
            (REPO / "shared" / "data", "shared/data in the repo"),
            (REPO.parent / "shared" / "data", "shared/data beside the repo"),
        ]
    for root, origin in candidates:
        path = sts_path(root.expanduser().resolve(), "stsbenchmark", "test")
        if path:
            return path, origin
    searched = ", ".join(str(root / "sts/stsbenchmark/test.jsonl.gz") for root, _ in candidates)
    sys.exit(f"bench_encode: no STSb test file; searched {searched}. Set --data-root or $ELASTICIR_DATA.")


def distinct_texts(pairs: StsPairs) -> list[str]:
    """The distinct sentences in the order `evaluate_sts` builds them, so both encode the very same list."""
    return list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))


def subsample(pairs: StsPairs, n_texts: int, seed: int) -> StsPairs:
    """A seeded random subset of pairs with ~n_texts distinct sentences (all pairs if n_texts <= 0)."""
    if n_texts <= 0 or n_texts >= len(distinct_texts(pairs)):
        return pairs
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    seen: set[str] = set()
    chosen = []
    for i in order:
        if len(seen) >= n_texts:
            break
        chosen.append(i)
        seen.update((pairs.sentence1[i], pairs.sentence2[i]))
    chosen.sort()
    return StsPairs(
        [pairs.sentence1[i] for i in chosen], [pairs.sentence2[i] for i in chosen], pairs.scores[chosen]
    )


# ----------------------------------------------------------------------------------------------- machine info
def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        quota = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        quota = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cgroup_cpu_max": quota,
        "cpu_model": model,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------------------------------- timing
def timed(fn) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_cpu(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds over all threads, result)."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu, result


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


# ------------------------------------------------------------------------------------------- onnx comparison
def scifact_passages(sts_file: Path, n: int, seed: int) -> list[str]:
    """A seeded sample of n SciFact passages (title + text, as retrieval encodes them); [] if absent."""
    folder = sts_file.parents[2] / "beir" / "scifact"
    if n <= 0 or not (folder / "corpus.jsonl").is_file():
        return []
    from elasticir.data.beir import load_beir

    texts = load_beir(folder).doc_texts
    return random.Random(seed).sample(texts, min(n, len(texts)))


class StOnnxStandIn:
    """What sentence-transformers' ONNX backend runs, for where optimum-onnx cannot be installed.

    That backend loads optimum's export of the whole model (last hidden state out) into onnxruntime with its
    default graph optimisations and feeds the hidden states to the model's own Pooling / Normalize modules;
    this exports the same graph with torch.onnx and reuses the SentenceTransformer's tokenizer and modules.
    """

    FILE = "st-whole-model.onnx"

    def __init__(self, st_model, folder: Path, threads: int) -> None:
        import onnxruntime as ort

        self.st = st_model
        self.preprocess = getattr(st_model, "preprocess", None) or st_model.tokenize  # renamed in ST 6.2
        path = folder / self.FILE
        if not path.is_file():
            self._build(st_model[0].auto_model, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _build(self, model, path: Path) -> None:
        self._export(model, path)

    @staticmethod
    def _export(model, path: Path) -> None:
        class LastHidden(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        names = ["input_ids", "attention_mask", "token_type_ids"]
        sample = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
        path.parent.mkdir(parents=True, exist_ok=True)
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHidden().eval(), sample, str(path), dynamo=False, input_names=names,
                              output_names=["last_hidden_state"], opset_version=17,
                              dynamic_axes={name: {0: "batch", 1: "sequence"} for name in names})

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")  # as ST's encode sorts
        out = None
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            features = self.preprocess([texts[i] for i in rows])
            feed = {name: features[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
            features = {"attention_mask": features["attention_mask"],
                        "token_embeddings": torch.from_numpy(self.session.run(None, feed)[0])}
            for module in list(self.st)[1:]:
                features = module(features)
            embeddings = features["sentence_embedding"].numpy()
            if out is None:
                out = np.empty((len(texts), embeddings.shape[1]), dtype=np.float32)
            out[rows] = embeddings
        return out


def load_st_onnx(folder: str, work: Path, threads: int, bs: int):
    """(label, why a stand-in, encode(texts)) of sentence-transformers' ONNX backend, or of its stand-in where it cannot load."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(folder, device="cpu", backend="onnx",
                                    model_kwargs={"provider": "CPUExecutionProvider"})
        return "st_onnx", "", lambda texts: model.encode(texts, batch_size=bs, show_progress_bar=False)
    except Exception as exc:  # noqa: BLE001 - any failure to load means: use the stand-in, and say why
        reason = str(exc).splitlines()[0][:160]
    st_model = SentenceTransformer(folder, device="cpu")
    stand_in = StOnnxStandIn(st_model, work, threads)
    return "st_onnx (stand-in)", reason, lambda texts: stand_in.encode(texts, bs)


def full_cell_metrics(model: str, data_root: Path, work: Path, backend: str, bs: int) -> dict[str, float]:
    """STSb / SICK-R Spearman and SciFact nDCG@10 of the full cell through the runner, own cache per backend."""
    from elasticir.runner import RunConfig, run

    config = RunConfig(model=model, layers=[6], dims=[384], sts=["stsbenchmark", "sickr"], retrieval=["scifact"],
                       bm25=False, latency_texts=0, data_root=str(data_root), out=str(work / backend),
                       batch_size=bs, backend=backend, device="cpu", recompute=True, show_progress=False)
    cells = run(config).cells
    metric = {"stsbenchmark": "spearman", "sickr": "spearman", "scifact": "nDCG@10"}
    return {f"{name} {metric[name]}": float(cells[cells.dataset == name][metric[name]].iloc[0]) for name in metric}


def normalised(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ encoder precisions
PRECISIONS = ("float32", "bfloat16", "int8")  # float32 first: the reference of every metric difference
TARGET_PRECISION_OVER_ST = 2.0
TARGET_PRECISION_OVER_ST_INT8 = 1.0
TARGET_PRECISION_METRIC = 0.005
# sentence-transformers' `export_dynamic_quantized_onnx_model(model, "avx512_vnni", ...)` calls optimum-onnx's
# `AutoQuantizationConfig.avx512_vnni(is_static=False)` with its defaults and hands it to `ORTQuantizer.quantize`,
# which builds onnxruntime's ONNXQuantizer with these settings: dynamic (QOperator, IntegerOps), weights QInt8
# symmetric, activations QUInt8 asymmetric, per channel (the preset's default), full range, every operator type
# of onnxruntime's IntegerOps registry, MatMulConstBOnly unset (so the attention MatMuls are quantized too).
ST_INT8_PRESET = {"weights": "QInt8", "per_channel": True, "reduce_range": False, "ops": "IntegerOpsRegistry",
                  "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False,
                                    "ForceSymmetric": False, "MatMulConstBOnly": False}}


class StInt8StandIn(StOnnxStandIn):
    """What sentence-transformers' int8 ONNX model (`export_dynamic_quantized_onnx_model`, "avx512_vnni") runs.

    That export needs optimum-onnx, which cannot be installed beside transformers 5; this quantizes the fp32
    stand-in's whole-model graph with onnxruntime's `quantize_dynamic` at the preset's settings (ST_INT8_PRESET)
    and runs it like the fp32 stand-in (ST's tokenizer, Pooling and Normalize modules around it).
    """

    FILE = "st-whole-model_qint8_avx512_vnni.onnx"

    def _build(self, model, path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        fp32 = path.with_name(StOnnxStandIn.FILE)
        if not fp32.is_file():
            self._export(model, fp32)
        tmp = path.with_name(path.name + ".tmp")
        quantize_dynamic(str(fp32), str(tmp), weight_type=getattr(QuantType, ST_INT8_PRESET["weights"]),
                         per_channel=ST_INT8_PRESET["per_channel"], reduce_range=ST_INT8_PRESET["reduce_range"],
                         op_types_to_quantize=list(IntegerOpsRegistry), extra_options=ST_INT8_PRESET["extra_options"])
        os.replace(tmp, path)


def run_palindromes(variants: dict, repeats: int, seed: int, palindrome: bool, console) -> tuple[dict, dict, dict]:
    """Times every variant `repeats` times, each repeat a shuffled order then its reverse: (wall, cpu, outputs)."""
    rng = random.Random(seed)
    times: dict[str, list[list[float]]] = {name: [] for name in variants}
    cpu_times: dict[str, list[list[float]]] = {name: [] for name in variants}
    outputs: dict[str, object] = {}
    start = time.perf_counter()
    for repeat in range(repeats):
        order = list(variants)
        rng.shuffle(order)
        for name in variants:
            times[name].append([])
            cpu_times[name].append([])
        for name in order + order[::-1] if palindrome else order:
            seconds, cpu, outputs[name] = timed_cpu(variants[name])
            times[name][-1].append(seconds)
            cpu_times[name][-1].append(cpu)
        console.print(f"  repeat {repeat + 1}/{repeats} ({time.perf_counter() - start:.0f}s): "
                      + ", ".join(f"{name} " + "/".join(f"{t:.2f}" for t in times[name][-1]) for name in variants)
                      + " s")
    return times, cpu_times, outputs


def precision_variants(model: str, kinds: dict[str, list[str]], st_work: Path, bs: int) -> tuple[dict, dict]:
    """(variants "kind/role" -> encode callable, the elasticir encoders by precision); warms every one up."""
    from sentence_transformers import SentenceTransformer

    threads = torch.get_num_threads()
    encoders = {name: ElasticEncoder(model, device="cpu", precision=name) for name in PRECISIONS}
    st_model = SentenceTransformer(encoders["float32"].info.path, device="cpu")
    st_int8 = StInt8StandIn(st_model, st_work, threads)
    variants = {}
    for kind, texts in kinds.items():
        variants[f"{kind}/st"] = lambda texts=texts: st_model.encode(texts, batch_size=bs, show_progress_bar=False)
        variants[f"{kind}/st_int8"] = lambda texts=texts: st_int8.encode(texts, bs)
        for name, encoder in encoders.items():
            n_layers = encoder.num_layers
            variants[f"{kind}/{name}"] = lambda texts=texts, encoder=encoder, n_layers=n_layers: encoder.encode(
                texts, [n_layers], batch_size=bs, show_progress=False)[n_layers]
    for texts in kinds.values():  # untimed warm-up: exports / quantizes / loads every graph, first-call costs
        st_model.encode(texts[:bs], batch_size=bs, show_progress_bar=False)
        st_int8.encode(texts[:bs], bs)
        for encoder in encoders.values():
            encoder.encode(texts[:bs], [encoder.num_layers], batch_size=bs, show_progress=False)
    return variants, encoders


def ratio_stats(fast_t: dict, num: str, den: str) -> dict:
    """Throughput of `den` over that of `num` (= time num / time den), per repeat, and the best-run ratio."""
    return summary([a / b for a, b in zip(fast_t[num], fast_t[den])]) | {"best": min(fast_t[num]) / min(fast_t[den])}


def min_cosine(x, reference) -> float:
    return float((normalised(x) * normalised(reference)).sum(axis=1).min())


def precision_metrics(model: str, data_root: Path, out: Path, cache: Path | None, bs: int) -> dict:
    """The full cell (last layer, full width) at every precision through the runner: {precision: {metric: value}}.

    One run with `encoder_precisions`, as a user runs it; each precision encodes into its own store under `cache`
    (a store already there, e.g. float32 SciFact from an earlier run, is reused).
    """
    from elasticir.runner import RunConfig, run

    encoder = ElasticEncoder(model, device="cpu")
    config = RunConfig(model=model, layers=[encoder.num_layers], dims=[encoder.hidden_size],
                       sts=["stsbenchmark", "sickr"], retrieval=["scifact"], bm25=False, latency_texts=0,
                       data_root=str(data_root), out=str(out), cache_dir=str(cache) if cache else None,
                       batch_size=bs, device="cpu", encoder_precisions=list(PRECISIONS), show_progress=False)
    cells = run(config).cells
    metric = {"stsbenchmark": "spearman", "sickr": "spearman", "scifact": "nDCG@10"}
    return {precision: {f"{name} {metric[name]}": float(cells[(cells.dataset == name)
                                                              & (cells.encoder_precision == precision)]
                                                        [metric[name]].iloc[0]) for name in metric}
            for precision in PRECISIONS}


def precision_rows(kinds: dict, fast_t: dict, fast_c: dict | None, outputs: dict, metrics: dict | None) -> tuple[list, dict]:
    """Table rows (label, stats, fmt, target, ok) and the JSON results of the encoder-precision comparison.

    fast_c (per-repeat process CPU seconds, given with one thread) adds the same ratios in CPU seconds: the work
    done whatever else runs on the machine, so steadier than wall time on a contended box.
    """
    rows, results = [], {}
    eligible = [name for name in PRECISIONS if metrics is None
                or all(abs(value - metrics["float32"][metric]) <= TARGET_PRECISION_METRIC
                       for metric, value in metrics[name].items())]
    for kind, texts in kinds.items():
        roles = ("st", "st_int8", *PRECISIONS)
        tps = {role: summary([len(texts) / t for t in fast_t[f"{kind}/{role}"]])
               | {"best": len(texts) / min(fast_t[f"{kind}/{role}"])} for role in roles}
        for role in roles:
            label = {"st": "sentence-transformers torch fp32", "st_int8": "ST int8 ONNX stand-in"}.get(
                role, f"elasticir {role}")
            rows.append((f"{kind}: {label} (texts/s)", tps[role], "{:.1f}", "", None))
        over = {(name, peer): ratio_stats(fast_t, f"{kind}/{peer}", f"{kind}/{name}")
                for name in PRECISIONS for peer in ("st", "st_int8")}
        fastest = max(eligible, key=lambda name: over[(name, "st")]["median"])
        over_cpu = {}
        for name in PRECISIONS:
            for peer, target in (("st", TARGET_PRECISION_OVER_ST), ("st_int8", TARGET_PRECISION_OVER_ST_INT8)):
                mark = " (fastest eligible)" if name == fastest else ""
                ok = over[(name, peer)]["median"] >= target if name == fastest else None
                rows.append((f"{kind}: elasticir {name}{mark} / {peer} throughput", over[(name, peer)], "{:.3f}",
                             f">= {target:.2f}" if name == fastest else "", ok))
                if fast_c is not None:
                    cpu = ratio_stats(fast_c, f"{kind}/{peer}", f"{kind}/{name}")
                    over_cpu[f"{name} over {peer}"] = cpu
                    rows.append((f"{kind}: the same, in CPU seconds", cpu, "{:.3f}", "", None))
        reference = outputs[f"{kind}/st"]
        cosines = {role: min_cosine(outputs[f"{kind}/{role}"], reference) for role in roles if role != "st"}
        for role, value in cosines.items():
            rows.append((f"{kind}: min cosine {role} vs ST torch fp32", {"median": value}, "{:.5f}", "", None))
        results[kind] = {"texts": len(texts), "texts_per_s": tps, "fastest_eligible": fastest,
                         "throughput_ratio": {f"{name} over {peer}": value for (name, peer), value in over.items()},
                         "throughput_ratio_cpu_seconds": over_cpu, "min_cosine_vs_st": cosines}
    if metrics is not None:
        for name in PRECISIONS[1:]:
            for metric, value in metrics[name].items():
                diff = value - metrics["float32"][metric]
                rows.append((f"full cell {metric}: {name} {value:.4f} - float32 {metrics['float32'][metric]:.4f}",
                             {"median": diff}, "{:+.4f}", f"|d| <= {TARGET_PRECISION_METRIC}",
                             abs(diff) <= TARGET_PRECISION_METRIC))
        results["full_cell_metrics"] = metrics
        results["eligible_precisions"] = eligible
    return rows, results


def data_file_record(path: Path) -> dict:
    """A data file as a saved JSON names it: its path under the data root, its sha256 and size, never a path of
    this machine (the model is named the same way, by `portable_model`: hub id and weights sha256)."""
    return file_checksum(path) | {"path": relative_data_path(str(path))}


def saved_as(path: str) -> str:
    """The saved file as the user named it, relative to the working directory where it lies below it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else resolved.name


def precision_main(args, console) -> int:
    """--precisions: elasticir's encoder precisions against sentence-transformers torch fp32 and its int8 ONNX."""
    sts_file, origin = find_sts_file(args.data_root)
    kinds = {"STS": distinct_texts(subsample(load_sts(sts_file), args.texts, args.seed))}
    passages = scifact_passages(sts_file, args.passages, args.seed)
    if passages:
        kinds["SciFact passages"] = passages
    work = Path("~/.cache/elasticir/bench_encode").expanduser()
    variants, encoders = precision_variants(args.model, kinds, work, args.batch_size)
    load_start = os.getloadavg()
    console.print(f"[bold]bench_encode --precisions[/bold]: {args.model}, {torch.get_num_threads()} thread(s), "
                  f"{', '.join(f'{len(t)} {k}' for k, t in kinds.items())}; STSb from {origin}; {args.repeats} "
                  f"repeats; load average {' '.join(f'{x:.2f}' for x in load_start)}\n"
                  f"the ST int8 ONNX model is a stand-in (optimum-onnx does not install beside transformers 5): "
                  f"ST's whole-model fp32 graph quantized by onnxruntime quantize_dynamic at the 'avx512_vnni' "
                  f"preset's settings {ST_INT8_PRESET}")
    times, cpu_times, outputs = run_palindromes(variants, args.repeats, args.seed, not args.no_palindrome, console)
    metrics = None
    if args.metrics:
        console.print("metrics: the full cell at every encoder precision through the runner ...")
        out = Path(args.metrics_out) if args.metrics_out else work / "precision_runs"
        metrics = precision_metrics(args.model, sts_file.parents[2], out, args.cache_dir and Path(args.cache_dir),
                                    args.batch_size)
    fast_t = {name: [min(runs) for runs in times[name]] for name in variants}
    fast_c = {name: [min(runs) for runs in cpu_times[name]] for name in variants}
    rows, results = precision_rows(kinds, fast_t, fast_c if torch.get_num_threads() == 1 else None, outputs, metrics)
    cpu_use = {name: summary([c / w for cs, ws in zip(cpu_times[name], times[name]) for c, w in zip(cs, ws)])
               for name in variants}
    for name, stats in cpu_use.items():
        rows.append((f"diag: CPU use of {name} (CPU s / wall s)", stats, "{:.2f}", f"ideal {torch.get_num_threads()}",
                     None))
    load_end = os.getloadavg()
    print_table(console, f"bench_encode --precisions: medians over {args.repeats} repeats", rows)
    console.print(f"load average at end {' '.join(f'{x:.2f}' for x in load_end)} (cpu_count {os.cpu_count()})")
    failed = [label for label, _, _, _, ok in rows if ok is False]
    console.print("[red]FAIL: " + "; ".join(failed) + "[/red]" if failed else "[green]all targets met[/green]")
    if args.json:
        corpus = [sts_file.parents[2] / "beir" / "scifact" / "corpus.jsonl"] if passages else []
        record = {"mode": "precisions", "model": portable_model(encoders["float32"].info.as_dict()),
                  "data": [data_file_record(path) for path in [sts_file, *corpus]], "machine": machine_info(),
                  "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "load_average": {"start": load_start, "end": load_end},
                  "settings": {"repeats": args.repeats, "batch_size": args.batch_size, "texts_flag": args.texts,
                               "passages": len(passages), "seed": args.seed, "threads": torch.get_num_threads(),
                               "palindrome": not args.no_palindrome, "combine_runs": "min"},
                  "st_int8_stand_in": {"file": StInt8StandIn.FILE, "preset": ST_INT8_PRESET},
                  "targets": {"over_st": TARGET_PRECISION_OVER_ST, "over_st_int8": TARGET_PRECISION_OVER_ST_INT8,
                              "metric_diff": TARGET_PRECISION_METRIC},
                  "raw_seconds": times, "raw_cpu_seconds": cpu_times, "cpu_use": cpu_use, **results,
                  "failed": failed}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2, default=float))
        console.print(f"saved {saved_as(args.json)}")
    return 0


def print_table(console, title: str, rows: list) -> None:
    """rows: (label, stats, fmt, target text, pass or None) -> one rich table."""
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("measure", "left"), ("median", "right"), ("min", "right"), ("max", "right"),
                         ("best", "right"), ("target", "right"), ("result", "center")):
        table.add_column(col, justify=justify)
    for label, stats, fmt, target, ok in rows:
        cells = [fmt.format(stats[k]) if k in stats else "" for k in ("median", "min", "max", "best")]
        verdict = "" if ok is None else ("[green]PASS[/green]" if ok else "[red]FAIL[/red]")
        table.add_row(label, *cells, target, verdict)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats (each a palindrome of all variants)"
    )
    parser.add_argument(
        "--texts",
        type=int,
        default=DEFAULT_TEXTS,
        help=f"subsample to ~N distinct texts (default {DEFAULT_TEXTS}; 0 = all 2,552)",
    )
    parser.add_argument(
        "--data-root", default=None, help="data root with sts/stsbenchmark/ (default $ELASTICIR_DATA)"
    )
    parser.add_argument(
        "--json", metavar="OUT", default=None, help="also save all raw timings and results as JSON"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="device of the torch variants (default cpu)")
    parser.add_argument("--model", default=MODEL, help=f"the model (default {MODEL}; the targets are for it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample and of the run orders")
    parser.add_argument("--no-st", action="store_true", help="skip the sentence-transformers comparison")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime backends")
    parser.add_argument(
        "--passages",
        type=int,
        default=DEFAULT_PASSAGES,
        help=f"SciFact passages timed with every backend (default {DEFAULT_PASSAGES}; 0 = none)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also evaluate the full cell with each elasticir backend (STSb, SICK-R, SciFact; slow)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (default 0: leave torch's default, one per core)",
    )
    parser.add_argument(
        "--no-palindrome",
        action="store_true",
        help="run each variant once per repeat (shuffled) instead of shuffled + reversed",
    )
    parser.add_argument(
        "--precisions",
        action="store_true",
        help="time elasticir's encoder precisions (float32, bfloat16, int8) against sentence-transformers torch fp32\n"
        "and its int8 ONNX (a stand-in) instead of the grid; with --metrics the full cell at every precision",
    )
    parser.add_argument("--cache-dir", default=None, help="--precisions --metrics: the runner's embedding cache")
    parser.add_argument("--metrics-out", default=None, help="--precisions --metrics: the runner's output folder")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.precisions:
        return precision_main(args, console)
    load_start = os.getloadavg()
    info = machine_info()

    sts_file, origin = find_sts_file(args.data_root)
    all_pairs = load_sts(sts_file)
    pairs = subsample(all_pairs, args.texts, args.seed)
    texts = distinct_texts(pairs)
    n = len(texts)
    bs = args.batch_size

    t_load, encoder = timed(lambda: ElasticEncoder(args.model, device=args.device))
    if encoder.device.type != "cpu":
        console.print(f"[yellow]note: the encoder runs on {encoder.device} ({encoder.dtype})[/yellow]")
    N = encoder.num_layers
    grid = Grid.for_model(N, encoder.hidden_size)
    st_model = None
    if not args.no_st:
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(encoder.info.path, device=str(encoder.device))

    def tokenize_only():  # what iter_encode does before the model: sort longest first, tokenise per batch
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, n, bs):
            encoder.tokenize([texts[i] for i in order[start : start + bs]])

    grid_timings: list[dict] = []

    def run_grid(which=encoder):
        result = evaluate_sts(which, pairs, grid, batch_size=bs, show_progress=False)
        if which is encoder:
            grid_timings.append(result.timings)
        return result.cells

    variants: dict[str, callable] = {"grid": run_grid}
    for layer in range(1, N + 1):
        variants[f"L{layer}"] = lambda layer=layer: encoder.encode(
            texts, [layer], batch_size=bs, show_progress=False
        )
    if st_model is not None:
        variants["st"] = lambda: st_model.encode(texts, batch_size=bs, show_progress_bar=False)
    variants["tok"] = tokenize_only

    threads_now = torch.get_num_threads()
    onnx_encoder = st_onnx = None
    passages = scifact_passages(sts_file, args.passages, args.seed)
    if not args.no_onnx:
        onnx_encoder = ElasticEncoder(args.model, device="cpu", backend="onnx")
        variants["grid_onnx"] = lambda: run_grid(onnx_encoder)
        variants["onnx"] = lambda: onnx_encoder.encode(texts, [N], batch_size=bs, show_progress=False)
        if st_model is not None:
            work = Path("~/.cache/elasticir/bench_encode").expanduser()
            st_onnx_label, why, st_onnx = load_st_onnx(encoder.info.path, work, threads_now, bs)
            if why:
                console.print(f"[yellow]sentence-transformers backend='onnx' failed ({why}); timing its "
                              "stand-in instead (see the docstring)[/yellow]")
            variants["st_onnx"] = lambda: st_onnx(texts)
    roles = {"st": "st", "st_onnx": "st_onnx", "torch": f"L{N}", "onnx": "onnx"}
    if passages:
        variants["p_torch"] = lambda: encoder.encode(passages, [N], batch_size=bs, show_progress=False)
        if st_model is not None:
            variants["p_st"] = lambda: st_model.encode(passages, batch_size=bs, show_progress_bar=False)
        if onnx_encoder is not None:
            variants["p_onnx"] = lambda: onnx_encoder.encode(passages, [N], batch_size=bs, show_progress=False)
        if st_onnx is not None:
            variants["p_st_onnx"] = lambda: st_onnx(passages)
    base = f"L{N}"

    total_texts = len(distinct_texts(all_pairs))
    sample = (
        f"subsample of {total_texts} texts / {len(all_pairs)} pairs, --texts {args.texts}, seed {args.seed}"
        if len(pairs) < len(all_pairs)
        else "all of them"
    )
    runs = "twice per repeat (shuffled, then reversed)" if not args.no_palindrome else "once per repeat"
    threads = "set by --threads" if args.threads > 0 else "torch default"
    console.print(
        f"[bold]bench_encode[/bold]: {args.model} ({N} layers x {encoder.hidden_size}) on {encoder.device}; "
        f"STSb test from {origin}: {sts_file}\n"
        f"texts: {n} distinct sentences of {len(pairs)} pairs ({sample}); batch size {bs}; "
        f"{args.repeats} repeats, each variant run {runs}\n"
        f"machine: {info['cpu_model'] or '?'}; cpu_count {info['cpu_count']}, "
        f"affinity {info['cpu_affinity']}, "
        f"cgroup cpu.max {info['cgroup_cpu_max']}; torch {info['torch']}, {info['torch_threads']} threads "
        f"({threads}), interop {info['torch_interop_threads']}; "
        f"load average at start {' '.join(f'{x:.2f}' for x in load_start)}"
    )

    # Untimed warm-up of every variant on a small slice: first-call allocations and lazy inits.
    warm_pairs = subsample(pairs, min(n, 2 * bs), args.seed + 1)
    warm_texts = distinct_texts(warm_pairs)
    evaluate_sts(encoder, warm_pairs, grid, batch_size=bs, show_progress=False)
    encoder.encode(warm_texts, [N], batch_size=bs, show_progress=False)
    if st_model is not None:
        st_model.encode(warm_texts, batch_size=bs, show_progress_bar=False)
    if onnx_encoder is not None:  # also exports (or loads from the cache) the graphs for [N] and 1..N
        evaluate_sts(onnx_encoder, warm_pairs, grid, batch_size=bs, show_progress=False)
        onnx_encoder.encode(warm_texts + passages[:bs], [N], batch_size=bs, show_progress=False)
    if st_onnx is not None:
        st_onnx(warm_texts + passages[:bs])

    rng = random.Random(args.seed)
    times: dict[str, list[list[float]]] = {name: [] for name in variants}  # wall seconds [repeat][run]
    cpu_times: dict[str, list[list[float]]] = {name: [] for name in variants}  # process CPU seconds
    outputs: dict[str, object] = {}
    bench_start = time.perf_counter()
    for repeat in range(args.repeats):
        order = list(variants)
        rng.shuffle(order)
        sequence = order if args.no_palindrome else order + order[::-1]
        for name in variants:
            times[name].append([])
            cpu_times[name].append([])
        for name in sequence:
            seconds, cpu, result = timed_cpu(variants[name])
            times[name][-1].append(seconds)
            cpu_times[name][-1].append(cpu)
            if name in (base, "st", "onnx", "st_onnx") or name.startswith("p_"):
                outputs[name] = result
        console.print(
            f"  repeat {repeat + 1}/{args.repeats} ({time.perf_counter() - bench_start:.0f}s): "
            + ", ".join(f"{name} " + "/".join(f"{t:.2f}" for t in times[name][-1]) for name in variants)
            + " s"
        )
    load_end = os.getloadavg()

    # Per-repeat ratios (each from the faster of that repeat's runs), then median/min/max over repeats;
    # "best" = fastest run of the numerator over fastest run of the denominator, over all repeats.
    fast_t = {name: [min(runs) for runs in times[name]] for name in variants}

    def per(num, den):
        return [a / b for a, b in zip(fast_t[num], fast_t[den])]

    def best(num, den):
        return min(fast_t[num]) / min(fast_t[den])

    # With one thread, process CPU seconds count the work done whatever else runs on the machine: the steadier
    # measure on a contended box (with several threads they also count spinning, so they are not shown then).
    fast_c = {name: [min(runs) for runs in cpu_times[name]] for name in variants}
    one_thread = torch.get_num_threads() == 1

    def per_cpu(num, den):
        return summary([a / b for a, b in zip(fast_c[num], fast_c[den])]) | {"best": min(fast_c[num]) / min(fast_c[den])}

    ratio_a = summary(per("grid", base)) | {"best": best("grid", base)}
    ratio_b = {
        layer: summary(per(f"L{layer}", base)) | {"best": best(f"L{layer}", base)}
        for layer in range(1, N + 1)
    }
    rows = []  # (label, stats or None, fmt, target text, pass or None)

    def add(label, stats, fmt, target, ok):
        rows.append((label, stats, fmt, target, ok))

    add(
        f"A  grid ({len(grid.cells)} cells) / encode[{N}]",
        ratio_a,
        "{:.3f}",
        f"<= {TARGET_A:.2f}",
        ratio_a["median"] <= TARGET_A,
    )
    if one_thread:
        add("A, in CPU seconds", per_cpu("grid", base), "{:.3f}", "", None)
    for layer in range(1, N + 1):
        target = layer / N + TARGET_B_SLACK
        note = "  (baseline itself)" if layer == N else ""
        add(
            f"B({layer}) encode[{layer}] / encode[{N}]{note}",
            ratio_b[layer],
            "{:.3f}",
            f"<= {target:.3f}",
            ratio_b[layer]["median"] <= target + 1e-12,
        )

    results: dict = {}
    if st_model is not None:
        ours_tps = summary([n / t for t in fast_t[base]]) | {"best": n / min(fast_t[base])}
        st_tps = summary([n / t for t in fast_t["st"]]) | {"best": n / min(fast_t["st"])}
        speed = summary(per("st", base)) | {"best": best("st", base)}  # = our throughput / ST throughput
        ours = outputs[base][N]
        ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        theirs = np.asarray(outputs["st"], dtype=np.float32)
        theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
        diff = float(np.abs(ours - theirs).max())
        add(f"ours encode[{N}] throughput (texts/s)", ours_tps, "{:.1f}", "", None)
        add("sentence-transformers encode (texts/s)", st_tps, "{:.1f}", "", None)
        add(
            "ours / sentence-transformers throughput",
            speed,
            "{:.3f}",
            f">= {TARGET_ST_SPEED:.2f}",
            speed["median"] >= TARGET_ST_SPEED,
        )
        add(
            "embeddings: max |ours - ST| (L2-normalised)",
            {"median": diff},
            "{:.2e}",
            f"<= {TARGET_ST_DIFF:.0e}",
            diff <= TARGET_ST_DIFF,
        )
        results.update(
            ours_texts_per_s=ours_tps,
            st_texts_per_s=st_tps,
            ours_over_st_throughput=speed,
            embedding_max_abs_diff=diff,
        )

    if onnx_encoder is not None:
        ratio_a_onnx = summary(per("grid_onnx", "onnx")) | {"best": best("grid_onnx", "onnx")}
        add(f"A(onnx) grid ({len(grid.cells)} cells) / encode[{N}], onnx backend", ratio_a_onnx, "{:.3f}",
            f"<= {TARGET_A:.2f}", ratio_a_onnx["median"] <= TARGET_A)
        if one_thread:
            add("A(onnx), in CPU seconds", per_cpu("grid_onnx", "onnx"), "{:.3f}", "", None)
        results["ratio_a_onnx"] = ratio_a_onnx
    text_sets = [("STS", n, roles)]
    if passages:
        text_sets.append(("SciFact passages", len(passages), {role: f"p_{role}" for role in roles}))
    for set_name, count, names in text_sets:
        names = {role: name for role, name in names.items() if name in variants}
        if "st" not in names:
            continue
        tps = {role: summary([count / t for t in fast_t[name]]) | {"best": count / min(fast_t[name])}
               for role, name in names.items()}
        for role, name in names.items():
            label = st_onnx_label if role == "st_onnx" else role
            add(f"{set_name}: {label} encode[{N}] (texts/s)", tps[role], "{:.1f}", "", None)
        ours = [role for role in ("torch", "onnx") if role in names]
        fastest = max(ours, key=lambda role: tps[role]["median"])
        for peer, target in (("st", TARGET_FASTEST_OVER_ST), ("st_onnx", TARGET_FASTEST_OVER_ST_ONNX)):
            if peer in names:
                ratio = summary(per(names[peer], names[fastest])) | {"best": best(names[peer], names[fastest])}
                add(f"{set_name}: elasticir {fastest} (fastest) / {peer} throughput", ratio, "{:.3f}",
                    f">= {target:.2f}", ratio["median"] >= target)
                results[f"{set_name} fastest {fastest} over {peer}"] = ratio
                if one_thread:
                    cpu = per_cpu(names[peer], names[fastest])
                    add(f"{set_name}: the same, in CPU seconds", cpu, "{:.3f}", "", None)
                    results[f"{set_name} fastest {fastest} over {peer} (CPU seconds)"] = cpu
        if "onnx" in names:
            ratio = summary(per(names["torch"], names["onnx"])) | {"best": best(names["torch"], names["onnx"])}
            add(f"{set_name}: elasticir onnx / elasticir torch throughput", ratio, "{:.3f}", "", None)
            if one_thread:
                add(f"{set_name}: the same, in CPU seconds", per_cpu(names["torch"], names["onnx"]), "{:.3f}", "",
                    None)
        reference = normalised(outputs[names["st"]])
        for role, name in names.items():
            if role != "st":
                got = outputs[name][N] if role in ("torch", "onnx") else outputs[name]
                diff = float(np.abs(normalised(got) - reference).max())
                add(f"{set_name}: max |{role} - st| embeddings (normalised)", {"median": diff}, "{:.2e}",
                    f"<= {TARGET_ST_DIFF:.0e}", diff <= TARGET_ST_DIFF)
                results[f"{set_name} max abs diff {role} vs st"] = diff
        results[f"{set_name} texts_per_s"] = tps
    if args.metrics and onnx_encoder is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_encode_metrics_") as work:
            console.print("metrics: evaluating the full cell with the torch, then the onnx backend ...")
            metrics = {backend: full_cell_metrics(args.model, sts_file.parents[2], Path(work), backend, bs)
                       for backend in ("torch", "onnx")}
        for metric, value in metrics["torch"].items():
            diff = abs(metrics["onnx"][metric] - value)
            add(f"full cell {metric}: torch {value:.6f}, onnx {metrics['onnx'][metric]:.6f}, |diff|",
                {"median": diff}, "{:.1e}", f"<= {TARGET_METRIC_DIFF:.0e}", diff <= TARGET_METRIC_DIFF)
        results["full_cell_metrics"] = metrics

    # Diagnostics
    tok = summary(per("tok", base)) | {"best": best("tok", base)}
    xs = np.arange(1, N + 1, dtype=float)
    ys = np.array([ratio_b[layer]["median"] for layer in range(1, N + 1)])
    slope, intercept = np.polyfit(xs, ys, 1)
    score_share = summary([s["score"] / (s["score"] + s["encode"]) for s in grid_timings])
    drift = summary([runs[-1] / runs[0] for runs in times[base]]) if not args.no_palindrome else None
    add("diag: tokenisation alone / encode[N]", tok, "{:.3f}", "", None)
    add(
        "diag: fit B(L) = a + b*L: intercept a (fixed share)",
        {"median": float(intercept)},
        "{:.3f}",
        f"b = {slope:.3f}/layer",
        None,
    )
    add("diag: score stage / whole grid call", score_share, "{:.3f}", "", None)
    if drift:
        add(f"diag: drift gauge, encode[{N}] 2nd run / 1st run", drift, "{:.2f}", "", None)
    cpu_use = summary([c / w for cs, ws in zip(cpu_times[base], times[base]) for c, w in zip(cs, ws)])
    add(
        f"diag: CPU use of encode[{N}] (CPU s / wall s)",
        cpu_use,
        "{:.2f}",
        f"ideal {torch.get_num_threads()}",
        None,
    )

    print_table(console, f"bench_encode: medians over {args.repeats} repeats ({n} texts, {len(pairs)} pairs)", rows)
    console.print(
        f"load average at end {' '.join(f'{x:.2f}' for x in load_end)} (cpu_count {info['cpu_count']}); "
        f"model load {t_load:.1f}s; timed part {time.perf_counter() - bench_start:.0f}s"
    )
    if max(load_start[0], load_end[0]) > (info["cpu_count"] or 1):
        console.print(
            "[yellow]the load average exceeds the CPU count: other processes compete for the CPU, "
            "so absolute throughput is depressed and noisy; the interleaved ratios are the numbers "
            "to trust[/yellow]"
        )
    failed = [label for label, _, _, _, ok in rows if ok is False]
    console.print(
        "[red]FAIL: " + "; ".join(failed) + "[/red]" if failed else "[green]all targets met[/green]"
    )

    if args.json:
        record = {
            "model": portable_model(encoder.info.as_dict()),
            "machine": info,
            "load_average": {"start": load_start, "end": load_end},
            "data": {
                **data_file_record(sts_file),
                "origin": origin,
                "pairs": len(pairs),
                "texts": n,
                "subsampled": len(pairs) < len(all_pairs),
                "texts_flag": args.texts,
                "seed": args.seed,
            },
            "settings": {
                "repeats": args.repeats,
                "batch_size": bs,
                "palindrome": not args.no_palindrome,
                "torch_threads": torch.get_num_threads(),
                "combine_runs": "min",
            },
            "raw_seconds": times,
            "raw_cpu_seconds": cpu_times,
            "grid_stage_seconds": grid_timings,
            "ratio_a": ratio_a,
            "ratio_b": {str(k): v for k, v in ratio_b.items()},
            "targets": {
                "a": TARGET_A,
                "b": {str(k): k / N + TARGET_B_SLACK for k in range(1, N + 1)},
                "st_speed": TARGET_ST_SPEED,
                "st_diff": TARGET_ST_DIFF,
            },
            "diagnostics": {
                "tokenise_over_base": tok,
                "fit_intercept": float(intercept),
                "fit_slope": float(slope),
                "score_share_of_grid": score_share,
                "drift_gauge": drift,
                "cpu_use": cpu_use,
            },
            **results,
            "failed": failed,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2, default=float))
        console.print(f"saved {saved_as(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
