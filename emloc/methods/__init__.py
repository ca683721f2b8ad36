"""The methods: what a task memory keeps. One module per method family, each a `Compressor` subclass with one YAML
per option in `conf/method/` (`_target_` names the class).

The registry is read from `conf/method/*.yaml`, not kept by hand: `registry()` maps every option to the class its
YAML targets and fails loudly when the contract is broken (a class whose `option` has no YAML, or whose option's
YAML targets another class). `classes()` is every method class, for `from emloc import <Class>`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import yaml

from emloc.utils.storage import conf_dir


class ContractError(TypeError):
    """A method class and the config tree disagree (`conf/method/<option>.yaml` missing or targeting another class)."""


def _target(folder, option: str, seen: tuple[str, ...] = ()) -> str | None:
    """The `_target_` of `<folder>/<option>.yaml`, or of the option its defaults list extends (a variant)."""
    node = yaml.safe_load((folder / f"{option}.yaml").read_text()) or {}
    if not isinstance(node, dict):
        return None
    if node.get("_target_"):
        return node["_target_"]
    for parent in node.get("defaults", []):
        if (
            isinstance(parent, str)
            and parent != "_self_"
            and parent not in seen
            and (folder / f"{parent}.yaml").is_file()
        ):
            return _target(folder, parent, (*seen, option))
    return None


def _resolve(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


@cache
def registry() -> dict[str, type]:
    """option -> method class, for every `conf/method/<option>.yaml` (a variant's class is that of the option its
    defaults list extends). Raises `ContractError` when a method class defined in emloc has an `option` without a
    YAML, or whose YAML targets another class."""
    folder = conf_dir() / "method"
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        option, target = path.stem, _target(folder, path.stem)
        if not target:
            raise ContractError(
                f"{path}: no `_target_` (the method class it builds), nor a defaults entry that has one"
            )
        out[option] = _resolve(target)
    for cls in _defined():
        own = cls.option
        if own not in out:
            raise ContractError(f"{cls.__module__}.{cls.__qualname__}.option={own!r} has no {folder}/{own}.yaml")
        if out[own] is not cls:
            raise ContractError(
                f"{cls.__module__}.{cls.__qualname__}.option={own!r}, but {folder}/{own}.yaml targets "
                f"{out[own].__module__}.{out[own].__qualname__}"
            )
    return out


def _defined() -> list[type]:
    """Every concrete method class defined in emloc (the engine's and those of each `emloc.methods` module)."""
    from emloc.engine.compress import Compressor

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found, todo = [], [Compressor]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if "option" in sub.__dict__ and sub.__module__.startswith("emloc."):
                found.append(sub)
    return found


def classes() -> dict[str, type]:
    """Class name -> class, for every method class of the registry."""
    return {cls.__name__: cls for cls in registry().values()}
