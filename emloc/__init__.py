"""emloc — training-free many-shot (multimodal) in-context learning with compressed task memories (EMLoC).

Public API (imported lazily, so `emloc.report` and `emloc.data` stay free of torch):

>>> from emloc import load, EMLoC, answer
>>> adapter = load("packaged:smollm2-135m-instruct")
>>> memory = EMLoC(chunk_size=8, js_threshold=0.005).build(adapter, demos, instruction)
>>> answer(adapter, memory, adapter.renderer(instruction), queries)

Every method class (`Compressor` subclass) of the method modules is exported under its class name.
"""

from importlib import import_module

_API = {
    "load": "emloc.models.loading", "TaskMemory": "emloc.memory", "memory_key": "emloc.memory",
    "generate": "emloc.generate", "loglikelihood": "emloc.generate", "answer": "emloc.generate",
    "respond": "emloc.generate", "Example": "emloc.data.base", "Task": "emloc.data.base",
    "js_divergence": "emloc.divergence",
}  # fmt: skip
METHOD_MODULES = (
    "emloc.compress",
    "emloc.baselines",
    "emloc.kvzip",
    "emloc.expected_attention",
    "emloc.e2e",
)  # where the method classes live


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    for module in METHOD_MODULES if name[:1].isupper() else ():  # class names; submodules import as usual
        obj = getattr(import_module(module), name, None)
        if isinstance(obj, type) and obj.__module__ == module:
            return obj
    raise AttributeError(f"module 'emloc' has no attribute {name!r}")
