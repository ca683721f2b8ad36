"""Where emloc's files live and how they are written: the one module that knows the repository, the config and
sweep folders, and the cache root, and the one atomic writer of files and folders.

* `REPO`, `conf_dir()`, `sweeps_dir()` — the checkout's folders (`$EMLOC_CONF_DIR` / `$EMLOC_SWEEPS_DIR` override).
* `cache_root()` — `$EMLOC_CACHE`, default `~/.cache/emloc` (converted models, dataset files).
* `atomic_write(path, data)` — a file written to a temporary name in the same folder, flushed and renamed over
  `path`: a reader sees the old or the new file, never a torn one.
* `atomic_dir(target)` — a context manager yielding an empty temporary folder next to `target`, swapped into place
  when the block succeeds (an existing `target` is moved aside first, then removed) and discarded when it fails.
* `exclusive(lock_path)` — an inter-process lock file (`filelock`: flock, which shared file systems honour), so
  that one process builds what several need while the others wait; yields the seconds spent waiting.

Standard library and `filelock` only; it deliberately knows nothing about what the files contain.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, SoftFileLock, Timeout

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # emloc/utils/storage.py -> the checkout


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


@contextmanager
def exclusive(lock_path: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[float]:
    """Hold the lock file `lock_path` (no timeout: a holder that dies releases it); `on_wait()` is called once if
    another process holds it. Yields the seconds spent waiting. A file system without `flock` (some Lustre mounts)
    falls back to a lock file's existence (`SoftFileLock`, `<lock_path>.soft`)."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock, start = FileLock(str(path)), time.monotonic()
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
    except NotImplementedError:
        log.warning("no flock on %s: falling back to a soft lock file (stale if its holder is killed)", path.parent)
        lock = SoftFileLock(f"{path}.soft")
        lock.acquire()
    try:
        yield time.monotonic() - start
    finally:
        lock.release()
