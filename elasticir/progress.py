"""Progress that reaches a log file as well as a terminal.

tqdm draws its bars only on a terminal (`disable=None`); under nohup, SLURM or CI, where stderr is a file, a
long run would otherwise print nothing for half an hour. So there are two renderings of the same calls:
  * on a terminal: tqdm bars, as before;
  * elsewhere: one `[elasticir] <stage>` line per stage and, for counted work, a line at most every
    `ELASTICIR_PROGRESS_SECONDS` (default 30) with items done / total, rate and ETA, plus one final line.
Lines go to stderr, so stdout stays the command's result (tables, paths).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
PREFIX = "[elasticir]"


def interactive() -> bool:
    """True when stderr is a terminal (bars), False for files and pipes (log lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ELASTICIR_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _emit(text: str) -> None:
    print(f"{PREFIX} {text}", file=sys.stderr, flush=True)


def stage(text: str) -> None:
    """Announce a stage. In logs it is a line; on a terminal too (bars come and go, stages stay readable)."""
    _emit(text)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogProgress:
    """tqdm's `update` / `close` / iteration, written as periodic log lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 **_ignored) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n = desc, unit, 0
        self.started = self.last = time.monotonic()
        self.closed = False

    def _line(self, final: bool = False) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        items = self.unit if self.unit.endswith("s") else f"{self.unit}s"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        if final:
            return f"{self.desc}: done, {done} {items} in {_duration(elapsed)} ({rate:.1f} {self.unit}/s)"
        eta = f", ETA {_duration((self.total - self.n) / rate)}" if self.total and rate > 0 else ""
        return f"{self.desc}: {done} {items}{share}, {rate:.1f} {self.unit}/s{eta}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= _interval() and not (self.total and self.n >= self.total):
            self.last = now
            _emit(self._line())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _emit(self._line(final=True))

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()


class _Silent:
    def __init__(self, iterable=None, **_ignored) -> None:
        self.iterable = iterable

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self):
        return iter(self.iterable)


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False):
    """A tqdm bar on a terminal, log lines elsewhere, nothing when `enabled` is False. Use like tqdm."""
    if not enabled:
        return _Silent(iterable)
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LogProgress(iterable, total=total, desc=desc, unit=unit)
