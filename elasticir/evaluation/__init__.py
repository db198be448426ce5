"""Evaluation over a grid: STS (MTEB's protocol) and retrieval (BEIR / trec_eval), each returning a GridResult."""

from elasticir.evaluation.result import GridResult
from elasticir.evaluation.retrieval import evaluate_retrieval
from elasticir.evaluation.sts import evaluate_sts

__all__ = ["GridResult", "evaluate_retrieval", "evaluate_sts"]
