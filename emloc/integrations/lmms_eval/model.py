"""`EMLoCLMM`: EMLoC (and its baselines) as an lmms-eval simple model (`--model emloc`).

The first request of a task builds that task's memory once, from the task's few-shot split
(`lm.task_dict[task][fewshot_split]`, which the evaluator hands every model); every `generate_until` and
`loglikelihood` request of the task is then answered against it. Demonstrations and queries are rendered from
the task's own `doc_to_text` / `doc_to_target` / `doc_to_visual` (reached through the bound `doc_to_visual` of
each request): lmms-eval's `ctx` string and its text-only few-shot machinery are not used. The system turn is
`metadata.emloc.instruction`, else the task's `description`.

`--model_args` (comma-separated key=value):

| key | default | meaning |
|---|---|---|
| `source` | `tiny:qwen2_vl` | model for `emloc.models.loading.load` (`packaged:smollm2-135m-instruct`, a hub id, a folder) |
| `method` | `emloc_paper` | any `conf/method/<option>.yaml` (composed as the runner composes it: `emloc_paper`, `emloc`, `full_context` (alias `mloc`), `zero_shot`, the baselines ...), or `rices` |
| `num_fewshot` | `metadata.emloc.num_shots`, else 20 | demonstrations (unused by `zero_shot`; `rices` retrieves from the whole split) |
| `demo_seed` | `metadata.emloc.demo_seed`, else 42 | demos = `random.Random(demo_seed).sample(range(len(split)), num_fewshot)` |
| `demo_order` | `metadata.emloc.demo_order`, else `sample` | `sample` (above) or `first` (the first k docs, the reference's ImageNet rule) |
| `fewshot_split` | the task's `fewshot_split` | split holding the demonstrations (never the evaluated split) |
| `chunk_size` | `metadata.emloc.chunk_size`, else the method's YAML | demos per chunk (`none`: one chunk) |
| any parameter of the method | its YAML | e.g. `js_threshold` (alias `delta`), `keep_ratios` (`/`-separated: commas separate model args), `warm_search`, `keep_ratio` |
| `rices_k`, `rices_embedder`, `rices_order` | 5, `default`, `most_similar_first` | RICES (`emloc.methods.rices`) |
| `dtype`, `device`, `attn`, `seed` | `float32`, `cpu`, `sdpa`, 0 | backend (paper: `bfloat16`, `cuda`, `sdpa`) |
| `min_pixels`, `max_pixels` | the model's | image resolution of Qwen-VL hub models |
| `batch_size` | 1 | queries decoded together (packed; the memory is never copied) |
| `max_new_tokens` | the task's `generation_kwargs`, else 128 | decoding budget (decoding is always greedy) |
| `memory_dir` | none | persist / reuse task memories there: the runner's cache layout and key (`emloc.engine.memory.memory_key`), so `memory_dir=<outputs>/memories` shares the runner's memories |

A `fewshot_split` equal to the evaluated split is refused (ValueError naming task and split), not filtered: the
memory is built once per task, so excluding the queries would make the demonstrations depend on `--limit` and on
the rank's shard, and the other queries' answers would still be in it; RICES would retrieve the query itself.
Split the data, or use `method=zero_shot`, which reads no demonstrations.

`loglikelihood` returns `(negative log-likelihood, is_greedy)`: lmms-eval's `multiple_choice` scoring takes the
argmin over the choices, i.e. it expects a loss, as its built-in models return. A continuation is scored as the
assistant's answer turn (answer tokens + end of turn) after the task's `target_delimiter` is stripped;
`is_greedy` is computed (one short greedy decode per document) only when a metric of the task uses it.
"""

from __future__ import annotations

import logging
import random
import re
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from emloc.data.base import Example
from emloc.engine.generate import answer, generate, loglikelihood
from emloc.integrations.lmms_eval import compat
from emloc.models.loading import load

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _none(value: Any) -> Any:
    return (
        None if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")) else value
    )


def _bool(value: Any) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)


def _int(value: Any) -> int | None:
    return None if _none(value) is None else int(value)


def parse_ratios(value: Any) -> tuple[float, ...]:
    """`0.1/0.2/0.5`, `0.1:0.2:0.5`, `0.1 0.2 0.5` or a sequence -> floats."""
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return tuple(float(p) for p in re.split(r"[/:;\s]+", str(value).strip("[]() ")) if p)


def _hydra(value: Any) -> str:
    """A model-arg value as a Hydra override value (lists in brackets)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _norm(text: str) -> str:
    return " ".join("".join(c for c in str(text).lower() if c not in string.punctuation).split())


@dataclass
class _TaskState:
    name: str
    task: Any  # the lmms-eval task object
    instruction: str | None
    renderer: Any
    method: Any
    memory: Any = None  # the task memory (None for RICES: one context per query)
    index: Any = None  # RICES retrieval index
    demos: list = field(default_factory=list)


class EMLoCLMM(lmms):
    """EMLoC and its baselines as an lmms-eval simple model; see the module docstring for the arguments."""

    is_simple = True

    def __init__(
        self,
        source: str = "tiny:qwen2_vl",
        method: str = "emloc_paper",
        num_fewshot: Any = None,
        demo_seed: Any = None,
        demo_order: Any = None,
        fewshot_split: Any = None,
        chunk_size: Any = "auto",
        delta: Any = None,
        rices_k: int = 5,
        rices_embedder: str = "default",
        rices_order: str = "most_similar_first",
        dtype: str = "float32",
        device: Any = "cpu",
        attn: str = "sdpa",
        seed: int = 0,
        min_pixels: Any = None,
        max_pixels: Any = None,
        max_num_frames: Any = None,
        batch_size: Any = 1,
        max_new_tokens: Any = None,
        memory_dir: Any = None,
        show_progress: Any = False,
        **method_params: Any,
    ) -> None:
        super().__init__()
        compat.apply()  # lmms-eval 0.7.x: native multiple_choice / loglikelihood tasks (see compat)
        method_params.pop("max_batch_size", None)  # lmms-eval's own CLI extra
        self.method_name = {"mloc": "full_context"}.get(str(method).lower(), str(method).lower().replace("-", "_"))
        if _none(demo_order) not in (None, "sample", "first"):
            raise ValueError(f"emloc: demo_order must be sample or first, got {demo_order!r}")
        self.num_fewshot, self.demo_seed, self.demo_order = _int(num_fewshot), _int(demo_seed), _none(demo_order)
        self.fewshot_split, self.max_num_frames = _none(fewshot_split), _int(max_num_frames)
        self.chunk_size = "auto" if chunk_size == "auto" else _int(chunk_size)
        if _none(delta) is not None:
            method_params["js_threshold"] = delta
        if "keep_ratios" in method_params:
            method_params["keep_ratios"] = list(parse_ratios(method_params["keep_ratios"]))
        self.method_params = method_params
        self.rices_args = {"k": int(rices_k), "embedder": str(rices_embedder), "order": str(rices_order)}
        self.batch_size_per_gpu = max(1, int(batch_size)) if str(batch_size).isdigit() else 1
        self.max_new_tokens, self.memory_dir = _int(max_new_tokens), _none(memory_dir)
        self.show_progress, self.source = _bool(show_progress), str(source)
        self._make_method({})  # a bad method value fails now, before the model loads
        pixels = {
            k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if _none(v) is not None
        }
        self.adapter = load(self.source, dtype=str(dtype), device=str(device), attn=str(attn), seed=int(seed), **pixels)
        self.states: dict[str, _TaskState] = {}

    @property
    def device(self):
        return self.adapter.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # --------------------------------------------------------------------------------------------- the method
    def _make_method(self, meta: dict):
        """The method composed from `conf/method/<method>.yaml` exactly as the runner composes it, with the model
        args that name its parameters (and the task's `metadata.emloc.chunk_size`) as overrides; or RICES."""
        from hydra.utils import get_class, instantiate

        from emloc.experiment.config import compose
        from emloc.methods.rices import RICES
        from emloc.utils.storage import conf_dir

        if self.method_name == "rices":
            return RICES(**self.rices_args, show_progress=self.show_progress)
        options = sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))
        if self.method_name not in options:
            raise ValueError(f"emloc: unknown method {self.method_name!r}; use one of {', '.join([*options, 'rices'])}")
        params = dict(self.method_params)
        compresses = get_class(compose([f"method={self.method_name}"]).method._target_).compresses
        if self.chunk_size != "auto":
            params["chunk_size"] = self.chunk_size
        elif meta.get("chunk_size") and compresses:  # the task's reference chunk (the full context: one pass)
            params["chunk_size"] = int(meta["chunk_size"])
        overrides = [f"method={self.method_name}"] + [f"++method.{k}={_hydra(v)}" for k, v in params.items()]
        try:
            return instantiate(compose(overrides).method, show_progress=self.show_progress)
        except Exception as err:  # Hydra wraps the dataclass' own error: name the root cause
            root = err
            while root.__cause__ is not None:
                root = root.__cause__
            raise ValueError(f"emloc: method {self.method_name!r} with {params}: {root}") from None

    # --------------------------------------------------------------------------------------------- docs -> examples
    @staticmethod
    def _task_of(request) -> Any:
        task = getattr(request.args[2], "__self__", None)
        if task is None or not hasattr(task, "doc_to_text"):
            raise TypeError(
                f"emloc: request of task {request.args[-2]!r} carries no bound doc_to_visual; emloc needs "
                "the task's doc functions (an lmms-eval ConfigurableTask)"
            )
        return task

    def _images(self, task_name: str, visuals: Any, task: Any = None) -> dict[str, Any]:
        """The `Example` fields of a doc's visuals: images, and video files (.mp4, ...) as videos.

        A video is sampled to `max_num_frames` uniformly spaced frames when rendered: the model arg if set, else
        the task's `metadata.max_num_frames` (or `metadata.emloc.max_num_frames`), else 8.
        """
        images, videos = [], []
        for v in visuals or []:
            if isinstance(v, dict):
                raise NotImplementedError(f"emloc: task {task_name!r} has a non-image input ({sorted(v)})")
            if isinstance(v, (str, Path)) and str(v).lower().endswith(VIDEO_SUFFIXES):
                videos.append(str(v))
            else:
                images.append(v)
        if visuals and not self.adapter.multimodal:
            raise ValueError(f"emloc: task {task_name!r} shows images or videos but model {self.source!r} is text-only")
        meta = getattr(getattr(task, "config", None), "metadata", None)
        meta = meta if isinstance(meta, dict) else {}
        frames = (
            self.max_num_frames
            or _int(meta.get("max_num_frames"))
            or _int((meta.get("emloc") or {}).get("max_num_frames"))
            or 8
        )
        return {"images": tuple(images), "videos": tuple(videos), "num_frames": frames}

    @staticmethod
    def _target(task, doc) -> str:
        target = task.doc_to_target(doc)
        if isinstance(target, list):
            target = target[0] if target else ""
        if isinstance(target, int) and getattr(task.config, "doc_to_choice", None) is not None:
            target = task.doc_to_choice(doc)[target]
        return str(target)

    def _example(self, name: str, task, doc: dict, split: str, index: int, demo: bool) -> Example:
        answer_text = self._target(task, doc) if demo else "<query>"  # a query's answer is never shown
        if demo and not answer_text.strip():
            raise ValueError(f"emloc: demonstration {index} of {name}/{split} has an empty target")
        uid = doc.get("emloc_uid") if isinstance(doc, dict) else None
        return Example(
            uid=str(uid or f"{name}/{split}/{index}"),
            question=str(task.doc_to_text(doc)),
            answer=answer_text,
            **self._images(name, task.doc_to_visual(doc), task),
        )

    # --------------------------------------------------------------------------------------------- per-task memory
    def _state(self, request) -> _TaskState:
        name = request.args[-2]
        if name in self.states:
            return self.states[name]
        task = self._task_of(request)
        meta = getattr(task.config, "metadata", None)
        meta = dict(meta.get("emloc") or {}) if isinstance(meta, dict) else {}
        instruction = meta.get("instruction") or (str(getattr(task.config, "description", "") or "").strip() or None)
        method = self._make_method(meta)
        state = _TaskState(name, task, instruction, self.adapter.renderer(instruction), method)
        if not getattr(method, "uses_demos", True):  # zero-shot: the memory is the system turn alone
            state.memory = method.build(self.adapter, [], instruction)
        else:
            split, docs = self._fewshot_docs(name, task, meta, request.args[-1])
            if self.method_name == "rices":
                state.index = method.index(
                    [self._example(name, task, docs[i], split, i, True) for i in range(len(docs))]
                )
            else:
                k = self.num_fewshot if self.num_fewshot is not None else int(meta.get("num_shots", 20))
                seed = self.demo_seed if self.demo_seed is not None else int(meta.get("demo_seed", 42))
                order = self.demo_order or meta.get("demo_order") or "sample"
                if k > len(docs):
                    raise ValueError(f"emloc: num_fewshot={k} exceeds the {len(docs)} docs of {name}/{split}")
                picks = list(range(k)) if order == "first" else random.Random(seed).sample(range(len(docs)), k)
                state.demos = [self._example(name, task, docs[i], split, i, True) for i in picks]
                state.memory = self._memory(state)
                log.info(
                    "emloc[%s]: %s memory of %d demos, %d -> %.0f tokens (retention %.3f)",
                    name,
                    self.method_name,
                    k,
                    state.memory.num_source_tokens,
                    state.memory.memory_tokens,
                    state.memory.retention,
                )
        self.states[name] = state
        return state

    def _fewshot_docs(self, name: str, task, meta: dict, query_split: str):
        split = self.fewshot_split or getattr(task.config, "fewshot_split", None) or meta.get("fewshot_split")
        if split is None or split == query_split:
            why = "declares no fewshot_split" if split is None else f"draws demos from {split!r}, the evaluated split"
            raise ValueError(
                f"emloc: task {name!r} {why}; set `fewshot_split:` (another split) in its YAML or pass "
                "fewshot_split=<split> in --model_args"
            )
        dataset = self.task_dict.get(name) or getattr(task, "dataset", None)
        if dataset is None or split not in dataset:
            raise ValueError(
                f"emloc: task {name!r} has no split {split!r} for demonstrations "
                f"(splits: {sorted(dataset) if dataset is not None else []})"
            )
        return split, dataset[split]

    def _memory(self, state: _TaskState):
        """Built, or loaded from `memory_dir` (the runner's cache layout and key: both reach the same entries)."""
        if not self.memory_dir:
            return state.method.build(self.adapter, state.demos, state.instruction)
        from emloc.experiment.cache import build_memory

        memory, _ = build_memory(state.method, state.demos, state.instruction, self.adapter, Path(self.memory_dir))
        return memory

    def _query(self, state: _TaskState, request) -> Example:
        doc_id, split = request.args[-3], request.args[-1]
        return self._example(state.name, state.task, self.task_dict[state.name][split][doc_id], split, doc_id, False)

    # --------------------------------------------------------------------------------------------- requests
    def generate_until(self, requests) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        by_task: OrderedDict[str, list[int]] = OrderedDict()
        for i, r in enumerate(requests):
            by_task.setdefault(r.args[-2], []).append(i)
        bar = tqdm(total=len(requests), desc="emloc generate", disable=not self.show_progress)
        for _name, idx in by_task.items():
            state = self._state(requests[idx[0]])
            step = 1 if state.index is not None else self.batch_size
            for start in range(0, len(idx), step):
                batch = idx[start : start + step]
                kwargs = dict(requests[batch[0]].args[1] or {})
                budget = self.max_new_tokens or int(kwargs.get("max_new_tokens") or 128)
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                queries = [self._query(state, requests[i]) for i in batch]
                if state.index is not None:
                    preds, _ = state.method.answer(self.adapter, state.index, queries, state.instruction, budget)
                else:
                    preds = answer(self.adapter, state.memory, state.renderer, queries, budget)
                for i, p in zip(batch, preds):
                    for stop in until:
                        p = p.split(stop, 1)[0] if stop else p
                    results[i] = p
                bar.update(len(batch))
        bar.close()
        return results

    @staticmethod
    def _needs_greedy(task) -> bool:
        metrics, output = set(getattr(task, "_metric_fn_list", {}) or {}), getattr(task, "OUTPUT_TYPE", "")
        return {"multiple_choice": "exact_match", "loglikelihood": "acc"}.get(
            output
        ) in metrics  # metrics reading is_greedy

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: OrderedDict[tuple, list[int]] = OrderedDict()
        for i, r in enumerate(requests):  # all choices of one document are scored together
            groups.setdefault((r.args[-2], r.args[-1], r.args[-3]), []).append(i)
        bar = tqdm(total=len(requests), desc="emloc loglikelihood", disable=not self.show_progress)
        for (name, split, doc_id), idx in groups.items():
            state = self._state(requests[idx[0]])
            query = self._query(state, requests[idx[0]])
            doc = self.task_dict[name][split][doc_id]
            delim = getattr(state.task.config, "target_delimiter", " ") or ""
            candidates = []
            for i in idx:
                cont = requests[i].args[1]
                cont = self._target(state.task, doc) if callable(cont) else str(cont)  # output_type loglikelihood
                candidates.append(cont[len(delim) :] if delim and cont.startswith(delim) else cont)
            memory = state.memory
            if state.index is not None:
                (demos,) = state.method.retrieve(state.index, [query])
                memory = state.method.memory_for(self.adapter, demos, state.instruction)
            scores = loglikelihood(self.adapter, memory, state.renderer, query, candidates)
            greedy = [False] * len(candidates)
            if self._needs_greedy(state.task):
                tokens = max(len(self.adapter.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in candidates)
                out = _norm(generate(self.adapter, memory, state.renderer, [query], tokens + 2)[0])
                greedy = [out == _norm(c) for c in candidates]
            for i, s, g in zip(idx, scores, greedy):
                results[i] = (-float(s), bool(g))
            bar.update(len(idx))
        bar.close()
        return results

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("emloc answers single-turn requests only (generate_until, loglikelihood)")
