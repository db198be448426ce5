
"""elasticir: evaluate and train elastic (2D Matryoshka) text encoders over every (layer, dim) cell.

    import elasticir as eir
    encoder = eir.ElasticEncoder("all-MiniLM-L6-v2")
    result = eir.evaluate_sts(encoder, eir.load_sts(path), eir.Grid.for_model(6, 384))   # a GridResult
    outcome = eir.run(eir.RunConfig(sts=["stsbenchmark"], retrieval=["scifact"]))      # a run directory
    eir.write_report(outcome.dir, "report/")

Names are imported on first use, so `import elasticir` (and the command line's --help) stays fast; torch,
transformers and faiss load only when an object that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Cell": "elasticir.cells",
    "Grid": "elasticir.cells",
    "ElasticEncoder": "elasticir.encoders",
    "EmbeddingStore": "elasticir.encoders",
    "truncate": "elasticir.encoders",
    "load_sts": "elasticir.data.sts",
    "load_beir": "elasticir.data.beir",
    "GridResult": "elasticir.evaluation",
    "evaluate_sts": "elasticir.evaluation.standalone",  # each call on a fresh local executor, closed at return
    "evaluate_retrieval": "elasticir.evaluation.standalone",
    "RunConfig": "elasticir.config",
    "RunOutcome": "elasticir.runner",
    "run": "elasticir.runner",
    "write_report": "elasticir.report.build",
    "load_leaderboard": "elasticir.results.schema",
    "TrainConfig": "elasticir.training.trainer",
    "train": "elasticir.training.trainer",
    "ElasticLoss": "elasticir.training",
    "PlainLoss": "elasticir.training",
    "MRLLoss": "elasticir.training",
    "TwoDMSELoss": "elasticir.training",
    "SRLLoss": "elasticir.training",
    "FullGridSRLLoss": "elasticir.training",
    "SortedNetLoss": "elasticir.training",
    "ElasticIRError": "elasticir.errors",
}
__all__ = [
    "Cell",
    "ElasticEncoder",
    "ElasticIRError",
    "ElasticLoss",
    "EmbeddingStore",
    "FullGridSRLLoss",
    "Grid",
    "GridResult",
    "MRLLoss",
    "PlainLoss",
    "RunConfig",
    "RunOutcome",
    "SRLLoss",
    "SortedNetLoss",
    "TrainConfig",
    "TwoDMSELoss",
    "evaluate_retrieval",
    "evaluate_sts",
    "load_beir",
    "load_leaderboard",
    "load_sts",
    "run",
    "train",
    "truncate",
    "write_report",
]
assert sorted(_EXPORTS) == __all__


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'elasticir' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from elasticir.cells import Cell, Grid
    from elasticir.config import RunConfig
    from elasticir.data.beir import load_beir
    from elasticir.data.sts import load_sts
    from elasticir.encoders import ElasticEncoder, EmbeddingStore, truncate
    from elasticir.errors import ElasticIRError
    from elasticir.evaluation import GridResult
    from elasticir.evaluation.standalone import evaluate_retrieval, evaluate_sts
    from elasticir.report.build import write_report
    from elasticir.results.schema import load_leaderboard
    from elasticir.runner import RunOutcome, run
    from elasticir.training import (
        ElasticLoss,
        FullGridSRLLoss,
        MRLLoss,
        PlainLoss,
        SortedNetLoss,
        SRLLoss,
        TwoDMSELoss,
    )
    from elasticir.training.trainer import TrainConfig, train
