"""Cost of one training step per method, relative to a plain step on the same batch (target: SRL <= 1.2x).

A step = loss forward (one early-exiting pass per column, cached) + backward + AdamW step, on all-MiniLM-L6-v2
with a fixed batch of real SNLI triplets. Methods are timed interleaved (plain, srl, ... plain, srl, ...) so
machine drift hits all of them alike; we report medians over repeats and the ratio to plain.

    ELASTICIR_DATA=../shared/data python benchmarks/bench_train_step.py [--batch-size 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from elasticir.data.catalog import data_root
from elasticir.encoders import resolve_model_path
from elasticir.training import FullGridSRLLoss, MRLLoss, PlainLoss, SortedNetLoss, SRLLoss, TwoDMSELoss
from elasticir.training.data import read_pair_file

TARGET = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="results/bench_train_step.json")
    args = parser.parse_args()
    console = Console()
    torch.manual_seed(0)

    folder, _ = resolve_model_path(args.model)
    model = SentenceTransformer(str(folder), device="cpu")
    model.train()
    _, columns = read_pair_file(data_root() / "pairs" / "snli" / "train.jsonl.gz")
    batch = {key: values[: args.batch_size] for key, values in columns.items()}
    features = [model.tokenize(batch[key]) for key in ("anchor", "positive", "negative")]
    base = MultipleNegativesRankingLoss(model)
    losses = {
        "plain": PlainLoss(model, base),
        "srl": SRLLoss(model, base),
        "srl (embedding KL)": SRLLoss(model, base, kl="embedding"),
        "mrl": MRLLoss(model, base),
        "2dmse": TwoDMSELoss(model, base),
        "2dmse-st5 (1/L, teacher kept)": TwoDMSELoss(model, base, layer_weighting="inverse", detach=False),
        "sortednet": SortedNetLoss(model, base),
        "srl-grid (30 cells)": FullGridSRLLoss(model, base),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the same work, weights stay put

    def step(loss) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss([dict(f) for f in features], None).backward()
        optimizer.step()
        return time.perf_counter() - start

    for loss in losses.values():  # warm-up: allocator, AdamW state
        step(loss)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.repeats):
        for name, loss in losses.items():
            times[name].append(step(loss))
    medians = {name: statistics.median(values) for name, values in times.items()}
    plain = medians["plain"]
    table = Table(title=f"one training step, {args.model}, batch {args.batch_size} SNLI triplets, "
                        f"median of {args.repeats} interleaved repeats, {torch.get_num_threads()} threads")
    for column in ("method", "seconds", "x plain", "per repeat (x plain)"):
        table.add_column(column, justify="right")
    for name, seconds in medians.items():
        per = " ".join(f"{t / p:.2f}" for t, p in zip(times[name], times["plain"]))
        table.add_row(name, f"{seconds:.3f}", f"{seconds / plain:.3f}", per)
    console.print(table)
    ratio = medians["srl"] / plain
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    console.print(f"[{'green' if ratio <= TARGET else 'red'}]{verdict}[/]: SRL step / plain step = {ratio:.3f} "
                  f"(target <= {TARGET})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"medians_s": medians, "times_s": times, "ratio_srl": ratio,
                                          "target": TARGET, "settings": vars(args)}, indent=2))
    console.print(f"written: {args.out}")


if __name__ == "__main__":
    main()
