"""Typed configs: the structured-config schemas of the `task`, `eval`, `backend`, `logger`, `model` and `paths`
groups, their value rules, and `ConfigError`, the one-line error of a bad config or missing data.

* Schemas — dataclasses registered in Hydra's ConfigStore as `schema/<group>` (package `<group>`) and listed first in
  `conf/config.yaml`'s defaults, so every group file is merged INTO its schema: an unknown key (`num_shot:` in a
  copied task file) or a value of the wrong type fails at composition, naming the key and the file (`emloc.experiment.errors`
  turns Hydra's message into one line). A key may still be added on purpose with `+group.key=value`.
* `check(cfg)` — the rules a type cannot express (`eval.max_new_tokens >= 1`, a known dtype, ...), each raising a
  `ConfigError` that names the key, the value and a fix. The runner calls it before planning (in a sweep, a point
  that breaks one fails its own job).
* `as_config_error(err)` — a planning failure (a method's bad value, missing data) as a `ConfigError`, its key and
  value read from the message, the fix pointing at the option file to edit.
* `ConfigError` — a `ValueError` whose message is one line: `key=value: problem. Fix: ...`.

The `method` group is deliberately not typed here: its parameters are checked by the method class itself (its
dataclass, `run_signature`). Nor are the root keys (`matched_retention`, `local`, ...), which sweeps and
machine files add freely. Imports OmegaConf and Hydra's ConfigStore only: no torch, no engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from emloc.utils.errors import ConfigError
from emloc.utils.storage import conf_dir

__all__ = ["ConfigError", "as_config_error", "check", "compose", "instantiate_group", "run_signature"]

DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # emloc.models.loading.DTYPES, without torch
DEVICE_KINDS = ("cpu", "cuda", "npu", "mps")
ATTENTION = ("sdpa", "eager")  # emloc.engine.attention.BASES: the implementations a task memory plugs into
LOGGER_MODES = ("offline", "online", "disabled")


# --- schemas --------------------------------------------------------------------------------------------------
@dataclass
class ModelConf:
    source: str = MISSING  # packaged:<name>, tiny:<family>, a hub id or a local folder
    seed: int = 0  # seed of the tiny random models
    min_pixels: int | None = None  # Qwen-VL image processor bounds (pixels per image)
    max_pixels: int | None = None
    revision: str | None = None  # hub revision (commit, tag or branch) of a hub model; null = the default branch


@dataclass
class PaperConf:  # a paper task's reference settings (conf/experiment/qwen2vl7b_*.yaml read them)
    chunk_size: int = MISSING
    pixels: int = MISSING
    max_new_tokens: int = MISSING
    batch_size: int = MISSING


@dataclass
class HeldOutConf:  # inputs reserved from the task before demonstrations are drawn (emloc.data.base.Split)
    fidelity: int = 64  # held-out JS to the full context is measured on these (class-balanced)
    tuning: int = 64  # what a method may look at to choose its memory (EMLoC-E2E's probes, a bound's size)
    certification: int = 64  # what certifies a bound the tuning set chose; nothing else ever sees them


@dataclass
class TaskConf:
    name: str = MISSING
    loader: dict[str, Any] = field(default_factory=dict)  # `_target_` + the Task class' own arguments
    num_shots: int = MISSING
    num_queries: int | None = None  # null: every query
    demo_seed: int = 0
    query_seed: int = 1234
    heldout: HeldOutConf = field(default_factory=HeldOutConf)
    paper: PaperConf | None = None


@dataclass
class EvalConf:
    batch_size: int = 8
    max_new_tokens: int = 32
    checkpoint_chunks: bool = True
    fidelity: bool = True  # measure held-out JS on the task's fidelity set (task.heldout.fidelity inputs)
    fidelity_layers: bool = False
    drift: bool = True  # held-out JS after every chunk of a chunk-wise memory (two passes per chunk)


@dataclass
class BackendConf:
    device: str = "cpu"
    dtype: str = "float32"
    attn: str = "sdpa"


@dataclass
class LoggerConf:
    mode: str = "offline"
    project: str = "emloc"
    entity: str | None = None
    log_memory: bool = False


@dataclass
class PathsConf:
    root_dir: str = "."
    data_dir: str = MISSING
    output_dir: str = MISSING
    memory_cache_dir: str = MISSING


SCHEMAS: dict[str, type] = {"model": ModelConf, "task": TaskConf, "eval": EvalConf, "backend": BackendConf,
                            "logger": LoggerConf, "paths": PathsConf}  # fmt: skip


def register() -> None:
    """Store the schemas as `schema/<group>` (idempotent; importing this module does it)."""
    cs = ConfigStore.instance()
    for group, node in SCHEMAS.items():
        cs.store(group="schema", name=group, node=node, package=group, provider="emloc")


register()


def keys(group: str) -> list[str]:
    """The keys a group's schema declares."""
    return [f.name for f in fields(SCHEMAS[group])]


# --- value rules ----------------------------------------------------------------------------------------------
_ABSENT = object()  # a config composed without a schema (an older config dir) may lack a key: nothing to check


def _int_at_least(cfg: DictConfig, key: str, low: int, fix: str, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT or (optional and value is None):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        need = f"an integer >= {low}" + (" or null" if optional else "")
        raise ConfigError(key, value, f"must be {need}", fix)


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...], what: str, kind=lambda v: v) -> None:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is not _ABSENT and (not isinstance(value, str) or kind(value) not in allowed):
        raise ConfigError(key, value, f"unknown {what}", f"use one of {', '.join(allowed)}, e.g. {key}={allowed[0]}")


def _device_kind(device: str) -> str:
    kind, _, index = device.partition(":")
    return kind if index == "" or index.isdigit() else f"{device} (bad index)"


def check(cfg: DictConfig) -> None:
    """Value rules of the typed groups (types and keys are enforced at composition); raises `ConfigError`."""
    _int_at_least(cfg, "eval.batch_size", 1, "eval.batch_size=8 (queries answered per forward)")
    _int_at_least(cfg, "eval.max_new_tokens", 1, "eval.max_new_tokens=32 (at least one token per answer)")
    for name in ("fidelity", "tuning", "certification"):
        _int_at_least(cfg, f"task.heldout.{name}", 0, f"task.heldout.{name}=0 reserves no {name} inputs")
    _int_at_least(cfg, "task.num_shots", 0, "task.num_shots=16 (0 only with method=zero_shot)")
    _int_at_least(cfg, "task.num_queries", 1, "task.num_queries=null evaluates every query", optional=True)
    for key in ("task.demo_seed", "task.query_seed"):
        _int_at_least(cfg, key, 0, f"{key}=0")
    _one_of(cfg, "backend.dtype", DTYPES, "dtype")
    _one_of(cfg, "backend.device", DEVICE_KINDS, "device kind (cpu, cuda[:i], npu[:i] or mps)", _device_kind)
    _one_of(cfg, "backend.attn", ATTENTION, "attention implementation (a task memory needs sdpa or eager)")
    _one_of(cfg, "logger.mode", LOGGER_MODES, "W&B mode (or pick logger=wandb_offline|wandb|none)")
    for key in ("model.min_pixels", "model.max_pixels"):
        _int_at_least(cfg, key, 1, f"{key}=null keeps the processor's default", optional=True)
    revision, source = OmegaConf.select(cfg, "model.revision"), str(OmegaConf.select(cfg, "model.source"))
    if revision is not None and source.startswith(("tiny:", "packaged:")):
        raise ConfigError("model.revision", revision, f"pins hub checkpoints only, not {source}", "model.revision=null")
    low, high = OmegaConf.select(cfg, "model.min_pixels"), OmegaConf.select(cfg, "model.max_pixels")
    if low is not None and high is not None and low > high:
        raise ConfigError("model.min_pixels", low, f"exceeds model.max_pixels={high}", "make min_pixels <= max_pixels")


# --- turning a planning failure into a ConfigError ------------------------------------------------------------
_NAMED = re.compile(r"(?:^|invalid `(?P<group>[\w.]+)` config: )(?P<key>[A-Za-z_][\w.]*)(?:=(?P<v1>\S+)| must)")
_GOT = re.compile(r"got (?P<value>.+?)\)?$")
_UNKNOWN = re.compile(r"\w+\.__init__\(\) got an unexpected keyword argument '(?P<key>\w+)'")  # a method parameter


def as_config_error(err: BaseException, cfg: DictConfig | None = None, choices: dict | None = None) -> ConfigError:
    """A planning failure (bad value, missing data) as a `ConfigError`. The key and value are read from the message
    where it names them (`<key> must ..., got <value>`, `<key>=<value> ...`); the fix points at the file to edit."""
    cause = err
    while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ConfigError):
        return cause
    text = " ".join(str(err).split()) or type(err).__name__
    key = value = None
    if match := _NAMED.search(text):
        key, group = match["key"], match["group"]
        if group and not key.startswith(f"{group.split('.')[0]}."):
            key = f"{group}.{key}"
        elif cfg is not None and "." not in key and OmegaConf.select(cfg, f"task.{key}") is not None:
            key = f"task.{key}"  # the task's split names its own fields
        got = _GOT.search(text)
        value = match["v1"] or (got["value"] if got else OmegaConf.select(cfg, key) if cfg is not None else None)
    elif unknown := _UNKNOWN.search(text):  # the method's YAML names a parameter its class does not have
        key = f"method.{unknown['key']}"
        value = OmegaConf.select(cfg, key) if cfg is not None else None
    group = key.split(".")[0] if key else "task"  # no key named: the task's data is missing or unreadable
    option = (choices or {}).get(group)
    where = f"conf/{group}/{option}.yaml" if option else f"the {group} YAML file"
    if key:
        fix = f"override {key}=<valid value> on the command line or edit it in {where}"
    else:
        fix = f"check the data paths in {where} (paths.data_dir=... or EMLOC_DATA moves the data root)"
    problem = re.sub(r"^invalid `[\w.]+` config: ", "", text)
    return ConfigError(key, value, problem, fix)


# --- composing and naming runs -----------------------------------------------------------------------------------
def compose(
    overrides: list[str], config_dir: str | Path | None = None, config_name: str = "config", hydra: bool = False
) -> DictConfig:
    """The primary config composed as `run.py` composes it, plus `overrides`, for callers without `@hydra.main`
    (tests, the lmms-eval model, sweep planning). `hydra=True` keeps the `hydra` node (e.g. `runtime.choices`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    directory = Path(config_dir).expanduser().resolve() if config_dir else conf_dir()
    if not (directory / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(
            f"no emloc Hydra config {config_name}.yaml in {directory} "
            "(set EMLOC_CONF_DIR, or pass config_dir: lmms-eval tasks take metadata.emloc.config_dir)"
        )
    saved = Singleton.get_state() if GlobalHydra.instance().is_initialized() else None  # inside a running job
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:  # composing inside a running Hydra job must not disturb it
            Singleton.set_state(saved)


def instantiate_group(group: str, node: Any) -> Any:
    """`node` instantiated; an error names its config group and the root cause."""
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except Exception as err:  # hydra wraps the dataclass' ValueError; surface the root cause with the group
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        raise ValueError(f"invalid `{group}` config: {root}") from err


def run_signature(cfg: DictConfig) -> tuple[Any, str]:
    """The method (validated) and the run's signature: what `runs/<signature>/` is named. Reads no data, loads no
    model, so a sweep's expected runs can be listed anywhere (`emloc.experiment.sweeps`)."""
    from emloc.experiment.tracking import signature

    check(cfg)  # value rules of the typed groups (emloc.experiment.config): named before anything is queued
    method = instantiate_group("method", cfg.method)
    semantic = OmegaConf.to_container(cfg, resolve=True)
    semantic["task"]["num_shots"] = cfg.task.num_shots if method.uses_demos else 0  # zero-shot: one run, any shots
    # the method by its contract name, not its module path: moving or renaming a module keeps finished runs
    semantic["method"]["_target_"] = f"option:{method.option}"
    if method.revision is not None:  # a changed search invalidates the runs and memories it made
        semantic["method"]["revision"] = method.revision
    if "keep_ratio" not in method.params():  # `match_retention_of` applies to fixed-ratio arms only
        semantic.pop("match_retention_of", None)
    return method, signature(semantic)
