"""`--shard i/n`: the SLURM-array pattern (as pyserini and Tevatron users run it) without a distributed engine.

Job i of n encodes rows i/n of every corpus into the shared embedding store and exits; the plain command run
afterwards finds the shards marked done (see elasticir.encoders.store) and encodes only what none covered.
"""

from __future__ import annotations

import re

from elasticir.errors import ElasticIRError


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n (zero-based, as SLURM_ARRAY_TASK_ID counts from 0)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ElasticIRError(f"--shard {text!r}: give i/n with 0 <= i < n, e.g. --shard 0/4 "
                             "(zero-based, e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return int(match[1]), int(match[2])
