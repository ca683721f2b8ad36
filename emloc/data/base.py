"""The task contract: what a benchmark hands to the engine.

A `Task` owns a labelled pool of `Example`s and knows how to split it into a demonstration pool and a
query set (disjoint, seeded) and how to score a prediction. It deliberately knows nothing about models,
tokenizers or chat templates: rendering an `Example` into tokens is the model adapter's job.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from emloc.data import metrics


@dataclass(frozen=True)
class Example:
    """One demonstration or query.

    Attributes:
        uid: stable identifier (used for disjointness checks and provenance).
        question: the user text of the turn.
        answer: the reference answer (shown to the model for demonstrations).
        images: image file paths (str) or PIL images shown before the question, in order.
        choices: candidate answers; when set, the query is answered by log-likelihood ranking.
        references: all acceptable answers (VQA soft accuracy); defaults to (answer,).
        videos: videos shown after the images, in order: a file path (str) sampled to `num_frames` frames when
            rendered (`emloc.data.video`), or a list/tuple of PIL frames used as given. Images and videos may be mixed;
            a user turn shows every image, then every video, then the question.
        num_frames: frames sampled uniformly from each video file (frame lists are not resampled).
    """

    uid: str
    question: str
    answer: str
    images: tuple[Any, ...] = ()
    choices: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    videos: tuple[Any, ...] = ()
    num_frames: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise ValueError(f"example {self.uid!r} has no answer (got {self.answer!r})")
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(f"example {self.uid!r}: num_frames must be an integer >= 1, got {self.num_frames!r}")


@dataclass
class Split:
    demos: list[Example]
    queries: list[Example]


class Task(ABC):
    """A benchmark: a labelled pool, a split protocol and a metric.

    Subclasses implement `load()` and set `name`, `metric` and optionally `instruction` (a system message
    shared by every prompt, e.g. the label set).
    """

    name: str = "task"
    metric: str = "exact_match"
    instruction: str | None = None

    @abstractmethod
    def load(self) -> tuple[list[Example], list[Example]]:
        """Return (demo candidates, query candidates). They may be the same list; `split` keeps them disjoint."""

    def split(self, num_shots: int, num_queries: int | None, demo_seed: int, query_seed: int = 1234) -> Split:
        """Seeded, disjoint demonstration and query sets.

        Queries are drawn first (from the query candidates, with `query_seed`), so the query set does not
        depend on `num_shots` or `demo_seed`; demonstrations are drawn with `demo_seed` from what is left.
        """
        if num_shots < 0:
            raise ValueError(f"num_shots must be >= 0, got {num_shots}")
        if num_queries is not None and num_queries < 1:
            raise ValueError(f"num_queries must be >= 1 or null, got {num_queries}")
        demo_pool, query_pool = self.load()
        queries = list(query_pool)
        random.Random(query_seed).shuffle(queries)
        if num_queries is not None:
            if num_queries > len(queries):
                raise ValueError(f"num_queries={num_queries} exceeds the {len(queries)} queries of task {self.name!r}")
            queries = queries[:num_queries]
        taken = {q.uid for q in queries}
        pool = [d for d in demo_pool if d.uid not in taken]
        if num_shots > len(pool):
            raise ValueError(
                f"num_shots={num_shots} exceeds the demonstration pool of task {self.name!r} ({len(pool)} examples)"
            )
        demos = random.Random(demo_seed).sample(pool, num_shots)
        overlap = {d.uid for d in demos} & taken
        if overlap:  # guards a subclass whose uids are not unique
            raise ValueError(f"queries overlap demonstrations in task {self.name!r}: {sorted(overlap)[:5]}")
        return Split(demos=demos, queries=queries)

    def heldout(self, split: Split, count: int, seed: int) -> list[Example]:
        """Up to `count` examples of the demonstration pool that are neither demonstrations nor queries (seeded):
        held-out inputs for methods that measure a memory on examples it does not contain. Only their questions are
        used (never their answers); fewer are returned when the pool has fewer left."""
        taken = {e.uid for e in split.demos + split.queries}
        pool = [d for d in self.load()[0] if d.uid not in taken]
        return random.Random(seed * 7919 + 17).sample(pool, min(count, len(pool))) if count > 0 else []

    def score(self, example: Example, prediction: str) -> float:
        return metrics.score(self.metric, prediction, example)
