"""STS pairs (`sentence1`, `sentence2`, `score`), validated line by line."""

from __future__ import annotations

import math
import sys
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
    first, second, scores, numbers = [], [], [], []
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
        numbers.append(number)
    if len(scores) < 2:
        raise InputFormatError(f"{path}: {len(scores)} pair(s); a correlation needs at least 2")
    gold = np.asarray(scores, dtype=np.float64)
    if np.ptp(gold) == 0:
        raise InputFormatError(f"{path}: every one of the {len(gold)} pairs has the score {gold[0]:g}; a correlation "
                               "needs gold scores that differ - check the score field")
    warn_far_scores(path, gold, numbers)
    return StsPairs(first, second, gold)


def warn_far_scores(path: Path, gold: np.ndarray, numbers: list[int]) -> None:
    """A warning naming the line of each gold score far outside the range of the set's others (beyond three
    interquartile ranges from the quartiles: never for scores spread over a 0-5 or 1-5 scale, but a 50 among
    them, a typo or another scale, is named)."""
    q1, q3 = np.percentile(gold, [25, 75])
    spread = max(q3 - q1, 1e-9 * max(1.0, abs(q3)))
    low, high = q1 - 3 * spread, q3 + 3 * spread
    far = [(n, s) for n, s in zip(numbers, gold) if not low <= s <= high]
    if not far:
        return
    inside = gold[(gold >= low) & (gold <= high)]
    shown = "; ".join(f"line {n}: score {s:g}" for n, s in far[:5]) + (f"; and {len(far) - 5} more" if len(far) > 5 else "")
    print(f"warning: {path}: {len(far)} gold score(s) far outside the set's range ({inside.min():g} to "
          f"{inside.max():g}): {shown}; check those lines (a typo, or a score on another scale)", file=sys.stderr)
