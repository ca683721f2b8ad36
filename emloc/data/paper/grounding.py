"""The paper's grounding and video benchmarks: ScreenSpot REC (GUI element boxes) and YouCook2 (captions).

Both are `HFPaperTask`s (100-document demo pool carved from the evaluated split with seed 42). ScreenSpot is
scored per query by the predicted box (centre inside the target, IoU, ACC@t); a YouCook2 example carries its
clip as a video file, which the model sees through Qwen2-VL's video input (`num_frames` uniformly sampled frames,
decoded with PyAV when rendered, as the reference feeds it), and is scored by ROUGE-L per caption. Deliberately
not done here: decoding (`emloc.data.video`), corpus-level caption metrics (BLEU, METEOR, CIDEr) and LLM judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from emloc.data.base import Example
from emloc.data.metrics import BOX_THRESHOLDS, box_iou, box_scores, parse_box, rouge_l  # noqa: F401  (re-exported)
from emloc.data.paper.common import DatasetUnavailableError, HFPaperTask


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
    DATASET = "rootsautomation/ScreenSpot"
    SPLIT = "test"
    THRESHOLDS: ClassVar[tuple[float, ...]] = BOX_THRESHOLDS

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
        return box_scores(prediction, example)

    @property
    def metric(self) -> str:  # the registered metric of the chosen box score
        return f"box_{self.box_metric}"


@dataclass
class YouCook2Task(HFPaperTask):
    """YouCook2 val captioning. Each example carries its video file (`videos=(path,)`, under `video_root`); the
    renderer samples `num_frames` uniformly spaced frames (PyAV, `pip install 'emloc[video]'`) and the model
    sees them as one video (Qwen2-VL video tokens, 2 frames per temporal patch), as in the paper."""

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

    def example(self, row, index, images):
        video = Path(self.video_root).expanduser() / row["video_path"]
        if not video.is_file():
            raise DatasetUnavailableError(
                f"{self.name}: video {video} of dataset {self.dataset!r} (row {index}) not found"
            )
        return Example(
            uid=f"{self.name}/{index}",
            question=self.PROMPT,
            answer=str(row["sentence"]).strip(),
            videos=(str(video),),
            num_frames=self.num_frames,
            meta={"index": index, "video": str(video)},
        )
