"""`ConfigError`: a user error — a bad config value, missing or unreadable data, a model or device this machine
cannot provide — as ONE line naming the key (or file, or model), the value and the fix.

Raised wherever the error is found: the experiment layer's checks, and the engine, models and data at run time (no
CUDA device, no `torch_npu`, a model not cached offline, an unreadable image). `emloc.experiment.errors` prints it
and exits 2. Standard library only.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad config value or missing data, as one line naming the key, the value and the fix."""

    def __init__(self, key: str | None, value: Any, problem: str, fix: str | None = None) -> None:
        self.key, self.value, self.problem, self.fix = key, value, problem, fix
        head = f"{key}={_show(value)}: " if key else ""
        super().__init__(" ".join(f"{head}{problem}".split()) + (f". Fix: {' '.join(fix.split())}" if fix else ""))


def _show(value: Any) -> str:
    return "null" if value is None else str(value) if isinstance(value, (int, float, str)) else repr(value)
