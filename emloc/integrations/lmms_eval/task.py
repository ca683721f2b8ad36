"""`EmlocTask`: an emloc `Task` (a `conf/task/` option) served to lmms-eval as one of its tasks.

A task YAML names the option and, optionally, Hydra overrides:

    task: emloc_iso3166
    class: !function emloc.integrations.lmms_eval.task.EmlocTask
    metadata: {version: 1, emloc: {task: iso3166, overrides: [task.num_queries=16]}}

The option is composed exactly as `run.py` composes it (`conf/` next to the `emloc` package, or
`$EMLOC_CONF_DIR`, or `metadata.emloc.config_dir`), and served with two splits: `test` = the runner's query set
(same draw, same order) and `fewshot` = the runner's demonstration pool (every demo candidate not drawn as a
query, in the task's order), so `random.Random(demo_seed).sample` over either side picks the same
demonstrations. `metadata.emloc` is filled with what the `emloc` model needs to match the runner: shots, demo
seed and order, the instruction (system turn) and the paper's chunk size when the option has a `paper:` block.

`output_type` is `multiple_choice` when every query has choices (the runner ranks them by log-likelihood too),
else `generate_until` (`max_new_tokens` = `task.paper.max_new_tokens`, else `eval.max_new_tokens`). Every query
is scored by the emloc task's own `score` (metric `accuracy`) plus its `scores()` when it has one. Data errors
of the emloc task (e.g. a paper dataset that is not available offline) surface unchanged, naming the dataset.
Any regular lmms-eval TaskConfig key set in the YAML wins over these defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from lmms_eval.api.task import ConfigurableTask

from emloc.data.base import Example, Task
from emloc.engine.prompts import load_image


def compose_task(task: str, overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None):
    """`conf/task/<task>.yaml` composed like `run.py` would (plus `overrides`): returns (cfg.task, cfg.eval)."""
    from emloc.experiment.config import compose

    cfg = compose([f"task={task}", *overrides], config_dir)
    return cfg.task, cfg.eval


def bridge_splits(task: Task, num_queries: int | None, query_seed: int,
                  held_out: dict[str, int] | None = None) -> tuple[list[Example], list[Example]]:  # fmt: skip
    """(demonstration pool, queries) as the runner draws them: the queries of `task.split` (which never depend on
    shots or demo seed) and the demo candidates that are neither queries nor held-out inputs (`task.heldout`), in
    the task's order."""
    split = task.split(0, num_queries, 0, query_seed, held_out)
    taken = {q.uid for q in split.queries} | {e.uid for v in split.held_out.values() for e in v}
    return [d for d in task.load()[0] if d.uid not in taken], split.queries


def _question(doc: dict) -> str:
    return doc["question"]


def _answer(doc: dict) -> str:
    return doc["answer"]


def _choices(doc: dict) -> list[str]:
    return list(doc["choices"])


class EmlocTask(ConfigurableTask):
    """An emloc task as an lmms-eval task (see the module docstring)."""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        cfg = {k: v for k, v in dict(config or {}).items() if k != "class"}
        meta = dict(cfg.get("metadata") or {})
        spec = dict(meta.get("emloc") or {})
        if "task" not in spec:
            raise ValueError(
                f"lmms-eval task {cfg.get('task')!r}: metadata.emloc.task (a conf/task option) is required"
            )
        task_cfg, eval_cfg = compose_task(spec["task"], list(spec.get("overrides") or []), spec.get("config_dir"))
        self.emloc_task = instantiate(task_cfg.loader)
        pool, queries = bridge_splits(
            self.emloc_task, task_cfg.num_queries, task_cfg.query_seed, dict(task_cfg.get("heldout") or {})
        )
        self.emloc_splits = {"fewshot": pool, "test": queries}
        self.emloc_examples = {e.uid: e for e in pool + queries}
        self.multiple_choice = all(q.choices for q in queries)
        paper = task_cfg.get("paper") or {}
        instruction = self.emloc_task.instruction
        spec.update(
            {
                "num_shots": int(task_cfg.num_shots),
                "demo_seed": int(task_cfg.demo_seed),
                "demo_order": getattr(self.emloc_task, "demo_order", "sample"),
                "instruction": instruction,
                "fewshot_split": "fewshot",
                "num_queries": len(queries),
            }
        )
        if paper.get("chunk_size") is not None:
            spec["chunk_size"] = int(paper["chunk_size"])
        meta.setdefault("version", 1)
        defaults = {
            "output_type": "multiple_choice" if self.multiple_choice else "generate_until",
            "test_split": "test",
            "fewshot_split": "fewshot",
            "num_fewshot": 0,
            "doc_to_text": _question,
            "doc_to_target": _answer,
            "doc_to_visual": self._visuals,
            "process_results": self._process_results,
            "description": f"{instruction}\n" if instruction else "",
            "metric_list": [
                {"metric": m, "aggregation": "mean", "higher_is_better": True}
                for m in self._scores(queries[0], queries[0].answer)
            ],
        }
        if self.multiple_choice:
            defaults["doc_to_choice"] = _choices
        else:
            budget = int(paper.get("max_new_tokens") or eval_cfg.max_new_tokens)
            defaults["generation_kwargs"] = {"max_new_tokens": budget, "until": [], "do_sample": False}
        super().__init__(config={**defaults, **cfg, "metadata": {**meta, "emloc": spec}})

    def download(self, dataset_kwargs=None) -> None:
        def rows(examples: list[Example]) -> datasets.Dataset:
            out = [{"emloc_uid": e.uid, "question": e.question, "answer": e.answer} for e in examples]
            if self.multiple_choice:
                for row, e in zip(out, examples):
                    row["choices"] = list(e.choices)
            return datasets.Dataset.from_list(out)

        self.dataset = datasets.DatasetDict({name: rows(exs) for name, exs in self.emloc_splits.items()})
        self.dataset_no_image = self.dataset

    def _visuals(self, doc: dict) -> list:
        return [load_image(im) for im in self.emloc_examples[doc["emloc_uid"]].images]

    def _scores(self, example: Example, prediction: str) -> dict[str, float]:
        extra = self.emloc_task.scores(example, prediction) if hasattr(self.emloc_task, "scores") else {}
        return {
            "accuracy": float(self.emloc_task.score(example, prediction)),
            **{k: float(v) for k, v in extra.items()},
        }

    def _process_results(self, doc: dict, results: list, **kwargs: Any) -> dict[str, float]:
        example = self.emloc_examples[doc["emloc_uid"]]
        if self.multiple_choice:  # results: one (loss, is_greedy) per choice; the runner's argmax of log-likelihood
            losses = [r[0] if isinstance(r, (tuple, list)) else r for r in results]
            prediction = example.choices[min(range(len(losses)), key=losses.__getitem__)]
        else:
            prediction = results[0] if results else ""
        return self._scores(example, prediction)
