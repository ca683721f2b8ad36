"""Bring-your-own data: a task read from local JSON-lines files.

Each row gives a question, an answer (a string, or a list of acceptable answers for VQA-style scoring),
optionally image path(s) and candidate choices. Rows are read with HF `datasets` from local files only.
Demonstrations come from `demo_path` when given, else from the same file as the queries (`Task.split` keeps
the two disjoint). This module deliberately does not download, open images or guess column names.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emloc.data.base import Example, Task

log = logging.getLogger(__name__)


@dataclass
class JsonlTask(Task):
    """Questions/answers (and optional images and choices) from local `.jsonl` files."""

    path: str
    image_root: str | None = None
    question_key: str = "question"
    answer_key: str = "answer"
    image_key: str = "image"
    choices_key: str | None = None
    metric: str = "exact_match"
    demo_path: str | None = None
    uid_key: str = "id"
    instruction: str | None = None
    cache_dir: str | None = None  # where `datasets` keeps its Arrow copy (default: the HF datasets cache)

    name = "jsonl"

    def _rows(self, path: str) -> list[dict[str, Any]]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"jsonl file not found: {path}")
        from datasets import load_dataset

        return list(load_dataset("json", data_files=str(path), split="train", cache_dir=self.cache_dir))

    def _images(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        root = Path(self.image_root) if self.image_root else Path(path).parent
        out = []
        for item in [value] if isinstance(value, str) else list(value):
            full = Path(item) if os.path.isabs(item) else root / item
            if not full.is_file():
                raise FileNotFoundError(f"image {item!r} of {path} not found at {full}")
            out.append(str(full))
        return tuple(out)

    def _examples(self, path: str) -> list[Example]:
        rows = self._rows(path)
        stem = Path(path).stem
        out = []
        for i, row in enumerate(rows):
            for key in (self.question_key, self.answer_key):
                if key not in row:
                    raise KeyError(f"row {i} of {path} has no {key!r} field (fields: {sorted(row)})")
            answer, references = row[self.answer_key], ()
            if isinstance(answer, list):  # several acceptable answers: the most common one is the reference
                references = tuple(str(a) for a in answer)
                answer = Counter(references).most_common(1)[0][0] if references else ""
            choices = tuple(str(c) for c in row[self.choices_key]) if self.choices_key else ()
            uid = row.get(self.uid_key)
            out.append(Example(
                uid=f"{stem}:{uid if uid is not None else i}", question=str(row[self.question_key]),
                answer=str(answer), images=self._images(row.get(self.image_key), path), choices=choices,
                references=references, meta={"source": str(path), "row": i},
            ))  # fmt: skip
        log.info("loaded %d rows from %s", len(out), path)
        return out

    def load(self) -> tuple[list[Example], list[Example]]:
        queries = self._examples(self.path)
        demos = self._examples(self.demo_path) if self.demo_path else queries
        return demos, queries
