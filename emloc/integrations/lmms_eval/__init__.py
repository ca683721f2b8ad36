"""lmms-eval (0.7.x) plugin: the `emloc` model and a bridge serving any emloc task to lmms-eval.

* `model.EMLoCLMM` — `python -m lmms_eval --model emloc --model_args source=...,method=...` builds one task
  memory per task from the task's few-shot split and answers `generate_until` and `loglikelihood` requests
  against it (arguments: see `model`'s docstring).
* `task.EmlocTask` — `class: !function emloc.integrations.lmms_eval.task.EmlocTask` in a task YAML serves a
  `conf/task/` option (composed as `run.py` composes it) as an lmms-eval task whose queries, demonstration pool
  and scores are the runner's (`lmms_tasks/` holds the local and the paper tasks).

The model is registered through this package's `lmms_eval.models` entry point (`manifests`). Nothing here
imports lmms-eval at import time: `manifests()` imports it when lmms-eval calls it, and `EMLoCLMM` / `EmlocTask`
are resolved lazily (`emloc.integrations.lmms_eval.EMLoCLMM` imports `model`, which needs lmms-eval).
"""

from __future__ import annotations

from importlib import import_module

MODEL_ID = "emloc"
_LAZY = {"EMLoCLMM": "model", "EmlocTask": "task"}

__all__ = ["MODEL_ID", "EMLoCLMM", "EmlocTask", "manifests"]


def manifests():
    """Payload of the `lmms_eval.models` entry point: the `emloc` model (a simple, non-chat lmms-eval model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.model.EMLoCLMM")]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
