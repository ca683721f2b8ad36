"""Every option of every config group composes, and everything that can be built offline is built."""

import pytest
from hydra.utils import instantiate

from emloc.runner import plan
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
        method = instantiate(cfg.method)
        assert method.name
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
    assert plan(compose(["debug=tiny", "logger=wandb_offline", "tags=[a]", "force=true"], tmp_path / "o")).signature == base
    assert plan(compose(["debug=tiny", "method.js_threshold=0.01"], tmp_path)).signature != base
    assert plan(compose(["debug=tiny", "task.demo_seed=1"], tmp_path)).signature != base


def test_npu_backend_says_what_is_missing():
    from emloc.models.loading import resolve_device

    with pytest.raises(RuntimeError, match="torch_npu"):
        resolve_device("npu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
