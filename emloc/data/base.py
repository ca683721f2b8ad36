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
from emloc.utils.errors import ConfigError


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


HELD_OUT = ("fidelity", "tuning", "certification")  # the held-out sets, in the order they are carved


@dataclass
class Split:
    """Disjoint sets of one task. `held_out`: inputs that are neither demonstrations nor queries, by name —
    "fidelity" (held-out JS, measured by the runner), "tuning" (what a method may look at to choose its memory) and
    "certification" (what certifies a bound the tuning set chose). They depend on `query_seed` only, so every demo
    seed and every method sees the same ones (a crossed design) and the same demonstrations."""

    demos: list[Example]
    queries: list[Example]
    held_out: dict[str, list[Example]] = field(default_factory=dict)


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

    def split(self, num_shots: int, num_queries: int | None, demo_seed: int, query_seed: int = 1234,
              held_out: dict[str, int] | None = None) -> Split:  # fmt: skip
        """Seeded, disjoint queries, held-out sets and demonstrations.

        Queries are drawn first (from the query candidates, with `query_seed`), then the held-out sets (`held_out`:
        name → size, carved in `HELD_OUT` order from the demonstration pool, class-balanced when the examples are
        ranked over choices, seeded by `query_seed`), so neither depends on `num_shots` or `demo_seed`;
        demonstrations are drawn with `demo_seed` from what is left.
        """
        if num_shots < 0:
            raise ValueError(f"num_shots must be >= 0, got {num_shots}")
        if num_queries is not None and num_queries < 1:
            raise ValueError(f"num_queries must be >= 1 or null, got {num_queries}")
        demo_pool, query_pool = self.load()
        queries = self.draw_queries(list(query_pool), num_queries, random.Random(query_seed))
        taken = {q.uid for q in queries}
        pool = [d for d in demo_pool if d.uid not in taken]
        sets, rng = {}, random.Random(f"held-out:{query_seed}")
        for name in HELD_OUT:
            size = (held_out or {}).get(name, 0)
            if size > len(pool):
                raise ConfigError(f"task.heldout.{name}", size, f"task {self.name!r} has only {len(pool)} inputs left "
                                  f"for it after its {len(queries)} queries and the held-out sets carved before it",
                                  f"lower task.heldout.{name} (0 reserves none) or task.num_queries")  # fmt: skip
            sets[name] = balanced_sample(pool, size, rng, f"task.heldout.{name}")
            chosen = {e.uid for e in sets[name]}
            pool = [d for d in pool if d.uid not in chosen]
        if num_shots > len(pool):
            raise ValueError(
                f"num_shots={num_shots} exceeds the demonstration pool of task {self.name!r} ({len(pool)} examples"
                f"{' after the held-out sets' if any(sets.values()) else ''})"
            )
        demos = random.Random(demo_seed).sample(pool, num_shots)
        overlap = {d.uid for d in demos} & (taken | {e.uid for v in sets.values() for e in v})
        if overlap:  # guards a subclass whose uids are not unique
            raise ValueError(
                f"queries or held-out inputs overlap demonstrations in task {self.name!r}: {sorted(overlap)[:5]}"
            )
        return Split(demos=demos, queries=queries, held_out={k: v for k, v in sets.items() if v})

    def draw_queries(self, candidates: list[Example], num_queries: int | None, rng: random.Random) -> list[Example]:
        """The query set: `num_queries` of the candidates (all when None), in a seeded order."""
        rng.shuffle(candidates)
        if num_queries is not None and num_queries > len(candidates):
            raise ValueError(f"num_queries={num_queries} exceeds the {len(candidates)} queries of task {self.name!r}")
        return candidates if num_queries is None else candidates[:num_queries]

    def score(self, example: Example, prediction: str) -> float:
        return metrics.score(self.metric, prediction, example)


def balanced_sample(pool: list[Example], size: int, rng: random.Random, what: str = "size",
                    labels: list[str] | None = None, strict: bool = False) -> list[Example]:  # fmt: skip
    """`size` examples of `pool`, balanced over their answers (the classes): each answer gets size // classes, the
    remainder going to seeded-random classes; a class with too few examples gives all it has and its shortfall goes,
    one at a time, to seeded-random classes with room — or, `strict`, it is an error. `labels`: the classes in the
    order they are filled, default sorted. Free-form answers (all distinct) make it a plain seeded sample. How the
    task is scored (ranked or generated) does not change the draw. In a seeded order."""
    if size <= 0:
        return []
    if size > len(pool):
        raise ValueError(f"{what}={size} exceeds the {len(pool)} examples available")
    members: dict[str, list[Example]] = {}
    for e in pool:
        members.setdefault(e.answer, []).append(e)
    labels = labels or sorted(members)
    members = {label: members.get(label, []) for label in labels}
    quota = dict.fromkeys(labels, size // len(labels))
    for label in rng.sample(labels, size % len(labels)):
        quota[label] += 1
    short = sum(max(0, quota[label] - len(members[label])) for label in labels)
    if short and strict:
        label = next(label for label in labels if quota[label] > len(members[label]))
        raise ValueError(f"balanced {what}={size} needs {quota[label]} examples of class {label!r}, which has only "
                         f"{len(members[label])}")  # fmt: skip
    quota = {label: min(quota[label], len(members[label])) for label in labels}
    while short:  # water-filling: only runs (and draws) when a class is too small
        label = rng.choice([label for label in labels if quota[label] < len(members[label])])
        quota[label], short = quota[label] + 1, short - 1
    out = [e for label in labels for e in rng.sample(members[label], quota[label])]
    rng.shuffle(out)
    return out
