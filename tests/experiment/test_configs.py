"""Every option of every config group composes, and everything that can be built offline is built."""

import pytest
from hydra.utils import instantiate

from emloc.experiment.runner import plan
from tests.conftest import CONF, compose

GROUPS = ("model", "task", "method", "backend", "logger", "experiment", "debug")
OFFLINE_TASKS = ("iso3166", "iso3166_letters", "easy_vqa", "synthetic")


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes(group, option, tmp_path):
    cfg = compose([f"{group}={option}"], tmp_path)
    assert cfg.paths.output_dir == str(tmp_path)
    if group == "method":
        method = instantiate(cfg.method)  # its class declares its own option, a file of this group
        assert (CONF / "method" / f"{method.option}.yaml").is_file() and method.describe().startswith(method.label)
    if group == "task" and option in OFFLINE_TASKS:
        p = plan(compose([f"task={option}", "task.num_shots=4", "task.num_queries=4"], tmp_path))
        assert len(p.demos) == 4 and len(p.queries) == 4


@pytest.mark.parametrize("option", [o for o in options("model") if o.startswith("tiny")])
def test_tiny_models_load(option, tmp_path):
    from emloc.models.loading import load

    cfg = compose([f"model={option}"], tmp_path)
    adapter = load(**cfg.model, **cfg.backend)
    assert adapter.num_layers >= 2


def test_signature_ignores_where_and_how_it_is_logged(tmp_path):
    base = plan(compose(["debug=tiny"], tmp_path)).signature
    assert (
        plan(compose(["debug=tiny", "logger=wandb_offline", "tags=[a]", "force=true"], tmp_path / "o")).signature
        == base
    )
    assert plan(compose(["debug=tiny", "method.js_threshold=0.01"], tmp_path)).signature != base
    assert plan(compose(["debug=tiny", "task.demo_seed=1"], tmp_path)).signature != base


def test_npu_backend_says_what_is_missing():
    from emloc.models.loading import resolve_device

    with pytest.raises(ValueError, match=r"backend.device=npu: needs torch_npu.*Fix: pip install torch_npu"):
        resolve_device("npu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")


PAPER_DATA = {
    "imagenet100": "ImageNet100",
    "illusionvqa": "csebuetnlp/illusionVQA-Soft-Localization",
    "mme_realworld_lite": "yifanzhang114/MME-RealWorld-lite-lmms-eval",
    "ok_vqa": "lmms-lab/OK-VQA",
    "screenspot_rec": "rootsautomation/ScreenSpot",
    "youcook2": "lmms-lab/YouCook2",
}


@pytest.mark.parametrize("task", sorted(PAPER_DATA))
def test_paper_task_without_data_fails_fast_naming_the_dataset(task, tmp_path, monkeypatch):
    """Offline and without a local copy, planning a paper task stops (before any model load) naming the dataset
    and where it was looked for."""
    import re
    import time

    from emloc.data.paper import DatasetUnavailableError

    monkeypatch.setattr("emloc.models.loading.load", lambda *a, **k: pytest.fail("a model was loaded"))
    extra = [] if task in ("imagenet100", "youcook2") else [f"task.loader.cache_dir={tmp_path}/hf"]
    cfg = compose(
        [f"experiment=qwen2vl7b_{task}_{200 if task == 'imagenet100' else 20}", f"paths.data_dir={tmp_path}", *extra],
        tmp_path,
    )
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=re.escape(PAPER_DATA[task])) as err:
        plan(cfg)
    assert time.perf_counter() - start < 60
    where = str(tmp_path) if task in ("imagenet100", "youcook2") else "hf download --repo-type dataset"
    assert where in str(err.value)


PAPER_SETTINGS = {  # task: (shots, demos per chunk, pixels per image, max new tokens, batch size)
    "imagenet100": (200, 20, 64 * 28 * 28, 32, 1),
    "illusionvqa": (20, 4, 256 * 28 * 28, 16, 4),
    "mme_realworld_lite": (20, 4, 256 * 28 * 28, 16, 4),
    "ok_vqa": (20, 4, 256 * 28 * 28, 128, 4),
    "screenspot_rec": (20, 4, 256 * 28 * 28, 128, 4),
    "youcook2": (20, 4, 256 * 28 * 28, 128, 1),
}


@pytest.mark.parametrize("task", sorted(PAPER_SETTINGS))
def test_paper_experiments_pin_the_reference_settings(task, tmp_path):
    from omegaconf import OmegaConf

    shots, chunk, pixels, tokens, batch = PAPER_SETTINGS[task]
    cfg = compose([f"experiment=qwen2vl7b_{task}_{shots}"], tmp_path)
    c = OmegaConf.to_container(cfg, resolve=True)
    assert c["model"] == {"source": "Qwen/Qwen2-VL-7B-Instruct", "seed": 0, "min_pixels": pixels, "max_pixels": pixels,
                          "revision": None}  # fmt: skip
    assert c["backend"] == {"device": "cuda", "dtype": "bfloat16", "attn": "sdpa"}
    assert (c["task"]["name"], c["task"]["num_shots"], c["eval"]["max_new_tokens"], c["eval"]["batch_size"]) == (
        task,
        shots,
        tokens,
        batch,
    )
    assert c["task"]["demo_seed"] == 42 or c["task"]["loader"]["demo_order"] == "first"
    method = instantiate(cfg.method)
    assert (method.chunk_size, method.js_threshold, method.keep_ratios, method.search, method.warm_search) == (
        chunk,
        0.005,
        (0.1, 0.2, 0.5),
        "greedy",
        None,
    )
    for other in ("zero_shot", "full_context"):  # the baselines compose under the same experiment
        assert instantiate(compose([f"experiment=qwen2vl7b_{task}_{shots}", f"method={other}"], tmp_path).method).option
