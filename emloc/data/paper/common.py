"""Shared machinery of the paper's Hugging Face benchmarks: loading, the demo-pool carve-out, image files.

`HFPaperTask` reads one split of a Hugging Face dataset from a local copy (`path`: a `save_to_disk` folder or a
downloaded snapshot of the dataset repository) or from the hub / HF cache, carves the paper's 100-document
demonstration pool out of it (`carve_fewshot_pool`, seed 42) and turns every row into an `Example` through the
subclass's `example()`. Images are written once as files under `$EMLOC_CACHE/datasets/` (default
`~/.cache/emloc/datasets/`), so examples hold file paths, not decoded images.

When the data are not there (e.g. HF offline mode and nothing cached) `load()` fails at once with
`DatasetUnavailableError` (both a `FileNotFoundError` and a `RuntimeError`) naming the dataset, the split and
how to provide it. Nothing here downloads anything when HF offline mode is set.
"""

from __future__ import annotations

import base64
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from emloc.data.base import Example, Task
from emloc.utils import storage
from emloc.utils.storage import atomic_write

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
    return Path(override).expanduser() if override else storage.cache_root() / "datasets"


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


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
        where = (
            f"local copy {self.path}"
            if self.path
            else f"the Hugging Face hub / cache ({self.cache_dir or 'HF default'})"
        )
        return f"{self.name}: dataset {self.dataset!r} split {self.split_name!r} from {where}"

    def rows(self):
        """The evaluated split as a `datasets.Dataset`; raises `DatasetUnavailableError` naming the dataset."""
        import datasets

        hint = (
            f"download it on a connected machine (`hf download --repo-type dataset {self.dataset} "
            f"--local-dir <dir>`) and pass task.loader.path=<dir>, or fill the HF cache"
        )
        if self.path:
            local = Path(self.path).expanduser()
            if not local.exists():
                raise DatasetUnavailableError(
                    f"{self.name}: local copy of dataset {self.dataset!r} not found at {local}; {hint}"
                )
            try:
                if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                    ds = datasets.load_from_disk(str(local))
                    if isinstance(ds, datasets.DatasetDict):
                        if self.split_name not in ds:
                            raise DatasetUnavailableError(
                                f"{self.name}: {local} (dataset {self.dataset!r}) has no split "
                                f"{self.split_name!r}; splits: {sorted(ds)}"
                            )
                        ds = ds[self.split_name]
                    return ds
                return datasets.load_dataset(str(local), split=self.split_name, cache_dir=self.cache_dir)
            except DatasetUnavailableError:
                raise
            except (FileNotFoundError, ValueError) as err:
                raise DatasetUnavailableError(
                    f"{self.name}: cannot read dataset {self.dataset!r} from {local}: {err}"
                ) from err
        try:
            return datasets.load_dataset(
                self.dataset, split=self.split_name, revision=self.revision, cache_dir=self.cache_dir
            )
        except (ConnectionError, FileNotFoundError, OSError) as err:
            mode = "HF offline mode is set and it is not in the HF cache" if _offline() else "it could not be fetched"
            raise DatasetUnavailableError(
                f"{self.name}: dataset {self.dataset!r} (split {self.split_name!r}) is not "
                f"available: {mode}; {hint}. ({type(err).__name__}: {err})"
            ) from err

    def image_folder(self, ds) -> Path:
        fingerprint = getattr(ds, "_fingerprint", None) or "local"
        return (
            cache_root(self.image_cache)
            / self.name
            / str(self.dataset).replace("/", "__")
            / f"{self.split_name}-{fingerprint}"
        )

    def materialise_images(self, ds) -> list[list[str]]:
        """Every row's image(s) as files (written once, atomically); returns per row a list of paths."""
        import datasets

        column = self.IMAGE_COLUMN
        if column is None:
            return [[] for _ in range(len(ds))]
        if column not in ds.column_names:
            raise DatasetUnavailableError(
                f"{self.name}: dataset {self.dataset!r} has no {column!r} column (columns: {ds.column_names})"
            )
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
                atomic_write(target, data)
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
            log.info(
                "%s: %d rows -> demo pool %d (seed %d) + %d queries",
                self.describe(),
                len(rows),
                len(pool_idx),
                self.pool_seed,
                len(rest_idx),
            )
        return self._loaded
