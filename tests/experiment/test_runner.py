"""End-to-end runs on `debug=tiny`: run folders, skipping, memory reuse, W&B files and bad input."""

import json

import pytest

from emloc.experiment import runner
from tests.conftest import compose

FAMILIES = [
    ("tiny_llama", []),
    ("tiny_qwen2", []),
    ("tiny_qwen2_vl", ["task.loader.with_images=true"]),
    ("tiny_qwen2_5_vl", ["task.loader.with_images=true"]),
]


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("emloc.models.loading.load", refuse)


@pytest.mark.parametrize("model, extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_debug_run_writes_a_complete_run_folder(model, extra, tmp_path):
    cfg = compose(["debug=tiny", f"model={model}", *extra], tmp_path)
    metrics = runner.run(cfg)
    folder = tmp_path / "runs" / metrics["signature"]
    assert {p.name for p in folder.iterdir()} >= {
        "config.yaml",
        "metrics.json",
        "predictions.jsonl",
        "memory_stats.json",
    }
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["num_queries"] == 4 and {"prediction", "target", "correct"} <= set(rows[0])
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / 4
    for key in (
        "num_shots",
        "context_tokens",
        "memory_tokens",
        "retention",
        "max_chunk_js",
        "compress_seconds",
        "query_seconds_mean",
        "peak_rss_mb",
        "method_option",
        "method_label",
        "model",
        "task",
    ):
        assert key in metrics
    stats = json.loads((folder / "memory_stats.json").read_text())
    assert len(stats["layer_lengths"]) == stats["num_layers"] and stats["chunks"]


def test_rerun_does_no_work_and_eval_changes_reuse_the_memory(tmp_path, monkeypatch):
    first = runner.run(compose(["debug=tiny"], tmp_path))
    before = (tmp_path / "runs" / first["signature"] / "predictions.jsonl").stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr("emloc.models.loading.load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
        assert runner.run(compose(["debug=tiny"], tmp_path)) == first
    assert (tmp_path / "runs" / first["signature"] / "predictions.jsonl").stat().st_mtime_ns == before
    other = runner.run(compose(["debug=tiny", "eval.max_new_tokens=4"], tmp_path))
    assert other["signature"] != first["signature"] and other["memory_key"] == first["memory_key"]
    assert other["memory_cached"] and not first["memory_cached"]  # loaded from the memory cache
    assert other["compress_seconds"] == pytest.approx(first["compress_seconds"])
    forced = runner.run(compose(["debug=tiny", "force=true"], tmp_path))
    assert forced["signature"] == first["signature"] and forced["accuracy"] == first["accuracy"]


def test_wandb_offline_run_holds_the_metrics(tmp_path):
    from emloc.experiment.report import read_wandb_run

    metrics = runner.run(compose(["debug=tiny", "logger=wandb_offline"], tmp_path))
    files = list((tmp_path / "runs" / metrics["signature"]).rglob("run-*.wandb"))
    assert len(files) == 1
    run = read_wandb_run(files[0])
    for key in ("accuracy", "retention", "memory_tokens", "num_queries"):
        assert run["summary"][key] == pytest.approx(metrics[key])
    assert run["config"]["method"]["js_threshold"] == 0.005


@pytest.mark.parametrize(
    "override, match",
    [
        ("method.js_threshold=-1", "js_threshold"),
        ("method.chunk_size=0", "chunk_size"),
        ("method.keep_ratios=[0.5,0.2]", "keep_ratios"),
        ("task.num_shots=100", "num_shots=100"),
        ("task.num_queries=1000", "num_queries=1000"),
        ("eval.batch_size=0", "eval.batch_size"),
    ],
)
def test_bad_values_fail_before_any_model_load(override, match, tmp_path, no_model_load):
    with pytest.raises(ValueError, match=match):
        runner.run(compose(["debug=tiny", override], tmp_path))


def test_unknown_option_is_hydras_error(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["method=annealing"], tmp_path)


def test_missing_data_path_is_named(tmp_path, no_model_load):
    from emloc.experiment.config import ConfigError  # a data error: one line naming the file (emloc.experiment.errors)

    with pytest.raises(ConfigError, match="nowhere.jsonl"):
        runner.run(compose(["debug=tiny", "task=jsonl", f"task.loader.path={tmp_path}/nowhere.jsonl"], tmp_path))


def test_unreadable_image_names_the_file_and_the_run_is_not_done(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    rows = [
        {
            "id": i,
            "question": f"q{i}",
            "answer": "red" if i % 2 else "blue",
            "image": str(bad if i == 3 else tmp_path / "ok.png"),
        }
        for i in range(12)
    ]
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 0, 0)).save(tmp_path / "ok.png")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose(
        [
            "debug=tiny",
            "model=tiny_qwen2_vl",
            "task=jsonl",
            f"task.loader.path={tmp_path}/t.jsonl",
            "task.num_shots=8",
            "task.num_queries=4",
            f"+task.loader.cache_dir={tmp_path}/hf",
        ],
        tmp_path / "out",
    )
    with pytest.raises(ValueError, match="broken.png"):
        runner.run(cfg)
    assert not list((tmp_path / "out").rglob("metrics.json"))


def test_console_script_runs_like_run_py(tmp_path):
    """`emloc run` composes the same config tree as run.py; a second call finds the run finished and does no work."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("emloc")
    args = [
        str(exe),
        "run",
        "debug=tiny",
        "logger=none",
        f"paths.output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    [metrics] = list(tmp_path.glob("runs/*/metrics.json"))
    m = json.loads(metrics.read_text())
    assert m["num_queries"] > 0
    prov = m["provenance"]  # the option chosen per group and the Hydra job's folder, as Hydra composed them
    assert prov["options"]["method"] == m["method_option"] == "emloc" and prov["options"]["debug"] == "tiny"
    assert prov["options"]["hydra/launcher"] == "basic" and prov["hydra_output_dir"] == str(tmp_path / "hydra")
    stamp = metrics.stat().st_mtime_ns
    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "is finished" in second.stdout + second.stderr
    assert metrics.stat().st_mtime_ns == stamp


def test_held_out_fidelity_is_measured_for_compressed_memories_only(tmp_path):
    """The full context is its own reference (zero by the lossless invariant): no second pass over its queries."""
    full = runner.run(compose(["debug=tiny", "method=full_context"], tmp_path))
    pruned = runner.run(compose(["debug=tiny"], tmp_path))
    assert full["heldout_js"] is None and not (tmp_path / "runs" / full["signature"] / "fidelity.json").exists()
    assert pruned["heldout_js"] >= 0 and (tmp_path / "runs" / pruned["signature"] / "fidelity.json").is_file()
    fid = json.loads((tmp_path / "runs" / pruned["signature"] / "fidelity.json").read_text())
    split = runner.plan(compose(["debug=tiny"], tmp_path))
    assert fid["uids"] == [q.uid for q in split.fidelity_set] and len(fid["uids"]) == 8  # the task's fidelity set
    assert not set(fid["uids"]) & {e.uid for e in split.demos + split.queries}
    assert pruned["fidelity_inputs"] == 8 and pruned["heldout_js_upper"] >= pruned["heldout_js"]


def test_a_bound_is_certified_on_inputs_that_did_not_choose_it_and_a_miss_is_recorded(tmp_path):
    """EMLoC-E2E sizes its memory by δ with its tuning probes; the runner measures it on the certification set (disjoint
    from the probes, the fidelity set, the demos and the queries) and records mean, upper bound and the verdict. The
    same memory against a stricter target: the run finishes and records "bound not met", never "certified"."""
    from dataclasses import replace

    cfg = compose(["debug=tiny", "method=emloc_e2e", "method.js_threshold=0.05"], tmp_path)
    m = runner.run(cfg)
    assert m["certificate_target"] == 0.05 and m["certification_inputs"] == 8
    assert m["certified_js_upper"] >= m["certified_js"] >= 0
    assert m["certified"] == (m["certified_js_upper"] <= 0.05)
    assert m["certificate"] == ("certified" if m["certified"] else "bound not met")
    p = runner.plan(cfg)
    chosen = {q.uid for q in p.probes}
    certifying = {q.uid for q in p.certification_set}
    assert chosen and not chosen & certifying and not certifying & {q.uid for q in p.fidelity_set}
    from emloc.experiment.cache import build_memory
    from emloc.models.loading import load

    adapter = load(**cfg.model, device="cpu", dtype="float32", attn="sdpa")
    memory, _ = build_memory(p.method, p.demos, p.task.instruction, adapter, tmp_path / "memories", probes=p.probes)
    from emloc.experiment.record import certify, full_context

    strict_plan = replace(p, method=replace(p.method, js_threshold=1e-9))
    strict = certify(strict_plan, adapter, memory, full_context(strict_plan, adapter, tmp_path / "memories"))
    assert strict["certified_js"] == pytest.approx(m["certified_js"])  # the same memory, the same inputs
    assert strict["certified"] is False and strict["certificate"] == "bound not met"


def test_emloc_g_is_sized_on_its_tuning_inputs_and_certified_on_the_others(tmp_path):
    """EMLoC-G through the runner: its tuning inputs (task.heldout.tuning) score and size the memory, the certification
    set (disjoint from them) gives the recorded bound against slack × δ, and the memory is per head."""
    cfg = compose(["debug=tiny", "method=emloc_global", "method.delta=0.02", "method.tuning_inputs=8",
                   "method.block_tokens=64"], tmp_path)  # fmt: skip
    m = runner.run(cfg)
    p = runner.plan(cfg)
    assert len(p.probes) == 8 and not {q.uid for q in p.probes} & {q.uid for q in p.certification_set}
    assert m["certificate_target"] == pytest.approx(0.04) and m["certification_inputs"] == 8
    assert m["certified"] == (m["certified_js_upper"] <= 0.04) and 0 < m["retention"] <= 1
    assert m["method_label"] == "EMLoC-G" and m["compresses"]
