"""The grid evaluations for a notebook or script: `elasticir.evaluate_sts(encoder, pairs, grid)` and
`elasticir.evaluate_retrieval(...)` without an executor argument. Each call runs on a fresh local executor
(elasticir.execution.local) that is closed before it returns, so nothing it started (scoring processes)
outlives the call. To run on Ray, call elasticir.evaluation.sts / .retrieval with an executor of your own."""

from __future__ import annotations

from elasticir.evaluation import retrieval, sts
from elasticir.evaluation.result import GridResult
from elasticir.execution.local import LocalExecutor


def evaluate_sts(encoder, pairs, grid, **options) -> GridResult:
    """elasticir.evaluation.sts.evaluate_sts on this process (see there for the options)."""
    with LocalExecutor(encoder) as executor:
        return sts.evaluate_sts(encoder, pairs, grid, executor=executor, **options)


def evaluate_retrieval(encoder, data, grid, **options) -> GridResult:
    """elasticir.evaluation.retrieval.evaluate_retrieval on this process (see there for the options)."""
    with LocalExecutor(encoder) as executor:
        return retrieval.evaluate_retrieval(encoder, data, grid, executor=executor, **options)
