"""The task-memory cache: a memory is built once per key (`emloc.engine.memory.memory_key`) and reused by every run and
integration that asks for the same one (the runner, the lmms-eval model).

`build_memory` loads `<cache>/<key>/` when it exists; otherwise it builds the memory under a per-key file lock
(`<key>.lock`): a second process with the same key (array tasks evaluating one memory several ways) waits, then
loads the finished memory instead of building it again. Progress is saved to `<key>.partial/` after every chunk,
so an interrupted build (a requeued job, or a waiter whose builder died) resumes where it stopped. Saves are
atomic (`TaskMemory.save`) and carry a checksum: a damaged entry (a truncated copy, a full disk) is detected on
load, moved aside as `<key>.corrupt-<time>-<pid>` with a warning naming it, and rebuilt. It deliberately decides
nothing about which memory a run needs: the caller passes the method, demonstrations and held-out probes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from emloc.data.base import Example
from emloc.engine.compress import Compressor
from emloc.engine.memory import CorruptMemoryError, TaskMemory, memory_key
from emloc.utils.storage import exclusive

log = logging.getLogger(__name__)


def build_memory(method: Compressor, demos: list[Example], instruction: str | None, adapter, cache_dir: Path,
                 checkpoint: bool = True, on_chunk=None, probes: list[Example] = ()) -> tuple[TaskMemory, dict[str, Any]]:  # fmt: skip
    """The task memory from the cache, or built (resuming from a partial one) and cached.

    Build-and-save holds a file lock per memory key (`<key>.lock` in the cache): a second process with the same
    key (array tasks that evaluate one memory several ways) waits, then loads the finished memory instead of
    building it again; if the builder died, the waiter resumes its partial memory. `on_chunk(memory)` is called
    after every newly compressed chunk (W&B history). Returns the memory and its bookkeeping: compression seconds
    (as recorded when it was built), whether it came from the cache, how many chunks an earlier, interrupted
    attempt had already finished, seconds spent waiting for another process, and its cache key.
    """
    expect = adapter.signature()
    ids = [d.uid for d in demos] + [f"probe:{q.uid}" for q in probes]  # held-out probes shape the memory too
    key = memory_key(expect, adapter.device.type, str(adapter.dtype), method.identity(), ids, instruction)
    final, partial = cache_dir / key, cache_dir / f"{key}.partial"
    book = {"memory_cached": True, "resumed_chunks": 0, "memory_wait_seconds": 0.0, "memory_key": key}
    if final.exists():  # finished memories are never rewritten: no lock needed to read one
        log.info("memory cache hit: %s", final)
        with contextlib.suppress(CorruptMemoryError):  # damaged: set aside and rebuilt under the lock below
            return _load(final, expect, adapter, book)
    lock = cache_dir / f"{key}.lock"
    with exclusive(
        lock, lambda: log.info("memory %s is being built by another process (%s): waiting", key, lock)
    ) as waited:
        book["memory_wait_seconds"] = waited
        if final.exists():
            try:
                memory, book = _load(final, expect, adapter, book)
                log.info("waited %.1f s for memory %s, built by another process, and loaded it", waited, key)
                return memory, book
            except CorruptMemoryError as err:
                _set_aside(final, err)
        resume = None
        if partial.exists():
            try:
                resume = TaskMemory.load(partial, expect=expect, device=adapter.device, dtype=adapter.dtype)
            except CorruptMemoryError as err:
                _set_aside(partial, err)
        book["memory_cached"], book["resumed_chunks"] = False, len(resume.chunks) if resume is not None else 0
        if resume is not None:
            log.info("resuming compression after %d finished chunks (%s)", len(resume.chunks), partial)

        def after_chunk(m: TaskMemory) -> None:
            if checkpoint:
                m.save(partial)
            if on_chunk is not None:
                on_chunk(m)

        memory = method.build(adapter, demos, instruction, resume=resume, on_chunk=after_chunk, probes=list(probes))
        memory.save(final)
        shutil.rmtree(partial, ignore_errors=True)
    return memory, {"compress_seconds": sum(c.seconds for c in memory.chunks), **book}


def _set_aside(entry: Path, err: CorruptMemoryError) -> None:
    """Move a damaged cache entry out of the way (kept for inspection, never loaded again) and say so."""
    aside = entry.with_name(f"{entry.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    entry.rename(aside)
    log.warning("damaged task memory in the cache, moved to %s and rebuilt: %s", aside, err)


def _load(final: Path, expect: dict, adapter, book: dict[str, Any]) -> tuple[TaskMemory, dict[str, Any]]:
    memory = TaskMemory.load(final, expect=expect, device=adapter.device, dtype=adapter.dtype)
    return memory, {"compress_seconds": sum(c.seconds for c in memory.chunks), **book}
