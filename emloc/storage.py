"""Where emloc's files live and how they are written: the one module that knows the repository, the config and
sweep folders, and the cache root, and the one atomic writer of files and folders.

* `REPO`, `conf_dir()`, `sweeps_dir()` — the checkout's folders (`$EMLOC_CONF_DIR` / `$EMLOC_SWEEPS_DIR` override).
* `cache_root()` — `$EMLOC_CACHE`, default `~/.cache/emloc` (converted models, dataset files).
* `atomic_write(path, data)` — a file written to a temporary name in the same folder, flushed and renamed over
  `path`: a reader sees the old or the new file, never a torn one.
* `atomic_dir(target)` — a context manager yielding an empty temporary folder next to `target`, swapped into place
  when the block succeeds (an existing `target` is moved aside first, then removed) and discarded when it fails.

Standard library only; it deliberately knows nothing about what the files contain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def conf_dir() -> Path:
    """The Hydra `conf/` of the checkout (`$EMLOC_CONF_DIR` overrides)."""
    return Path(os.environ.get("EMLOC_CONF_DIR") or REPO / "conf").expanduser().resolve()


def sweeps_dir() -> Path:
    """The sweep files (`$EMLOC_SWEEPS_DIR` overrides; default: the checkout's `sweeps/`)."""
    return Path(os.environ.get("EMLOC_SWEEPS_DIR") or REPO / "sweeps").expanduser().resolve()


def cache_root() -> Path:
    """Machine-wide cache of converted models and dataset files: `$EMLOC_CACHE`, default `~/.cache/emloc`."""
    return Path(os.environ.get("EMLOC_CACHE") or Path.home() / ".cache" / "emloc").expanduser()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_dir(target: str | os.PathLike, mode: int = 0o755) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `target` (made with `mode`: caches may be shared)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(mode)
    old = tmp.with_name(tmp.name + "-old")
    try:
        yield tmp
        if target.exists():  # os.replace cannot overwrite a non-empty folder: move the old one aside first
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
