"""Progress that reads well in a terminal and in a SLURM log: `progress(...)` is `tqdm` when stderr is a terminal
(or a notebook), and otherwise a drop-in that writes a plain log line at most every `interval` seconds (and at the
end) instead of carriage-return bar updates.

    from emloc.utils.progress import progress as tqdm   # a one-line swap for `from tqdm.auto import tqdm`

The fallback supports what the package uses of tqdm — `update(n)`, `close()`, iteration, `total`/`initial`/`desc`/
`disable` — and nothing else (no nested bars, no postfix). Standard library and tqdm only, so the engine may
import it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("emloc.utils.progress")
INTERVAL_S = float(os.environ.get("EMLOC_PROGRESS_INTERVAL", 60))


def interactive() -> bool:
    """A terminal or a Jupyter kernel: where a live bar renders."""
    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class LogProgress:
    """tqdm's counting without the bar: `desc: n/total (p%), elapsed, eta` as a log line every `interval` s."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
                 disable: bool = False, initial: int = 0, interval: float | None = None, **_: Any) -> None:  # fmt: skip
        self.iterable, self.desc, self.disable = iterable, desc or "progress", disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.initial = total, initial, initial
        self.interval = INTERVAL_S if interval is None else interval
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.interval:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        done = self.n - self.initial
        text = f"{self.desc}: {self.n}" + (
            f"/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)" if self.total else ""
        )
        text += f", {elapsed:.0f} s"
        if self.total and done > 0 and self.n < self.total:
            text += f", eta {elapsed / done * (self.total - self.n):.0f} s"
        return text

    def close(self) -> None:
        if not self.closed and not self.disable and self.n > self.initial:
            log.info("%s (done)", self.line())
        self.closed = True

    def set_description(self, desc: str) -> None:
        self.desc = desc


def progress(iterable: Iterable | None = None, *args: Any, **kwargs: Any):
    """`tqdm.auto.tqdm(...)` in a terminal or notebook, else a `LogProgress` (same arguments)."""
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, *args, **kwargs)
    return LogProgress(iterable, *args, **kwargs)
