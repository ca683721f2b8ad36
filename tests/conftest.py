"""Shared fixtures: tiny random adapters of every supported family (offline, CPU, fp32) and small demo sets."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest
import torch

from emloc.data.base import Example
from emloc.experiment.config import compose as runner_compose
from emloc.models.loading import load
from emloc.utils.storage import conf_dir

TEXT_FAMILIES = ("llama", "qwen2")
VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl")

# one thread per pytest-xdist worker (`make test` runs 2 on 2 cores), else both cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session", params=TEXT_FAMILIES + VL_FAMILIES)
def adapter(request):
    return load(f"tiny:{request.param}")


@pytest.fixture(scope="session")
def llama():
    return load("tiny:llama")


@pytest.fixture(scope="session")
def llama_eager():
    return load("tiny:llama", attn="eager")


@pytest.fixture(scope="session")
def qwen_vl():
    return load("tiny:qwen2_vl")


def colour_image(i: int):
    from PIL import Image

    palette = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]
    return Image.new("RGB", (56 + 8 * (i % 3), 56), palette[i % 4])


def make_demos(n: int, images: bool = False, offset: int = 0) -> list[Example]:
    labels = ["red", "green", "blue", "yellow"]
    return [
        Example(
            f"d{offset + i}",
            f"Item {offset + i}: what colour is it?",
            labels[(offset + i) % 4],
            images=(colour_image(offset + i),) if images else (),
        )
        for i in range(n)
    ]


@pytest.fixture
def demos_for():
    def build(adapter, n: int = 6, offset: int = 0):
        return make_demos(n, images=adapter.multimodal, offset=offset)

    return build


CONF = conf_dir()


def compose(overrides: list[str], output_dir=None):
    """The real `conf/` composed as `run.py` composes it (`emloc.experiment.config.compose`), outputs redirected to `output_dir`."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    return runner_compose(list(overrides) + extra)
