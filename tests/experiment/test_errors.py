"""Typed configs and one-line errors: a mistyped key in a copied group file fails at composition naming the key and
the file; bad values exit 2 with ONE line naming the key, the value and the fix, and no traceback (unless
HYDRA_FULL_ERROR=1)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from emloc.experiment import config, runner
from emloc.experiment.errors import one_line
from emloc.utils.storage import REPO, conf_dir
from tests.conftest import compose

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
BAD_VALUES = [  # (override, key): config values, a type error at composition and a data error
    ("method.js_threshold=-1", "method.js_threshold"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.batch_size=abc", "eval.batch_size"),
    ("backend.dtype=float8", "backend.dtype"),
    ("task.num_shots=100000", "task.num_shots"),
]


def cli(*args, tmp_path, env=None, exe=(sys.executable, "run.py")):
    common = ["debug=tiny", f"paths.output_dir={tmp_path}/out", f"hydra.run.dir={tmp_path}/hydra"]
    out = subprocess.run([*exe, *args, *common], cwd=REPO, env={**ENV, **(env or {})}, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    return out, [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


def copied_task(tmp_path: Path) -> Path:
    """A copy of the synthetic task with `num_shots:` mistyped as `num_shot:`, as tasks/mytask.yaml of a config dir."""
    (tmp_path / "cd" / "task").mkdir(parents=True)
    text = (conf_dir() / "task" / "synthetic.yaml").read_text().replace("\nnum_shots:", "\nnum_shot:")
    (tmp_path / "cd" / "task" / "mytask.yaml").write_text(text)
    return tmp_path / "cd"


def test_mistyped_key_in_a_copied_task_file_fails_at_composition(tmp_path):
    from emloc.experiment.config import compose as runner_compose

    copy = tmp_path / "conf"
    shutil.copytree(conf_dir(), copy)
    (copy / "task" / "mytask.yaml").write_text(copied_task(tmp_path).joinpath("task/mytask.yaml").read_text())
    with pytest.raises(ConfigCompositionException) as err:
        runner_compose(["debug=tiny", "task=mytask"], copy)
    line = one_line(err.value, ["--config-dir", str(copy)])
    assert "task.num_shot" in line and str(copy / "task" / "mytask.yaml") in line and "num_shots" in line


def test_cli_mistyped_key_is_one_line_naming_key_and_file(tmp_path):
    """run.py with --config-dir, and `emloc run` with EMLOC_CONF_DIR."""
    cd = copied_task(tmp_path)
    out, lines = cli("--config-dir", str(cd), "task=mytask", tmp_path=tmp_path)
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert "task.num_shot" in lines[0] and str(cd / "task" / "mytask.yaml") in lines[0] and "Traceback" not in lines[0]
    full = tmp_path / "conf"
    shutil.copytree(conf_dir(), full)
    (full / "task" / "mytask.yaml").write_text((cd / "task" / "mytask.yaml").read_text())
    emloc = (str(Path(sys.executable).with_name("emloc")), "run")
    out, lines = cli("task=mytask", tmp_path=tmp_path, env={"EMLOC_CONF_DIR": str(full)}, exe=emloc)
    assert out.returncode == 2 and len(lines) == 1 and "task.num_shot" in lines[0], out.stdout + out.stderr


@pytest.mark.parametrize("override, key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_cli_bad_value_is_one_line_with_key_value_and_fix(override, key, tmp_path):
    out, lines = cli(override, tmp_path=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    value = override.split("=", 1)[1]
    assert f"{key}={value}" in lines[0] and "Fix:" in lines[0]
    assert not list((tmp_path / "out").glob("runs/*/metrics.json"))


def test_full_error_shows_the_traceback(tmp_path):
    out, _ = cli("eval.max_new_tokens=0", tmp_path=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "eval.max_new_tokens=0" in out.stderr


def test_value_rules_name_the_key_before_any_model_load(tmp_path, monkeypatch):
    monkeypatch.setattr("emloc.models.loading.load", lambda *a, **k: pytest.fail("a model was loaded"))
    for override, key in [("eval.max_new_tokens=0", "eval.max_new_tokens"), ("backend.device=tpu", "backend.device"),
                          ("backend.attn=flash", "backend.attn"), ("logger.mode=sometimes", "logger.mode"),
                          ("model.revision=v1", "model.revision"), ("task.num_queries=0", "task.num_queries")]:  # fmt: skip
        with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")) as err:
            runner.run(compose(["debug=tiny", override], tmp_path))
        assert err.value.key == key and "Fix:" in str(err.value)


def test_schemas_type_the_groups_and_accept_a_revision(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose(["model=qwen2_vl_7b", "model.revision=0123abc"], tmp_path)
    for group, schema in config.SCHEMAS.items():
        assert OmegaConf.get_type(cfg[group]) is schema
    assert cfg.model.revision == "0123abc"
    with pytest.raises(ConfigCompositionException):
        compose(["eval.batch_size=abc"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose(["eval.batchsize=4"], tmp_path)
    assert compose(["+task.loader.extra=1"], tmp_path).task.loader.extra == 1  # added on purpose: allowed


def test_a_parameter_the_method_class_does_not_have_names_the_method_key_not_the_data():
    from emloc.experiment.config import as_config_error

    err = as_config_error(TypeError("SnapKV.__init__() got an unexpected keyword argument 'protect_share'"),
                          choices={"method": "snapkv_protect"})  # fmt: skip
    assert err.key == "method.protect_share" and "conf/method/snapkv_protect.yaml" in str(err)
    assert "data paths" not in str(err)
