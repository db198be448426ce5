"""STS pairs (`sentence1`, `sentence2`, `score`), validated line by line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elasticir.data.jsonl import read_jsonl
from elasticir.errors import InputFormatError


@dataclass(frozen=True)
class StsPairs:
    sentence1: list[str]
    sentence2: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def load_sts(path: Path) -> StsPairs:
    """Read an STS jsonl(.gz) file; an empty sentence or a non-numeric score is an error naming the line."""
    first, second, scores = [], [], []
    for number, row in read_jsonl(path, required=("sentence1", "sentence2", "score")):
        for key in ("sentence1", "sentence2"):
            if not isinstance(row[key], str) or not row[key].strip():
                raise InputFormatError(f"{path} line {number}: {key} is empty or not a string; fix or drop the pair")
        try:  # JSON true/false would pass float() as 1.0/0.0: a boolean is not a similarity score
            score = math.nan if isinstance(row["score"], bool) else float(row["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise InputFormatError(f"{path} line {number}: score {row['score']!r} is not a finite number")
        first.append(row["sentence1"])
        second.append(row["sentence2"])
        scores.append(score)
    if len(scores) < 2:
        raise InputFormatError(f"{path}: {len(scores)} pair(s); a correlation needs at least 2")
    return StsPairs(first, second, np.asarray(scores, dtype=np.float64))
