"""Tasks: demonstration pools, query sets and their metrics (see `base` for the contract)."""

from emloc.data.base import Example, Split, Task
from emloc.data.easy_vqa import EasyVQATask
from emloc.data.imagefolder import ImageFolderTask
from emloc.data.iso3166 import Iso3166Task
from emloc.data.jsonl import JsonlTask
from emloc.data.synthetic import SyntheticTask

__all__ = ["EasyVQATask", "Example", "ImageFolderTask", "Iso3166Task", "JsonlTask", "Split", "SyntheticTask", "Task"]
