"""emloc — training-free many-shot (multimodal) in-context learning with compressed task memories (EMLoC).

Public API (imported lazily, so `emloc.report` and `emloc.data` stay free of torch):

>>> from emloc import load, EMLoC, answer
>>> adapter = load("packaged:smollm2-135m-instruct")
>>> memory = EMLoC(chunk_size=8, js_threshold=0.005).build(adapter, demos, instruction)
>>> answer(adapter, memory, adapter.renderer(instruction), queries)
"""

from importlib import import_module

_API = {
    "load": "emloc.models.loading",
    "TaskMemory": "emloc.memory",
    "EMLoC": "emloc.compress",
    "FullContext": "emloc.compress",
    "ZeroShot": "emloc.compress",
    "Compressor": "emloc.compress",
    "SnapKV": "emloc.baselines",
    "H2O": "emloc.baselines",
    "PyramidKV": "emloc.baselines",
    "StreamingLLM": "emloc.baselines",
    "RandomKeep": "emloc.baselines",
    "generate": "emloc.generate",
    "loglikelihood": "emloc.generate",
    "answer": "emloc.generate",
    "Example": "emloc.data.base",
    "Task": "emloc.data.base",
    "js_divergence": "emloc.divergence",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'emloc' has no attribute {name!r}")
