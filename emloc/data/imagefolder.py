"""An ImageNet100-style image classification task from a local folder tree.

Layout: `root/<split>/<class_name>/*.jpg|png`; the answer is the class folder name with underscores
replaced by spaces and every example asks the same question. Images are found with a plain, sorted
directory walk (offline and deterministic). This module deliberately does not open or resize images, map
synset ids (e.g. n01440764) to names, or download anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emloc.data.base import Example, Task

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageFolderTask(Task):
    """root/<split>/<class>/<image>; demonstrations from `demo_split`, queries from `query_split`."""

    root: str
    question: str = "What category does the above image belong to?"
    metric: str = "substring"
    demo_split: str = "train"
    query_split: str = "val"
    instruction: str | None = None

    name = "imagefolder"

    def classes(self, split: str) -> list[str]:
        """Class folder names of `split`, sorted."""
        folder = Path(self.root) / split
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder split not found: {folder}")
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _examples(self, split: str) -> list[Example]:
        out = []
        for cls in self.classes(split):
            files = sorted(p for p in (Path(self.root) / split / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for f in files:
                out.append(Example(uid=f"{split}/{cls}/{f.name}", question=self.question,
                                   answer=cls.replace("_", " "), images=(str(f),), meta={"class": cls}))  # fmt: skip
        if not out:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {Path(self.root) / split}")
        return out

    def load(self) -> tuple[list[Example], list[Example]]:
        return self._examples(self.demo_split), self._examples(self.query_split)
