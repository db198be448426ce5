"""Generic helpers every stage shares: atomic writes, file hashing, and the provenance block.

Provenance (library versions, machine, command line) is what makes a result reproducible; runs, training and
pre-training record the same block through `provenance()`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

LIBRARIES = (
    "elasticir", "torch", "transformers", "tokenizers", "sentence-transformers", "faiss-cpu", "faiss-gpu",
    "ir-measures", "pytrec-eval-terrier", "beir", "pyserini", "mteb", "numpy", "scipy", "pandas",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 1,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def provenance() -> dict:
    """The block every result file records: library versions, machine facts and the command line."""
    return {"library_versions": library_versions(), "machine": machine(), "command": command_line()}


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file and rename: readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of_files(files) -> str:
    """One sha256 over the bytes of `files` in order (weights split over several files hash as one)."""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def file_checksum(path: Path) -> dict:
    """{path, sha256, bytes} of one data file (cached per process by path, size and mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_of_files([path])
    return {"path": str(path), "sha256": _HASHES[key], "bytes": stat.st_size}
