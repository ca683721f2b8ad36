"""emloc — training-free many-shot (multimodal) in-context learning with compressed task memories (EMLoC).

Public API (imported lazily, so `emloc.experiment.report` and `emloc.data` stay free of torch):

>>> from emloc import load, EMLoC, answer
>>> adapter = load("packaged:smollm2-135m-instruct")
>>> memory = EMLoC(chunk_size=8, js_threshold=0.005).build(adapter, demos, instruction)
>>> answer(adapter, memory, adapter.renderer(instruction), queries)

Every method class (the `_target_` of a `conf/method/<option>.yaml`) is exported under its class name.

The package's folders are its layers, each importing only those below it (checked by `make lint`):
`integrations` > `experiment` > `analysis` > `methods` | `models` > `engine` > `data` > `utils`.
"""

from importlib import import_module

_API = {
    "load": "emloc.models.loading", "TaskMemory": "emloc.engine.memory", "memory_key": "emloc.engine.memory",
    "generate": "emloc.engine.generate", "loglikelihood": "emloc.engine.generate", "answer": "emloc.engine.generate",
    "respond": "emloc.engine.generate", "Example": "emloc.data.base", "Task": "emloc.data.base",
    "js_divergence": "emloc.engine.divergence",
}  # fmt: skip


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    if name[:1].isupper():  # a method class: found from conf/method/*.yaml (emloc.methods.registry)
        found = import_module("emloc.methods").classes().get(name)
        if found is not None:
            return found
    raise AttributeError(f"module 'emloc' has no attribute {name!r}")
