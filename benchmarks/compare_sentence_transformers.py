"""A leaderboard's full-depth cells against sentence-transformers + MTEB's prompt rule, on the same texts.

    HF_HUB_OFFLINE=1 ELASTICIR_DATA=../shared/data python benchmarks/compare_sentence_transformers.py \
        leaderboards/embeddinggemma-300m.json --model /path/to/embeddinggemma-300m [--tolerance 1e-4]

For every STS dataset of the leaderboard and every dim d of its grid, the reference is what a user of the model's
own library computes: `SentenceTransformer(folder, truncate_dim=d).encode(sentences, prompt_name=P)` with P the
prompt name that *mteb's own* `get_prompt_name` selects for the dataset's MTEB task (imported from mteb, not from
elasticir), then Spearman / Pearson of the cosine of each pair (MTEB's main STS score). For each retrieval
dataset: queries and documents encoded with their MTEB-selected prompts, exact cosine (or the model's dot)
search over the corpus, nDCG@10 by ir-measures. The subset (if the leaderboard is one) is rebuilt with the
leaderboard's recorded limits and seed, so both sides see the very same pairs, queries and documents; the max
length is the leaderboard's.

The full-width vectors are encoded once per text list and sliced per dim; that slicing equals
`truncate_dim` is checked on the first texts of each list (the check is printed). Prints one table, writes it
as JSON (--json), and exits 1 if any cell differs by more than --tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def mteb_prompt(model_prompts: dict[str, str], task_name: str | None, task_type: str, prompt_type: str | None):
    """The prompt name mteb selects, by mteb's own function and a real task's metadata where mteb has the task."""
    import mteb
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType

    if task_name:
        metadata = mteb.get_task(task_name).metadata
    else:  # a dataset MTEB lacks (Cranfield): the task-type rule only, as for any task of that type
        from types import SimpleNamespace

        metadata = SimpleNamespace(name="", type=task_type)
    return get_prompt_name(model_prompts, metadata, PromptType(prompt_type) if prompt_type else None)


def encode(model, texts: list[str], prompt_name: str | None, batch_size: int) -> np.ndarray:
    return model.encode(texts, prompt_name=prompt_name, batch_size=batch_size, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def check_truncate_dim(model, texts, prompt_name, full: np.ndarray, dims: list[int], batch_size: int) -> float:
    """Max |ST encode(truncate_dim=d) - full[:, :d]| over the first texts and every dim."""
    worst = 0.0
    for dim in dims:
        cut = model.encode(texts[:8], prompt_name=prompt_name, truncate_dim=dim, batch_size=batch_size,
                           convert_to_numpy=True, show_progress_bar=False)
        worst = max(worst, float(np.abs(cut - full[:8, :dim]).max()))
    return worst


def cosine_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


def sts_reference(model, pairs, prompt_name, dims, batch_size):
    from scipy.stats import pearsonr, spearmanr

    texts = list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))
    row = {text: i for i, text in enumerate(texts)}
    full = encode(model, texts, prompt_name, batch_size)
    drift = check_truncate_dim(model, texts, prompt_name, full, dims, batch_size)
    left, right = [row[t] for t in pairs.sentence1], [row[t] for t in pairs.sentence2]
    scores = {}
    for dim in dims:
        cut = cosine_rows(full[:, :dim])
        cosine = np.einsum("ij,ij->i", cut[left], cut[right]).astype(np.float64)
        scores[dim] = {"spearman": float(spearmanr(cosine, pairs.scores).statistic),
                       "pearson": float(pearsonr(cosine, pairs.scores).statistic)}
    return scores, drift


def retrieval_reference(model, data, prompts, dims, batch_size, similarity, remove_self_hits):
    import ir_measures

    queries = encode(model, data.query_texts, prompts["query"], batch_size)
    docs = encode(model, list(data.doc_texts), prompts["document"], batch_size)
    drift = check_truncate_dim(model, data.query_texts, prompts["query"], queries, dims, batch_size)
    scores = {}
    for dim in dims:
        q, d = queries[:, :dim], docs[:, :dim]
        if similarity == "cosine":
            q, d = cosine_rows(q), cosine_rows(d)
        sims = q @ d.T
        run = []
        for i, qid in enumerate(data.query_ids):
            for j, doc in enumerate(data.doc_ids):
                if not (remove_self_hits and doc == qid):
                    run.append(ir_measures.ScoredDoc(qid, doc, float(sims[i, j])))
        qrels = [ir_measures.Qrel(qid, doc, rel) for qid, judged in data.qrels.items() for doc, rel in judged.items()]
        scores[dim] = {"nDCG@10": float(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10])}
    return scores, drift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("leaderboard", type=Path)
    parser.add_argument("--model", required=True, help="the model folder the leaderboard was made with")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the comparison table here")
    parser.add_argument("--reference-cache", type=Path,
                        help="keep the sentence-transformers scores here per dataset and reuse them when the "
                        "leaderboard's subset, seed, max length, dims and model sha256 are the same (the reference "
                        "can then be computed while the elasticir run is still going, from a leaderboard stub)")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from elasticir.data.beir import load_beir
    from elasticir.data.catalog import data_root, locate, spec_for
    from elasticir.data.sts import load_sts
    from elasticir.data.subset import subset_retrieval, subset_sts

    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    board = json.loads(args.leaderboard.read_text())
    config, model_record = board["config"], board["model"]
    subset = board.get("subset") or {}
    limit_q, limit_c, seed = subset.get("limit_queries"), subset.get("limit_corpus"), board.get("seed", 0)
    full_layer, dims = model_record["num_layers"], board["grid"]["dims"]
    ours = {(r["dataset"], r["dim"]): r["metrics"] for r in board["results"]
            if r["layer"] == full_layer and r.get("precision") in (None, "float32")}
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = model_record["max_length"]
    similarity = model.similarity_fn_name or "cosine"
    root = data_root(None)
    params = {"subset": subset, "seed": seed, "max_length": model_record["max_length"], "dims": dims,
              "weights_sha256": model_record["weights_sha256"]}
    cache = json.loads(args.reference_cache.read_text()) if args.reference_cache and args.reference_cache.is_file() else {}
    if cache.get("params") != params:
        cache = {"params": params, "datasets": {}}
    rows, worst, pending = [], 0.0, []
    for task, names in (("sts", config["sts"]), ("retrieval", config["retrieval"])):
        for name in names:
            spec = spec_for(name, root)
            started = time.perf_counter()
            if name in cache["datasets"]:
                entry = cache["datasets"][name]
                reference = {int(dim): value for dim, value in entry["scores"].items()}
                used, drift = entry["prompts"], entry["truncate_dim_check"]
            elif task == "sts":
                prompt = mteb_prompt(model.prompts, spec.mteb_name, "STS", None)
                pairs = subset_sts(load_sts(locate(name, root, download=False)), limit_q, seed)
                reference, drift = sts_reference(model, pairs, prompt, dims, args.batch_size)
                used = {"text": prompt}
            else:
                used = {side: mteb_prompt(model.prompts, spec.mteb_name, "Retrieval", side)
                        for side in ("query", "document")}
                data = load_beir(locate(name, root, download=False), spec.split)
                if limit_q or limit_c:
                    data = subset_retrieval(data, limit_q, limit_c, seed)
                reference, drift = retrieval_reference(model, data, used, dims, args.batch_size, similarity,
                                                       spec.remove_self_hits)
            if args.reference_cache and name not in cache["datasets"]:
                cache["datasets"][name] = {"scores": reference, "prompts": used, "truncate_dim_check": drift}
                args.reference_cache.write_text(json.dumps(cache, indent=2))
            if not any(dataset == name for dataset, _ in ours):
                pending.append(name)
                print(f"{name}: reference in {time.perf_counter() - started:.0f}s; not in the leaderboard yet",
                      flush=True)
                continue
            recorded = {side: p["name"] for side, p in
                        (next(d for d in board["datasets"] if d["name"] == name).get("prompts") or {}).items()}
            for dim in dims:
                for metric, value in reference[dim].items():
                    diff = abs(ours[(name, dim)][metric] - value)
                    worst = max(worst, diff)
                    rows.append({"dataset": name, "layer": full_layer, "dim": dim, "metric": metric,
                                 "elasticir": ours[(name, dim)][metric], "sentence_transformers": value,
                                 "abs_diff": diff, "prompts_mteb": used, "prompts_recorded": recorded,
                                 "truncate_dim_check": drift})
            print(f"{name}: reference in {time.perf_counter() - started:.0f}s, prompts {used} (recorded "
                  f"{recorded}), truncate_dim vs slice max diff {drift:.1e}", flush=True)
    print(f"\n{'dataset':<14}{'cell':>9}  {'metric':<9}{'elasticir':>11}{'sent-tr.':>11}{'|diff|':>10}")
    for row in rows:
        print(f"{row['dataset']:<14}{row['layer']:>4},{row['dim']:<4}  {row['metric']:<9}{row['elasticir']:>11.5f}"
              f"{row['sentence_transformers']:>11.5f}{row['abs_diff']:>10.1e}")
    if pending:
        print(f"\nnot compared (not in the leaderboard): {', '.join(pending)}")
    def texts(names: dict, source: dict) -> dict:  # a prompt is its text; an empty one is no prompt
        return {side: source.get(name, "") for side, name in names.items() if name and source.get(name, "")}

    recorded_texts = {d["name"]: {side: p["text"] for side, p in (d.get("prompts") or {}).items() if p["text"]}
                      for d in board["datasets"]}
    mismatched = [r for r in rows if texts(r["prompts_mteb"], model.prompts) != recorded_texts.get(r["dataset"], {})]
    print(f"\nmax |diff| {worst:.2e} over {len(rows)} cell metrics (tolerance {args.tolerance:g}); "
          f"prompt records differing from mteb's choice: {len(mismatched)}")
    if args.json:
        args.json.write_text(json.dumps({"leaderboard": str(args.leaderboard), "max_abs_diff": worst, "rows": rows},
                                        indent=2))
    return 0 if worst <= args.tolerance and not mismatched and not pending else 1


if __name__ == "__main__":
    sys.exit(main())
