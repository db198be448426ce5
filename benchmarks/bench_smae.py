"""Does Starbucks-MAE pre-training help SRL? SMAE -> SRL against SRL from the same start, same budgets.

Pipeline (every stage reuses a finished output, so an interrupted benchmark continues where it stopped):
  1. SMAE pre-training of the base (default all-MiniLM-L6-v2) on raw text: the BEIR SciFact and Cranfield
     corpora (title + abstract), never an STS evaluation pair;
  2. SRL fine-tuning (MNRL on pairs/snli + pairs/mrpc, the default pair list, in-batch negatives) of
     (a) the base ("SRL", the paper's BERT-SRL row) and (b) the SMAE output ("SMAE->SRL", the Starbucks row),
     with the same data, steps, batch size, learning rate and seed;
  3. both evaluated on the full STS grid (stsbenchmark, sts12, sickr; every layer x dims 16..384) by the runner;
  4. a difference report (`write_report`: paired bootstrap over STS pairs, Holm over the 36 cells of each
     dataset) and the diagonal table: Spearman per pair cell and dataset for SRL, SMAE->SRL and the difference.

Default budget: SMAE 60 steps x 16 windows of <= 128 tokens (~1k windows, ~0.1M tokens: the paper used 100B
tokens, so this tests the mechanics and the direction of the effect at toy scale, not the paper's claim),
fine-tuning 200 steps x 32 pairs each, then about 29k STS sentences encoded per model. Measured on the shared
2-core CPU, one thread: SMAE ~15 s/step (12 vocabulary projections per step: 6 pairs x MLM + decoder), SRL
~2.4 s/step, STS ~80 s per model: about 35 minutes in all (15 SMAE + 2 x 8 SRL + 3 STS); --pretrain-steps 25
brings it to about 25. Scale up with --pretrain-steps / --pretrain-batch / --finetune-steps.
Results go to results/bench_smae/ (git-ignored): models/, runs/, report/ and bench_smae.json.

Run:  nice -n 10 python benchmarks/bench_smae.py [--pretrain-steps 60] [--pretrain-batch 16] [--max-length 128]
          [--finetune-steps 200] [--finetune-batch 32] [--threads 1] [--context] [--out results/bench_smae]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from elasticir.cells import default_pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--pretrain-data", default="beir/scifact,beir/cranfield",
                        help="raw text for SMAE (files or BEIR folders; relative to $ELASTICIR_DATA)")
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--pretrain-batch", type=int, default=16)
    parser.add_argument("--pretrain-lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per pre-training window")
    parser.add_argument("--finetune-data", default="pairs/snli/train.jsonl.gz,pairs/mrpc/train.jsonl.gz")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-batch", type=int, default=32)
    parser.add_argument("--finetune-lr", type=float, default=2e-5)
    parser.add_argument("--sts", default="stsbenchmark,sts12,sickr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared 2-core machine a second OpenMP thread made an SRL "
                        "step 4-5x slower, spin-waiting for a busy core)")
    parser.add_argument("--context", action="store_true",
                        help="also evaluate the untouched base and the SMAE model before fine-tuning")
    parser.add_argument("--out", type=Path, default=Path("results/bench_smae"))
    return parser.parse_args()


def timed(step, *args):
    started = time.perf_counter()
    result = step(*args)
    return result, time.perf_counter() - started


def evaluate(model: Path | str, args: argparse.Namespace, dims: list[int], pairs):
    from elasticir.runner import RunConfig, run

    return run(RunConfig(model=str(model), dims=dims, pairs=pairs, sts=args.sts.split(","), retrieval=[],
                         bm25=False, out=str(args.out / "runs"), latency_texts=0, seed=args.seed))


def spearmans(outcome) -> dict[tuple[str, int, int], float]:
    return {(row.dataset, int(row.layer), int(row.dim)): float(row.spearman) for row in outcome.cells.itertuples()}


def diagonal(significance: pd.DataFrame, pairs, datasets: list[str], context: dict[str, dict]) -> pd.DataFrame:
    """Per pair cell and dataset (and their mean): SRL, SMAE->SRL, the difference and its Holm p, from the
    report's significance table; `context` adds other runs' Spearmans as columns."""
    rows = []
    for layer, dim in pairs:
        cell = significance[(significance.layer == layer) & (significance.dim == dim)].set_index("dataset")
        for dataset in [*datasets, "mean"]:
            if dataset == "mean":
                row = {"SRL": cell.baseline.mean(), "SMAE->SRL": cell.value.mean(), "diff": cell["diff"].mean(),
                       "p_holm": float("nan"), "significant": False}
            else:
                found = cell.loc[dataset]
                row = {"SRL": found.baseline, "SMAE->SRL": found.value, "diff": found["diff"],
                       "p_holm": found.p_holm, "significant": bool(found.significant)}
            for name, values in context.items():
                members = datasets if dataset == "mean" else [dataset]
                row[name] = sum(values[(member, layer, dim)] for member in members) / len(members)
            rows.append({"cell": f"({layer},{dim})", "dataset": dataset, **row})
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoConfig

    from elasticir.encoders import resolve_model_path
    from elasticir.pretraining.pretrain import PretrainConfig, pretrain
    from elasticir.report.build import write_report
    from elasticir.training.trainer import TrainConfig, train

    shape = AutoConfig.from_pretrained(resolve_model_path(args.base)[0])
    pairs = default_pairs(shape.num_hidden_layers, shape.hidden_size)
    dims = sorted({dim for _, dim in pairs} | {32, 64, 128, 256, shape.hidden_size})
    models = args.out / "models"
    budget = {"pretrain": {"method": "smae", "steps": args.pretrain_steps, "batch_size": args.pretrain_batch,
                           "max_length": args.max_length, "lr": args.pretrain_lr, "data": args.pretrain_data},
              "finetune": {"method": "srl", "steps": args.finetune_steps, "batch_size": args.finetune_batch,
                           "lr": args.finetune_lr, "data": args.finetune_data},
              "seed": args.seed, "threads": args.threads}
    print(f"budget: {json.dumps(budget)}", flush=True)

    smae = pretrain(PretrainConfig(
        method="smae", base=args.base, data=args.pretrain_data.split(","), out=str(models / "smae"),
        max_steps=args.pretrain_steps, batch_size=args.pretrain_batch, lr=args.pretrain_lr,
        max_length=args.max_length, seed=args.seed, checkpoint_steps=max(10, args.pretrain_steps // 5)))
    smae_meta = json.loads((smae / "elastic_pretrain.json").read_text())
    print(f"SMAE: {smae_meta['steps']} steps in {smae_meta['wall_seconds']:.0f} s "
          f"({smae_meta['wall_seconds'] / smae_meta['steps']:.1f} s/step); loss {smae_meta['losses'][0]['loss']:.3f}"
          f" -> {smae_meta['losses'][-1]['loss']:.3f}; skipped NaN steps: {smae_meta['skipped_nan_steps']}",
          flush=True)

    def finetune(base: Path | str, name: str) -> Path:
        return train(TrainConfig(
            method="srl", base=str(base), data=args.finetune_data.split(","), out=str(models / name),
            max_steps=args.finetune_steps, batch_size=args.finetune_batch, lr=args.finetune_lr, seed=args.seed))

    srl, smae_srl = finetune(args.base, "srl"), finetune(smae, "smae-srl")
    finetune_seconds = {name: json.loads((folder / "elastic.json").read_text())["train_seconds"]
                        for name, folder in (("SRL", srl), ("SMAE->SRL", smae_srl))}
    print(f"SRL fine-tuning: {finetune_seconds['SRL']:.0f} s from the base, {finetune_seconds['SMAE->SRL']:.0f} s "
          "from SMAE", flush=True)

    (srl_run, srl_eval), (smae_srl_run, smae_srl_eval) = (timed(evaluate, model, args, dims, pairs)
                                                          for model in (srl, smae_srl))
    context = {name: spearmans(evaluate(model, args, dims, pairs))
               for name, model in (("base", args.base), ("SMAE only", smae))} if args.context else {}
    report = args.out / "report"
    write_report(smae_srl_run.dir, report, baseline_dir=srl_run.dir)
    significance = pd.read_csv(report / "significance.csv")
    datasets = args.sts.split(",")
    table = diagonal(significance, pairs, datasets, context)

    print(f"\nDiagonal, Spearman x 100; diff = SMAE->SRL minus SRL, * = p < 0.05 after Holm over the "
          f"{int(significance.family.max())} grid cells of each dataset (paired bootstrap over STS pairs)")
    shown = table.drop(columns=["p_holm", "significant"])
    for column in ("SRL", "SMAE->SRL", *context):
        shown[column] = (100 * shown[column]).map("{:.2f}".format)
    shown["diff"] = (100 * table["diff"]).map("{:+.2f}".format) + table.significant.map({True: "*", False: ""})
    print(shown.to_string(index=False))
    means = table[table.dataset == "mean"]
    helped = {"mean_diff_over_pairs": float(means["diff"].mean()),
              "cells_better": int(table[(table.dataset != "mean") & table.significant & (table["diff"] > 0)].shape[0]),
              "cells_worse": int(table[(table.dataset != "mean") & table.significant & (table["diff"] < 0)].shape[0])}
    print(f"\nmean difference over the {len(pairs)} pair cells: {100 * helped['mean_diff_over_pairs']:+.2f} "
          f"Spearman points; significant pair-cell x dataset results: {helped['cells_better']} better, "
          f"{helped['cells_worse']} worse (of {len(pairs) * len(datasets)})")
    print(f"report: {report / 'report.md'}")
    results = {
        "budget": budget, "pairs": [list(cell) for cell in pairs], "dims": dims,
        "smae": {"folder": str(smae), "steps": smae_meta["steps"], "wall_seconds": smae_meta["wall_seconds"],
                 "losses": smae_meta["losses"], "skipped_nan_steps": smae_meta["skipped_nan_steps"]},
        "finetune_seconds": finetune_seconds,
        "eval_seconds_this_call": {"SRL": srl_eval, "SMAE->SRL": smae_srl_eval},
        "runs": {"SRL": str(srl_run.dir), "SMAE->SRL": str(smae_srl_run.dir)},
        "diagonal": table.to_dict(orient="records"), "summary": helped, "report": str(report / "report.md"),
    }
    (args.out / "bench_smae.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"results: {args.out / 'bench_smae.json'}")


if __name__ == "__main__":
    main()
