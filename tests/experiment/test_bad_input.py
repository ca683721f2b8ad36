"""The bad-input battery: every key of every typed group and every numeric method parameter given a bad value,
bad model sources, bad media and the run-time cases (no CUDA, no torch_npu, a model not cached offline, an unknown
tiny family, an unreadable image, images for a text-only model). Each is ONE line naming the key (or file, or model)
and the fix; from the command line it exits 2 without a traceback."""

import dataclasses
import typing

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from emloc.experiment import config, runner
from emloc.experiment.errors import one_line
from emloc.methods import registry
from tests.conftest import compose
from tests.experiment.test_errors import cli

NUMERIC = (int, float)
BAD = {int: "abc", float: "abc", bool: "maybe"}


def _kind(tp) -> type | None:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return next((a for a in args if a in BAD), None)


def typed_keys() -> list[tuple[str, str]]:
    """(override, key) for every int/float/bool key of the typed groups: a value of the wrong type."""
    out = []
    for group, schema in config.SCHEMAS.items():
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            kind = _kind(hints[f.name])
            if kind is not None:
                out.append((f"{group}.{f.name}={BAD[kind]}", f"{group}.{f.name}"))
    return out


def method_keys() -> list[tuple[str, str]]:
    """(overrides, key) for every numeric parameter of every method class: a negative number (or a string)."""
    out, seen = [], set()
    for option, cls in sorted(registry().items()):
        if cls in seen:
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name == "show_progress":
                continue
            kind = _kind(hints[f.name])
            if kind in NUMERIC:
                out.append((f"method={option} method.{f.name}=-3", f"method.{f.name}"))
            elif kind is bool:
                out.append((f"method={option} method.{f.name}=maybe", f"method.{f.name}"))
    return out


def first_line(overrides: str, tmp_path) -> str:
    """Composes and plans as the runner does (no model); the one line of the error it raises."""
    try:
        cfg = compose(["debug=tiny", *overrides.split()], tmp_path)
        runner.plan(cfg)
    except (config.ConfigError, HydraException, OmegaConfBaseException, ValueError) as err:
        line = one_line(config.as_config_error(err, cfg) if isinstance(err, ValueError) else err, [])
        assert line is not None, f"{overrides}: {err!r} has no one-line form"
        return line
    pytest.fail(f"{overrides}: accepted")


@pytest.mark.parametrize("override, key", typed_keys() + method_keys(), ids=lambda v: v if "=" not in v else None)
def test_every_key_with_a_bad_value_is_one_line_naming_it(override, key, tmp_path):
    if key in ("task.demo_seed", "task.query_seed", "model.seed", "method.seed") and override.endswith("-3"):
        pytest.skip("any integer seed is valid")
    line = first_line(override, tmp_path)
    assert "\n" not in line and key in line and "Traceback" not in line, line


def test_the_battery_covers_the_groups_and_the_methods():
    keys = {k for _, k in typed_keys() + method_keys()}
    assert {"eval.batch_size", "task.num_shots", "model.seed", "logger.log_memory", "method.pool_kernel",
            "method.js_threshold", "method.keep_ratio", "method.max_trials"} <= keys  # fmt: skip


RUN_TIME = [  # (overrides, what the line must name)
    ("backend.device=cuda", "backend.device=cuda"),
    ("backend=npu", "backend.device=npu"),
    ("model.source=tiny:nope", "model.source=tiny:nope"),
    ("model.source=someorg/not-cached-here", "model.source=someorg/not-cached-here"),
    ("task=easy_vqa model=tiny_llama", "model.source=tiny:llama"),
    ("method=emloc method.pool_kernel=0", "method.pool_kernel=0"),
    # a fidelity set larger than what the task has left: names the task and both sizes, before any model loads
    ("debug=tiny task.heldout.fidelity=100", "task.heldout.fidelity=100: task 'synthetic' has only 60 inputs left"),
    ("debug=tiny method=emloc_e2e method.probes=heldout task.heldout.tuning=2", "task.heldout.tuning=2"),
]


@pytest.mark.parametrize("overrides, named", RUN_TIME, ids=[n for _, n in RUN_TIME])
def test_run_time_errors_are_one_line_and_exit_2(overrides, named, tmp_path):
    out, lines = cli(*overrides.split(), tmp_path=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert named in lines[0] and "Fix:" in lines[0], lines[0]


def test_an_unreadable_image_is_one_line_naming_the_file_before_any_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # a file that exists but does not decode
    rows = [f'{{"question": "q{i}?", "answer": "a{i % 2}", "image": "{data / "broken.png"}"}}' for i in range(6)]
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    out, lines = cli("task=jsonl", f"task.loader.path={data / 'train.jsonl'}", "model=tiny_qwen2_vl",
                     "task.num_shots=2", "task.num_queries=2", tmp_path=tmp_path)  # fmt: skip
    # the data loader logs what it read before the check: the error itself is one line, the last, no traceback
    errors = [line for line in lines if "error" in line.lower()]
    assert out.returncode == 2 and errors == lines[-1:] and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert str(data / "broken.png") in lines[-1] and "Fix:" in lines[-1], lines[-1]
