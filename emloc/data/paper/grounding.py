"""The paper's grounding and video benchmarks: ScreenSpot REC (GUI element boxes) and YouCook2 (captions).

Both are `HFPaperTask`s (100-document demo pool carved from the evaluated split with seed 42). ScreenSpot is
scored per query by the predicted box (centre inside the target, IoU, ACC@t); YouCook2 clips are shown as
`num_frames` uniformly spaced frames (decoded with PyAV) and scored by ROUGE-L per caption. Deliberately not
done here: video tokens (the reference feeds Qwen2-VL video input), corpus-level caption metrics (BLEU, METEOR,
CIDEr) and LLM judges.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from emloc.data.base import Example
from emloc.data.paper.common import DatasetUnavailableError, HFPaperTask, cache_root

_BOX = re.compile(
    r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\])]"
)


def parse_box(text: str) -> list[float] | None:
    """The first four comma-separated numbers in () or []; values on a 0-1000 grid are rescaled to [0, 1]."""
    match = _BOX.search(str(text))
    if not match:
        return None
    box = [float(v) for v in match.groups()]
    return [v / 1000 for v in box] if max(box) > 1 else box


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class ScreenSpotRECTask(HFPaperTask):
    """ScreenSpot referring-expression comprehension: the box (x1, y1, x2, y2 in [0, 1]) of a GUI element.

    `box_metric` picks the per-query score reported as accuracy: "center_acc" (the predicted box's centre lies in
    the target box), "iou", or "acc@<t>" (IoU >= t). `scores()` returns all of them.
    """

    box_metric: str = "center_acc"
    prompt: str = (
        "Boxes are written as (x1, y1, x2, y2): the top-left and bottom-right corners as fractions of the "
        "image width and height between 0 and 1. Give the bounding box of the element described by: "
    )

    name = "screenspot_rec"
    metric = "box"
    DATASET = "rootsautomation/ScreenSpot"
    SPLIT = "test"
    THRESHOLDS: ClassVar[tuple[float, ...]] = (0.1, 0.3, 0.5, 0.7, 0.9)

    def __post_init__(self) -> None:
        super().__post_init__()
        allowed = {"center_acc", "iou", *(f"acc@{t}" for t in self.THRESHOLDS)}
        if self.box_metric not in allowed:
            raise ValueError(f"box_metric must be one of {sorted(allowed)}, got {self.box_metric!r}")

    def example(self, row, index, images):
        box = [float(v) for v in row["bbox"]]
        if len(box) != 4:
            raise ValueError(f"{self.name}: row {index} bbox {row['bbox']!r} is not 4 numbers")
        return Example(
            uid=f"{self.name}/{index}",
            question=f"{self.prompt}{row['instruction']}",
            answer=str(box),
            images=tuple(images),
            meta={
                "index": index,
                "bbox": box,
                "data_type": row.get("data_type"),
                "data_source": row.get("data_source"),
            },
        )

    def scores(self, example: Example, prediction: str) -> dict[str, float]:
        target, pred = example.meta.get("bbox") or parse_box(example.answer), parse_box(prediction)
        if pred is None:
            return {"iou": 0.0, "center_acc": 0.0, **{f"acc@{t}": 0.0 for t in self.THRESHOLDS}}
        iou = box_iou(pred, target)
        cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
        center = float(target[0] <= cx <= target[2] and target[1] <= cy <= target[3])
        return {"iou": iou, "center_acc": center, **{f"acc@{t}": float(iou >= t) for t in self.THRESHOLDS}}

    def score(self, example: Example, prediction: str) -> float:
        return self.scores(example, prediction)[self.box_metric]


def rouge_l(prediction: str, reference: str, beta: float = 1.2) -> float:
    """ROUGE-L F-measure on lowercased, punctuation-free word tokens (beta 1.2, as in the COCO caption toolkit)."""

    def words(text: str) -> list[str]:
        return "".join(" " if c in string.punctuation else c for c in str(text).lower()).split()

    a, b = words(prediction), words(reference)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


@dataclass
class YouCook2Task(HFPaperTask):
    """YouCook2 val captioning. A video becomes `num_frames` uniformly spaced frames shown as images (the paper feeds
    Qwen2-VL video tokens instead), decoded with PyAV (`pip install av`) from `video_root`."""

    video_root: str | None = None
    num_frames: int = 8

    name = "youcook2"
    metric = "rouge_l"
    DATASET = "lmms-lab/YouCook2"
    SPLIT = "val"
    IMAGE_COLUMN = None
    PROMPT: ClassVar[str] = "Provide a one-sentence caption for the provided video."

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(f"num_frames must be an integer >= 1, got {self.num_frames!r}")

    def rows(self):
        if not self.video_root or not Path(self.video_root).expanduser().is_dir():
            raise DatasetUnavailableError(
                f"{self.name}: the YouCook2 videos of dataset {self.dataset!r} are not at "
                f"video_root={self.video_root!r}; extract the dataset's video archives there "
                "and set task.loader.video_root"
            )
        return super().rows()

    def frames(self, video: Path, index: int) -> list[str]:
        folder = cache_root(self.image_cache) / self.name / f"frames{self.num_frames}" / video.stem
        paths = [folder / f"{k:02d}.jpg" for k in range(self.num_frames)]
        if all(p.is_file() for p in paths):
            return [str(p) for p in paths]
        try:
            import av
        except ImportError as err:
            raise RuntimeError(
                f"{self.name}: decoding the YouCook2 videos needs PyAV (`pip install av`): {err}"
            ) from err
        if not video.is_file():
            raise DatasetUnavailableError(
                f"{self.name}: video {video} of dataset {self.dataset!r} (row {index}) not found"
            )
        with av.open(str(video)) as container:
            decoded = [f.to_image() for f in container.decode(video=0)]
        if not decoded:
            raise ValueError(f"{self.name}: no frames decoded from {video}")
        picks = [round(k * (len(decoded) - 1) / max(1, self.num_frames - 1)) for k in range(self.num_frames)]
        folder.mkdir(parents=True, exist_ok=True)
        for p, k in zip(paths, picks):
            decoded[k].convert("RGB").save(p, format="JPEG", quality=95)
        return [str(p) for p in paths]

    def example(self, row, index, images):
        video = Path(self.video_root).expanduser() / row["video_path"]
        return Example(
            uid=f"{self.name}/{index}",
            question=self.PROMPT,
            answer=str(row["sentence"]).strip(),
            images=tuple(self.frames(video, index)),
            meta={"index": index, "video": str(video)},
        )

    def score(self, example: Example, prediction: str) -> float:
        return rouge_l(prediction, example.answer)
