"""Generic helpers every stage shares: atomic writes, file hashing, and the provenance block.

Provenance (library versions, machine, command line) is what makes a result reproducible; runs, training and
pre-training record the same block through `provenance()`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from elasticir.errors import ElasticIRError

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


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set-and-return)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a uniquely named temporary file and rename: readers see the old file or the whole new one,
    never half, and two writers never share a temporary file. The file gets the permissions a plain `open`
    would give (0666 less the umask; mkstemp alone makes it 0600, unreadable to the user's group). An OS
    failure (disk full, read-only or missing folder) becomes one error naming the file."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise ElasticIRError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another --out") from None
    except BaseException:
        if tmp:
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


def release_free_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc `malloc_trim`; elsewhere nothing).

    An encode allocates and frees many batch-sized buffers below glibc's mmap threshold, which stay in the heap
    as free space counted in the RSS; the flat indexes built next are allocated elsewhere (each is larger than
    the threshold), so that free space would stay resident beside them for the rest of the run. Neither numpy
    nor torch exposes this, hence ctypes (the symbols already loaded into this process: no library lookup)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
