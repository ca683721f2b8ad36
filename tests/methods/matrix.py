"""The shared method matrix (kvpress' `default_presses` idea): every `conf/method/<option>.yaml`, composed and
instantiated as the runner would, each with an easy and a hard parameter set. A new method (one class + one YAML)
is picked up here and gets the invariant tests of `test_methods.py` for free.

* easy — the class's declared `lossless` parameters (the method must then reproduce the full context exactly);
  None when the method never does (zero-shot).
* hard — the YAML's own parameters with aggressive pruning for a tiny random model (a JS bound or keep ratio that
  really prunes), small chunks so the chunk carry is exercised.
"""

from __future__ import annotations

from hydra.utils import instantiate

from emloc.utils.storage import conf_dir

HARD = {
    "js_threshold": 0.05,
    "keep_ratio": 0.4,
    "delta": 0.05,
    "tuning_inputs": 4,
    "block_tokens": 64,
}  # keys a method may have; applied where the class has them


def options() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))


def build(option: str, extra: dict | None = None, chunk_size: int | None = 2):
    """The method of `option` with `extra` parameters (unknown keys are ignored) and `chunk_size` (where it has one)."""
    from dataclasses import fields

    from tests.conftest import compose

    cfg = compose([f"method={option}"])
    cls = instantiate(cfg.method).__class__
    names = {f.name for f in fields(cls) if f.init}
    params = {**({"chunk_size": chunk_size} if "chunk_size" in names and option != "zero_shot" else {}),
              **{k: v for k, v in (extra or {}).items() if k in names}, "show_progress": False}  # fmt: skip
    return instantiate(cfg.method, **params)


def easy(option: str):
    """The method with its lossless parameters, or None when it has none."""
    method = build(option)
    return None if method.lossless is None else build(option, method.lossless)


def hard(option: str):
    return build(option, HARD)


def probes_for(method) -> list:
    """The held-out tuning inputs a method asks for (`heldout_count`), disjoint from the test demonstrations."""
    from tests.conftest import make_demos

    return make_demos(method.heldout_count(), offset=200) if method.heldout_count() else []
