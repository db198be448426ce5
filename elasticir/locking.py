"""One writer at a time per output (a run's part, an embedding cache): an advisory lock file per output.

Two commands pointed at the same `--out` must not write the same files at once (one would read the other's
half-written arrays and report wrong numbers). Each writer holds an exclusive `flock` on `<output>.lock` while it
writes; a second writer waits for it (saying whose pid it waits for) and then finds the work finished, or gives
up after `ELASTICIR_LOCK_TIMEOUT` seconds (default 6 hours; 0 = refuse at once) with a message naming the pid.

Hand-written rather than with `filelock`: the waiting run must name the process it waits for, and a lock held by
the kernel for an open descriptor is released when its process dies (kill -9 included), so a crashed run never
leaves a stale lock behind. POSIX only (fcntl), like the rest of the toolkit's deployment; on NFS, flock is
only as reliable as the mount's lock daemon.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elasticir.errors import ElasticIRError

DEFAULT_TIMEOUT_S = 6 * 3600.0


def lock_timeout() -> float:
    """Seconds to wait for another writer: $ELASTICIR_LOCK_TIMEOUT, else 6 hours."""
    raw = os.environ.get("ELASTICIR_LOCK_TIMEOUT")
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ElasticIRError(f"ELASTICIR_LOCK_TIMEOUT={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ElasticIRError(f"ELASTICIR_LOCK_TIMEOUT={raw!r} must be 0 or more seconds")
    return value


def _holder(fd: int) -> str:
    """The pid the current holder wrote into the lock file (best effort: it may be mid-write)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def exclusive(lock_path: Path, what: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock `lock_path` while writing `what` (words for messages), waiting for another
    holder up to `timeout` seconds (default `lock_timeout()`)."""
    timeout = lock_timeout() if timeout is None else timeout
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ElasticIRError(f"cannot create the lock file {lock_path}: {exc.strerror}; choose another --out") from None
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise ElasticIRError(
                        f"another run (pid {holder}) is writing {what}; wait for it to finish or use another --out "
                        f"(gave up after {timeout:g} s; ELASTICIR_LOCK_TIMEOUT sets how long to wait)"
                    ) from None
                if not announced:
                    print(f"waiting for another run (pid {holder}) that is writing {what} "
                          f"(up to {timeout:g} s; Ctrl-C and use another --out not to wait)", file=sys.stderr)
                    announced = True
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            except OSError as exc:  # e.g. ENOLCK: a network file system without lock support
                raise ElasticIRError(f"cannot lock {lock_path}: {exc.strerror or exc}; put --out on a local "
                                     "file system") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock; the file stays (unlinking it would race)
