"""The paper's image-classification and VQA benchmarks: ImageNet100, IllusionVQA, MME-RealWorld-lite, OK-VQA.

ImageNet100 is read from a local ImageNet-1k folder and the paper's two JSON lists; the three others are
`HFPaperTask`s (100-document demo pool carved from the evaluated split with seed 42, the rest are queries).
Prompts and answer formats follow the reference's task definitions (docs/method.md §5); scoring is per query.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from emloc.data.base import Example, Split, Task
from emloc.data.paper.common import DatasetUnavailableError, HFPaperTask


def _letters(n: int) -> str:
    return string.ascii_uppercase[:n]


@dataclass
class ImageNet100Task(Task):
    """ImageNet100 as in the paper: the 200-image train list (2 per class) and the 5,000-image val list.

    `train_list` / `val_list` are the paper's JSON files (`lmms_eval_ImageNet100_{train,val}.json`, published
    with the authors' code; rows: question, answer, image). Their image paths end in
    `imagenet1k/<split>/<wnid>/<file>` and are resolved under `root` (an ImageNet-1k folder with `train/` and
    `val/`). Demonstrations are the first k rows of the train list in file order (`demo_order="first"`,
    the reference's rule; "sample" draws them with `demo_seed`); their answers keep the list's trailing '.'.
    """

    root: str | None = None
    train_list: str | None = None
    val_list: str | None = None
    demo_order: Literal["first", "sample"] = "first"
    check_images: bool = True

    name = "imagenet100"
    metric = "substring_nospace"
    instruction = None

    def __post_init__(self) -> None:
        if self.demo_order not in ("first", "sample"):
            raise ValueError(f"demo_order must be 'first' or 'sample', got {self.demo_order!r}")
        self._loaded: tuple[list[Example], list[Example]] | None = None

    def _resolve(self, image: str) -> Path:
        parts = Path(image).parts
        tail = parts[parts.index("imagenet1k") + 1 :] if "imagenet1k" in parts else parts[-3:]
        return Path(self.root).expanduser().joinpath(*tail)

    def _read(self, path: str | None, which: str) -> list[Example]:
        label = f"ImageNet100 {which} list (lmms_eval_ImageNet100_{which}.json, from the EMLoC authors' repository)"
        if not path or not Path(path).expanduser().is_file():
            raise DatasetUnavailableError(f"{self.name}: {label} not found at {path!r}; set task.loader.{which}_list")
        rows = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        if not self.root or not Path(self.root).expanduser().is_dir():
            raise DatasetUnavailableError(
                f"{self.name}: ImageNet-1k image folder not found at root={self.root!r} "
                "(expects <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG)"
            )
        out, missing = [], []
        for i, row in enumerate(rows):
            image = self._resolve(row["image"])
            if self.check_images and not image.is_file():
                missing.append(str(image))
            wnid = image.parent.name
            out.append(
                Example(
                    uid=f"{self.name}/{which}/{wnid}/{image.name}",
                    question=row["question"],
                    answer=str(row["answer"]).strip(),
                    images=(str(image),),
                    meta={"class": wnid, "row": i},
                )
            )
        if missing:
            raise DatasetUnavailableError(
                f"{self.name}: {len(missing)} of {len(rows)} ImageNet-1k images of the {which} "
                f"list are missing under {self.root}, e.g. {missing[0]}"
            )
        return out

    def load(self) -> tuple[list[Example], list[Example]]:
        if self._loaded is None:
            self._loaded = self._read(self.train_list, "train"), self._read(self.val_list, "val")
        return self._loaded

    def split(self, num_shots: int, num_queries: int | None, demo_seed: int, query_seed: int = 1234,
              held_out: dict[str, int] | None = None) -> Split:  # fmt: skip
        if self.demo_order == "sample":
            return super().split(num_shots, num_queries, demo_seed, query_seed, held_out)
        base = super().split(0, num_queries, demo_seed, query_seed, held_out)
        kept = {e.uid for v in base.held_out.values() for e in v}
        pool = [e for e in self.load()[0] if e.uid not in kept]  # the paper's file order, held-out inputs taken out
        if num_shots > len(pool):
            raise ValueError(f"num_shots={num_shots} exceeds the {len(pool)} demonstrations of task {self.name!r}")
        return Split(demos=pool[:num_shots], queries=base.queries, held_out=base.held_out)


@dataclass
class IllusionVQATask(HFPaperTask):
    """IllusionVQA soft localisation: which of the listed options is where the illusion is; answer a letter."""

    prompt: str = (
        "You are given an image, a question and lettered options. Reply with the letter of the correct "
        "option only, without explanation.\n"
    )

    name = "illusionvqa"
    metric = "option_letter"
    DATASET = "csebuetnlp/illusionVQA-Soft-Localization"
    SPLIT = "test"

    def example(self, row, index, images):
        options = [str(o) for o in row["options"]]
        if row["answer"] not in options:
            raise ValueError(f"{self.name}: row {index} answer {row['answer']!r} is not one of its options {options}")
        letters = _letters(len(options))
        lines = "\n".join(f"{l}. {o}" for l, o in zip(letters, options))
        return Example(
            uid=f"{self.name}/{self.split_name}/{index}",
            question=f"{self.prompt}{row['question']}\n{lines}",
            answer=letters[options.index(row["answer"])],
            images=tuple(images),
            meta={"index": index, "num_options": len(options)},
        )


@dataclass
class MMERealWorldLiteTask(HFPaperTask):
    """MME-RealWorld-lite (the lmms-eval packaging, whose `train` split is the benchmark): A-E multiple choice."""

    name = "mme_realworld_lite"
    metric = "mc_letter"
    DATASET = "yifanzhang114/MME-RealWorld-lite-lmms-eval"
    SPLIT = "train"
    IMAGE_COLUMN = "bytes"

    def example(self, row, index, images):
        options = [str(o).replace("（", "(").replace("）", ")") for o in row["multi-choice options"]]
        question = (
            f"{row['question']} The choices are listed below:\n" + "\n".join(options) + "\n"
            "Select the best answer to the above multiple-choice question based on the image. Respond with only "
            "the letter (A, B, C, D, or E) of the correct option.\nThe best answer is: "
        )
        return Example(
            uid=f"{self.name}/{row.get('index', index)}",
            question=question,
            answer=str(row["answer"]).strip(),
            images=tuple(images),
            meta={"index": index, "category": row.get("category"), "l2_category": row.get("l2-category")},
        )


@dataclass
class OKVQATask(HFPaperTask):
    """OK-VQA val2014: open questions needing outside knowledge; demo answer = the most frequent of 10 answers."""

    name = "ok_vqa"
    metric = "vqa"
    DATASET = "lmms-lab/OK-VQA"
    SPLIT = "val2014"
    POST_PROMPT: ClassVar[str] = (
        "\nWhen the provided information is insufficient, respond with 'Unanswerable'."
        "\nAnswer the question using a single word or phrase."
    )

    def example(self, row, index, images):
        answers = [str(a) for a in (row.get("answers") or [])]
        if not answers:
            raise ValueError(f"{self.name}: row {index} has no answers")
        top = Counter(answers).most_common(1)[0][0]
        return Example(
            uid=f"{self.name}/{row.get('question_id', index)}",
            question=f"{row['question']}{self.POST_PROMPT}",
            answer=top,
            images=tuple(images),
            references=tuple(answers),
            meta={"index": index},
        )
