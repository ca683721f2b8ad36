"""The memory cache shared by concurrent runs: build-and-save is locked per memory key, so a second process with the
same key waits, then loads what the first built (and logs that it did); partial memories stay per key."""

import logging
import shutil
import threading
import time

import pytest
from filelock import FileLock

from emloc.engine.compress import FullContext
from emloc.experiment.cache import build_memory
from emloc.utils.storage import exclusive
from tests.conftest import make_demos


@pytest.fixture(scope="module")
def built(llama, tmp_path_factory):
    """A memory built once into a first cache: (method, demos, cache dir, key)."""
    method, demos = FullContext(chunk_size=2, show_progress=False), make_demos(4)
    cache = tmp_path_factory.mktemp("cache_a")
    _, book = build_memory(method, demos, "Name the colour.", llama, cache)
    return method, demos, cache, book["memory_key"]


def test_a_second_process_waits_for_the_builder_then_loads(built, llama, tmp_path, caplog, monkeypatch):
    method, demos, first, key = built
    cache = tmp_path / "shared"
    holder = FileLock(str(cache / f"{key}.lock"))  # "another process" building this key (flock: per open file)
    cache.mkdir()
    holder.acquire()
    monkeypatch.setattr(FullContext, "build", lambda *a, **k: pytest.fail("the waiting process compressed again"))
    out = {}
    caplog.set_level(logging.INFO, logger="emloc.experiment.cache")
    waiter = threading.Thread(target=lambda: out.update(zip(("memory", "book"), build_memory(
        method, demos, "Name the colour.", llama, cache))))  # fmt: skip
    waiter.start()
    deadline = time.monotonic() + 30
    while "being built by another process" not in caplog.text:
        assert time.monotonic() < deadline, "the second process did not wait for the lock"
        time.sleep(0.05)
    time.sleep(0.3)
    shutil.copytree(first / key, cache / key)  # the builder's atomic save ...
    holder.release()  # ... then it lets go
    waiter.join(30)
    assert not waiter.is_alive()
    book = out["book"]
    assert book["memory_cached"] and book["memory_wait_seconds"] >= 0.3 and book["resumed_chunks"] == 0
    assert f"for memory {key}, built by another process, and loaded it" in caplog.text
    assert out["memory"].memory_tokens > 0


def test_without_a_finished_memory_the_waiter_builds_it_itself(built, llama, tmp_path):
    """The holder died without saving (lock released by the OS): the waiter compresses, nothing is lost."""
    method, demos, _, key = built
    with exclusive(tmp_path / f"{key}.lock") as waited:
        assert waited < 1
    memory, book = build_memory(method, demos, "Name the colour.", llama, tmp_path)
    assert not book["memory_cached"] and (tmp_path / key).is_dir() and not (tmp_path / f"{key}.partial").exists()
    assert len(memory.chunks) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_memory_is_moved_aside_and_rebuilt(damage, llama, tmp_path, caplog):
    """A truncated copy or flipped bytes in `memory.safetensors` (disk full, an interrupted copy between machines):
    detected by the recorded checksum, moved aside with a warning naming it, rebuilt to the same memory."""
    from emloc.methods.emloc import EMLoC

    method, demos = EMLoC(chunk_size=2, js_threshold=0.05, show_progress=False), make_demos(4)
    clean, book = build_memory(method, demos, "Name the colour.", llama, tmp_path)
    entry = tmp_path / book["memory_key"]
    tensors = entry / "memory.safetensors"
    data = tensors.read_bytes()
    if damage == "truncate":
        tensors.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte of a tensor changed: only the checksum sees it
        tensors.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    caplog.set_level(logging.WARNING, logger="emloc.experiment.cache")
    again, book2 = build_memory(method, demos, "Name the colour.", llama, tmp_path)
    assert book2["memory_cached"] is False and again.fingerprint() == clean.fingerprint()
    [aside] = list(tmp_path.glob(f"{book['memory_key']}.corrupt-*"))
    assert str(aside) in caplog.text and "damaged task memory" in caplog.text
    _, book3 = build_memory(method, demos, "Name the colour.", llama, tmp_path)  # the rebuilt entry is clean
    assert book3["memory_cached"] is True
