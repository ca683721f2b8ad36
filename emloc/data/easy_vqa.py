"""The easy-VQA benchmark (PyPI `easy-vqa`): questions about simple coloured shapes.

Demonstrations come from the package's train split and queries from its test split; both ship inside the
package, so nothing is downloaded. Answers are one of 13 words. With `score_by="loglik"` each example carries
those 13 answers as `choices` (ranked by log-likelihood); otherwise the model generates. This module
deliberately does not open or preprocess the images: it hands over file paths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from emloc.data.base import Example, Task


@dataclass
class EasyVQATask(Task):
    """easy-VQA; `max_pool` caps each pool (a seeded subsample with `pool_seed`) for speed."""

    score_by: Literal["generate", "loglik"] = "generate"
    max_pool: int | None = None
    pool_seed: int = 0

    name = "easy_vqa"
    metric = "exact_match"

    def __post_init__(self) -> None:
        if self.score_by not in ("generate", "loglik"):
            raise ValueError(f"score_by must be 'generate' or 'loglik', got {self.score_by!r}")
        if self.max_pool is not None and self.max_pool < 1:
            raise ValueError(f"max_pool must be >= 1 or None, got {self.max_pool}")
        import easy_vqa

        self.answers = tuple(easy_vqa.get_answers())
        self.instruction = "Answer the question about the image with a single word."

    def _examples(self, split: Literal["train", "test"]) -> list[Example]:
        import easy_vqa

        if split == "train":
            texts, answers, image_ids = easy_vqa.get_train_questions()
            paths = easy_vqa.get_train_image_paths()
        else:
            texts, answers, image_ids = easy_vqa.get_test_questions()
            paths = easy_vqa.get_test_image_paths()
        rows = list(range(len(texts)))
        if self.max_pool is not None and self.max_pool < len(rows):
            rows = sorted(random.Random(self.pool_seed).sample(rows, self.max_pool))
        choices = self.answers if self.score_by == "loglik" else ()
        counter: dict[int, int] = {}
        index_of: list[int] = []  # question index within its image, counted over the full split
        for image_id in image_ids:
            index_of.append(counter.get(image_id, 0))
            counter[image_id] = index_of[-1] + 1
        out = []
        for i in rows:
            uid = f"easy_vqa/{split}/{image_ids[i]}/{index_of[i]}"
            out.append(Example(uid=uid, question=texts[i], answer=answers[i], images=(paths[image_ids[i]],),
                               choices=choices, meta={"image_id": image_ids[i], "split": split}))  # fmt: skip
        return out

    def load(self) -> tuple[list[Example], list[Example]]:
        return self._examples("train"), self._examples("test")
