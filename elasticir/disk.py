"""Disk space: say what a store will take before writing it, and refuse to start when the disk lacks it."""

from __future__ import annotations

import shutil
from pathlib import Path

from elasticir.errors import ElasticIRError
from elasticir.progress import stage


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path` (its nearest existing folder); tests replace this."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(folder: Path, needed: int, what: str, *, existing: int | None = None) -> None:
    """Say how much disk an embedding store will take before encoding, and refuse to start when the file
    system lacks it (a full disk hours into encoding MS MARCO is the failure this prevents)."""
    free = free_bytes(folder)
    total = needed if existing is None else existing
    stage(f"{what}: the store takes {size(total)} ({size(needed)} new) in {folder}; {size(free)} free")
    if needed > free:
        raise ElasticIRError(
            f"not enough disk for the embedding store in {folder}: it needs {size(needed)}, the file system "
            f"has {size(free)} free. Fix: free space, point --out (or the YAML key cache_dir) at a larger disk, store "
            "fewer layers (--layers) or half the bytes (--store-dtype float16)")


def size(count: float) -> str:
    """Bytes in decimal units, three significant digits: 15.4 kB, 326 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 999.5 or unit == "TB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1000
    return f"{count:.3g} TB"
