"""The paper's benchmarks (EMLoC, ICML 2025, Table 1) as `Task`s, with the paper's split protocol.

| task | data | demos | queries | score |
|---|---|---|---|---|
| `ImageNet100Task` | local ImageNet-1k folder + the paper's two JSON lists | first k of the 200-image train list (2 per class, file order) | the 5,000 val images | ground truth (dots and spaces removed) is a substring of the prediction |
| `IllusionVQATask` | HF `csebuetnlp/illusionVQA-Soft-Localization`, test | 100-doc pool | the rest | option letter |
| `MMERealWorldLiteTask` | HF `yifanzhang114/MME-RealWorld-lite-lmms-eval`, train | 100-doc pool | the rest | option letter A-E |
| `OKVQATask` | HF `lmms-lab/OK-VQA`, val2014 | 100-doc pool | the rest | VQA soft accuracy |
| `ScreenSpotRECTask` | HF `rootsautomation/ScreenSpot`, test | 100-doc pool | the rest | centre of the predicted box inside the target (or IoU / ACC@t) |
| `YouCook2Task` | HF `lmms-lab/YouCook2`, val + the extracted videos | 100-doc pool | the rest | ROUGE-L (per caption) |

Split protocol (method.md §7): for every task but ImageNet the reference carves a demonstration pool of 100
documents out of the evaluated split, `random.Random(42).sample(range(N), 100)` in sampled order, and evaluates
the remaining N - 100 in index order; `load()` returns exactly (pool, rest). Demonstrations are then drawn from
the pool by `Task.split` with `demo_seed` (the paper uses 42, which reproduces the reference's
`random.seed(42); random.sample(range(100), k)`). ImageNet uses the first k demos of its list in file order
(`demo_order = "first"`).

Data are read with HF `datasets` from a local copy (`path`: a `save_to_disk` folder or a downloaded snapshot of
the dataset repository) or from the hub / hub cache. When the data are not there (e.g. offline and not cached),
`load()` fails at once with `DatasetUnavailableError` (a `FileNotFoundError` and a `RuntimeError`) naming the
dataset and how to provide it. Images are written once as files under `$EMLOC_CACHE/datasets/` (default
`~/.cache/emloc/datasets/`) so examples hold file paths, not decoded images.

Deliberately not done here: video tokens (YouCook2 is approximated by 8 uniformly sampled frames shown as
images, needs PyAV), corpus-level caption metrics (BLEU, METEOR, CIDEr), LLM judges, and any download of data
when HF offline mode is set.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from emloc.data.base import Example, Split, Task

log = logging.getLogger(__name__)

POOL_SIZE = 100
POOL_SEED = 42


class DatasetUnavailableError(FileNotFoundError, RuntimeError):
    """A benchmark's data cannot be found locally (and may not be downloaded). The message names the dataset."""


def carve_fewshot_pool(n: int, size: int = POOL_SIZE, seed: int = POOL_SEED) -> tuple[list[int], list[int]]:
    """The paper's split of N evaluated documents: (pool indices in sampled order, the others ascending)."""
    if size < 1 or size >= n:
        raise ValueError(f"cannot carve a demonstration pool of {size} out of {n} documents")
    pool = random.Random(seed).sample(range(n), size)
    taken = set(pool)
    return pool, [i for i in range(n) if i not in taken]


def cache_root(override: str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("EMLOC_CACHE") or Path.home() / ".cache" / "emloc") / "datasets"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] in (b"GIF8",):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


# =============================================================================================================
# HF-hosted benchmarks: shared loading, carve-out and image materialisation
# =============================================================================================================
@dataclass
class HFPaperTask(Task):
    """A split of a Hugging Face dataset, carved into the paper's 100-document demo pool and the evaluated rest.

    Parameters
    ----------
    path : local copy of the dataset (a `save_to_disk` folder, or a folder with the repository's data files);
        None reads `dataset` from the hub or the HF cache (offline: the cache only).
    dataset, split, revision : the hub dataset, the evaluated split, an optional revision.
    cache_dir : HF datasets cache (default: the HF default).
    image_cache : where images are written as files (default `$EMLOC_CACHE/datasets`).
    pool_size, pool_seed : the carve-out (paper: 100, 42).
    """

    path: str | None = None
    dataset: str | None = None
    split_name: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    image_cache: str | None = None
    pool_size: int = POOL_SIZE
    pool_seed: int = POOL_SEED

    DATASET: ClassVar[str] = ""
    SPLIT: ClassVar[str] = "test"
    IMAGE_COLUMN: ClassVar[str | None] = "image"
    demo_order: str = "sample"

    def __post_init__(self) -> None:
        self.dataset = self.dataset or self.DATASET
        self.split_name = self.split_name or self.SPLIT
        if not isinstance(self.pool_size, int) or self.pool_size < 1:
            raise ValueError(f"pool_size must be an integer >= 1, got {self.pool_size!r}")
        self._loaded: tuple[list[Example], list[Example]] | None = None

    # ----------------------------------------------------------------------------------------------- loading
    def describe(self) -> str:
        where = f"local copy {self.path}" if self.path else f"the Hugging Face hub / cache ({self.cache_dir or 'HF default'})"
        return f"{self.name}: dataset {self.dataset!r} split {self.split_name!r} from {where}"

    def rows(self):
        """The evaluated split as a `datasets.Dataset`; raises `DatasetUnavailableError` naming the dataset."""
        import datasets

        hint = (f"download it on a connected machine (`huggingface-cli download --repo-type dataset {self.dataset} "
                f"--local-dir <dir>`) and pass task.loader.path=<dir>, or fill the HF cache")
        if self.path:
            local = Path(self.path).expanduser()
            if not local.exists():
                raise DatasetUnavailableError(f"{self.name}: local copy of dataset {self.dataset!r} not found at {local}; {hint}")
            try:
                if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                    ds = datasets.load_from_disk(str(local))
                    if isinstance(ds, datasets.DatasetDict):
                        if self.split_name not in ds:
                            raise DatasetUnavailableError(f"{self.name}: {local} (dataset {self.dataset!r}) has no split "
                                                          f"{self.split_name!r}; splits: {sorted(ds)}")
                        ds = ds[self.split_name]
                    return ds
                return datasets.load_dataset(str(local), split=self.split_name, cache_dir=self.cache_dir)
            except DatasetUnavailableError:
                raise
            except (FileNotFoundError, ValueError) as err:
                raise DatasetUnavailableError(f"{self.name}: cannot read dataset {self.dataset!r} from {local}: {err}") from err
        try:
            return datasets.load_dataset(self.dataset, split=self.split_name, revision=self.revision, cache_dir=self.cache_dir)
        except (ConnectionError, FileNotFoundError, OSError) as err:
            mode = "HF offline mode is set and it is not in the HF cache" if _offline() else "it could not be fetched"
            raise DatasetUnavailableError(f"{self.name}: dataset {self.dataset!r} (split {self.split_name!r}) is not "
                                          f"available: {mode}; {hint}. ({type(err).__name__}: {err})") from err

    def image_folder(self, ds) -> Path:
        fingerprint = getattr(ds, "_fingerprint", None) or "local"
        return cache_root(self.image_cache) / self.name / str(self.dataset).replace("/", "__") / f"{self.split_name}-{fingerprint}"

    def materialise_images(self, ds) -> list[list[str]]:
        """Every row's image(s) as files (written once, atomically); returns per row a list of paths."""
        import datasets

        column = self.IMAGE_COLUMN
        if column is None:
            return [[] for _ in range(len(ds))]
        if column not in ds.column_names:
            raise DatasetUnavailableError(f"{self.name}: dataset {self.dataset!r} has no {column!r} column "
                                          f"(columns: {ds.column_names})")
        folder = self.image_folder(ds)
        folder.mkdir(parents=True, exist_ok=True)
        feature = ds.features[column]
        raw = ds.select_columns([column])
        if isinstance(feature, datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
        out: list[list[str]] = []
        for i, row in enumerate(raw):
            item = row[column]
            data, src = self._image_bytes(item)
            if data is None and src and Path(src).is_file():
                out.append([src])
                continue
            if data is None:
                raise DatasetUnavailableError(f"{self.name}: row {i} of dataset {self.dataset!r} has no image data")
            target = folder / f"{i:06d}{_image_suffix(data)}"
            if not target.is_file():
                _atomic_write(target, data)
            out.append([str(target)])
        return out

    @staticmethod
    def _image_bytes(item: Any) -> tuple[bytes | None, str | None]:
        if isinstance(item, dict):
            return item.get("bytes"), item.get("path")
        if isinstance(item, (bytes, bytearray)):
            return bytes(item), None
        if isinstance(item, str):  # a path, or base64 (MME-RealWorld's `bytes` column)
            if len(item) < 1024 and "\n" not in item and os.path.isfile(item):
                return None, item
            return base64.b64decode(item), None
        from io import BytesIO

        buf = BytesIO()  # a decoded PIL image (datasets without an Image feature)
        item.convert("RGB").save(buf, format="PNG")
        return buf.getvalue(), None

    def example(self, row: dict[str, Any], index: int, images: list[str]) -> Example:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> tuple[list[Example], list[Example]]:
        if self._loaded is None:
            ds = self.rows()
            pool_idx, rest_idx = carve_fewshot_pool(len(ds), self.pool_size, self.pool_seed)
            images = self.materialise_images(ds)
            text = ds.remove_columns([self.IMAGE_COLUMN]) if self.IMAGE_COLUMN in ds.column_names else ds
            rows = text.to_list()
            examples = [self.example(rows[i], i, images[i]) for i in range(len(rows))]
            self._loaded = [examples[i] for i in pool_idx], [examples[i] for i in rest_idx]
            log.info("%s: %d rows -> demo pool %d (seed %d) + %d queries", self.describe(), len(rows),
                     len(pool_idx), self.pool_seed, len(rest_idx))
        return self._loaded


def _letters(n: int) -> str:
    return string.ascii_uppercase[:n]


# =============================================================================================================
@dataclass
class IllusionVQATask(HFPaperTask):
    """IllusionVQA soft localisation: which of the listed options is where the illusion is; answer a letter."""

    prompt: str = ("You are given an image, a question and lettered options. Reply with the letter of the correct "
                   "option only, without explanation.\n")

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
        return Example(uid=f"{self.name}/{self.split_name}/{index}", question=f"{self.prompt}{row['question']}\n{lines}",
                       answer=letters[options.index(row["answer"])], images=tuple(images),
                       meta={"index": index, "num_options": len(options)})

    def score(self, example: Example, prediction: str) -> float:
        """The reference's filter: a leading 'X.' gives the letter, else the whole reply (case and punctuation
        ignored) must equal the letter."""
        match = re.match(r"^\s*([A-Z])\.", str(prediction))
        got = match.group(1) if match else str(prediction)
        clean = "".join(c for c in got if c not in string.punctuation).strip().lower()
        return float(clean == example.answer.lower())


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
        question = (f"{row['question']} The choices are listed below:\n" + "\n".join(options) + "\n"
                    "Select the best answer to the above multiple-choice question based on the image. Respond with only "
                    "the letter (A, B, C, D, or E) of the correct option.\nThe best answer is: ")
        return Example(uid=f"{self.name}/{row.get('index', index)}", question=question, answer=str(row["answer"]).strip(),
                       images=tuple(images), meta={"index": index, "category": row.get("category"),
                                                   "l2_category": row.get("l2-category")})


@dataclass
class OKVQATask(HFPaperTask):
    """OK-VQA val2014: open questions needing outside knowledge; demo answer = the most frequent of 10 answers."""

    name = "ok_vqa"
    metric = "vqa"
    DATASET = "lmms-lab/OK-VQA"
    SPLIT = "val2014"
    POST_PROMPT: ClassVar[str] = ("\nWhen the provided information is insufficient, respond with 'Unanswerable'."
                                  "\nAnswer the question using a single word or phrase.")

    def example(self, row, index, images):
        answers = [str(a) for a in (row.get("answers") or [])]
        if not answers:
            raise ValueError(f"{self.name}: row {index} has no answers")
        top = Counter(answers).most_common(1)[0][0]
        return Example(uid=f"{self.name}/{row.get('question_id', index)}", question=f"{row['question']}{self.POST_PROMPT}",
                       answer=top, images=tuple(images), references=tuple(answers), meta={"index": index})


_BOX = re.compile(r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\])]")


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
    prompt: str = ("Boxes are written as (x1, y1, x2, y2): the top-left and bottom-right corners as fractions of the "
                   "image width and height between 0 and 1. Give the bounding box of the element described by: ")

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
        return Example(uid=f"{self.name}/{index}", question=f"{self.prompt}{row['instruction']}", answer=str(box),
                       images=tuple(images), meta={"index": index, "bbox": box, "data_type": row.get("data_type"),
                                                   "data_source": row.get("data_source")})

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
            raise DatasetUnavailableError(f"{self.name}: the YouCook2 videos of dataset {self.dataset!r} are not at "
                                          f"video_root={self.video_root!r}; extract the dataset's video archives there "
                                          "and set task.loader.video_root")
        return super().rows()

    def frames(self, video: Path, index: int) -> list[str]:
        folder = cache_root(self.image_cache) / self.name / f"frames{self.num_frames}" / video.stem
        paths = [folder / f"{k:02d}.jpg" for k in range(self.num_frames)]
        if all(p.is_file() for p in paths):
            return [str(p) for p in paths]
        try:
            import av
        except ImportError as err:
            raise RuntimeError(f"{self.name}: decoding the YouCook2 videos needs PyAV (`pip install av`): {err}") from err
        if not video.is_file():
            raise DatasetUnavailableError(f"{self.name}: video {video} of dataset {self.dataset!r} (row {index}) not found")
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
        return Example(uid=f"{self.name}/{index}", question=self.PROMPT, answer=str(row["sentence"]).strip(),
                       images=tuple(self.frames(video, index)), meta={"index": index, "video": str(video)})

    def score(self, example: Example, prediction: str) -> float:
        return rouge_l(prediction, example.answer)


# =============================================================================================================
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
        tail = parts[parts.index("imagenet1k") + 1:] if "imagenet1k" in parts else parts[-3:]
        return Path(self.root).expanduser().joinpath(*tail)

    def _read(self, path: str | None, which: str) -> list[Example]:
        label = f"ImageNet100 {which} list (lmms_eval_ImageNet100_{which}.json, from the EMLoC authors' repository)"
        if not path or not Path(path).expanduser().is_file():
            raise DatasetUnavailableError(f"{self.name}: {label} not found at {path!r}; set task.loader.{which}_list")
        rows = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        if not self.root or not Path(self.root).expanduser().is_dir():
            raise DatasetUnavailableError(f"{self.name}: ImageNet-1k image folder not found at root={self.root!r} "
                                          "(expects <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG)")
        out, missing = [], []
        for i, row in enumerate(rows):
            image = self._resolve(row["image"])
            if self.check_images and not image.is_file():
                missing.append(str(image))
            wnid = image.parent.name
            out.append(Example(uid=f"{self.name}/{which}/{wnid}/{image.name}", question=row["question"],
                               answer=str(row["answer"]).strip(), images=(str(image),),
                               meta={"class": wnid, "row": i}))
        if missing:
            raise DatasetUnavailableError(f"{self.name}: {len(missing)} of {len(rows)} ImageNet-1k images of the {which} "
                                          f"list are missing under {self.root}, e.g. {missing[0]}")
        return out

    def load(self) -> tuple[list[Example], list[Example]]:
        if self._loaded is None:
            self._loaded = self._read(self.train_list, "train"), self._read(self.val_list, "val")
        return self._loaded

    def split(self, num_shots: int, num_queries: int | None, demo_seed: int, query_seed: int = 1234) -> Split:
        if self.demo_order == "sample":
            return super().split(num_shots, num_queries, demo_seed, query_seed)
        base = super().split(0, num_queries, demo_seed, query_seed)
        pool = self.load()[0]
        if num_shots > len(pool):
            raise ValueError(f"num_shots={num_shots} exceeds the {len(pool)} demonstrations of task {self.name!r}")
        return Split(demos=pool[:num_shots], queries=base.queries)

    def score(self, example: Example, prediction: str) -> float:
        """The paper's rule: lowercase, remove '.' and spaces from both; correct if the truth is in the prediction."""
        def squash(text: str) -> str:
            return str(text).lower().replace(".", "").replace(" ", "")

        truth = squash(example.answer)
        return float(bool(truth) and truth in squash(prediction))


PAPER_TASKS: dict[str, type[Task]] = {
    "imagenet100": ImageNet100Task,
    "illusionvqa": IllusionVQATask,
    "mme_realworld_lite": MMERealWorldLiteTask,
    "ok_vqa": OKVQATask,
    "screenspot_rec": ScreenSpotRECTask,
    "youcook2": YouCook2Task,
}
