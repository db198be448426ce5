"""mteb 2.x's own STS evaluation of single (layer, dim) cells vs elasticir's, on the local STSBenchmark test set.

    HF_HUB_OFFLINE=1 ELASTICIR_DATA=/work/shared/data python benchmarks/check_mteb_cell.py [--cells 6:384,3:64]

Exits 1 if any cell's cosine_spearman (or cosine_pearson) differs from ours by more than --tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time

from elasticir.cells import Grid, parse_pairs
from elasticir.data.catalog import data_root
from elasticir.data.sts import load_sts
from elasticir.encoders import ElasticEncoder
from elasticir.evaluation.standalone import evaluate_sts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--cells", default="6:384,3:64")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cells = [tuple(c) for c in parse_pairs(args.cells)]

    started = time.perf_counter()
    from elasticir.encoders.mteb import OfflineSTSBenchmark, evaluate_cell_with_mteb

    print(f"import mteb wrapper: {time.perf_counter() - started:.1f}s")
    encoder = ElasticEncoder(args.model, device=args.device)
    path = data_root(None) / "sts" / "stsbenchmark" / "test.jsonl.gz"
    started = time.perf_counter()
    grid = Grid.for_model(encoder.num_layers, encoder.hidden_size, sorted({c[0] for c in cells}),
                          sorted({c[1] for c in cells}))
    ours = evaluate_sts(encoder, load_sts(path), grid, show_progress=False).cells
    print(f"elasticir grid {grid.layers} x {grid.dims}: {time.perf_counter() - started:.1f}s")
    failed = False
    for layer, dim in cells:
        started = time.perf_counter()
        theirs = evaluate_cell_with_mteb(encoder, layer, dim, OfflineSTSBenchmark(path))
        seconds = time.perf_counter() - started
        row = ours[(ours.layer == layer) & (ours.dim == dim)].iloc[0]
        for ours_key, mteb_key in (("spearman", "cosine_spearman"), ("pearson", "cosine_pearson")):
            diff = abs(row[ours_key] - theirs[mteb_key])
            failed |= diff > args.tolerance
            print(f"cell ({layer},{dim}) {mteb_key}: mteb {theirs[mteb_key]:.6f}  elasticir {row[ours_key]:.6f}  "
                  f"|diff| {diff:.2e}  ({seconds:.1f}s mteb)")
    print("FAIL" if failed else f"OK: mteb and elasticir agree within {args.tolerance:g}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
