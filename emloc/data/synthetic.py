"""A tiny, deterministic in-process task for unit tests.

Items are random pseudo-words, each assigned a colour-word class; with `with_images` every example also gets
a 64x64 solid-colour PIL image whose colour is its class, so the images carry the label. It deliberately
has no external data, no files on disk and no meaning beyond exercising the engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from emloc.data.base import Example, Task

PALETTE = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
    "purple": (130, 40, 170), "orange": (245, 140, 20), "black": (10, 10, 10), "white": (245, 245, 245),
}  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ner", "pu", "sa", "ti", "vo", "ze", "ru", "bel", "dan", "fo", "gri", "hu", "jem")


@dataclass
class SyntheticTask(Task):
    """`num_items` pseudo-words labelled with one of `num_classes` colour words (round-robin, then shuffled)."""

    num_items: int = 64
    num_classes: int = 4
    with_images: bool = False
    seed: int = 0

    name = "synthetic"
    metric = "exact_match"

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(PALETTE):
            raise ValueError(f"num_classes must be in [2, {len(PALETTE)}], got {self.num_classes}")
        if self.num_items < self.num_classes:
            raise ValueError(f"num_items={self.num_items} must be >= num_classes={self.num_classes}")
        self.labels = tuple(PALETTE)[: self.num_classes]
        self.instruction = f"Classify each item as one of: {', '.join(self.labels)}."

    def load(self) -> tuple[list[Example], list[Example]]:
        rng = random.Random(self.seed)
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < self.num_items:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        answers = [self.labels[i % self.num_classes] for i in range(self.num_items)]
        rng.shuffle(answers)
        pool = []
        for i, (word, answer) in enumerate(zip(words, answers)):
            images = (Image.new("RGB", (64, 64), PALETTE[answer]),) if self.with_images else ()
            pool.append(Example(uid=f"syn-{i}", question=f"Item: {word}", answer=answer, images=images,
                                choices=self.labels, meta={"class_index": self.labels.index(answer)}))  # fmt: skip
        return pool, pool
