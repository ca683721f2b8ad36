"""Sweep files compose at both scales; a local multirun survives a failing point and a rerun does no work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emloc.utils.storage import REPO

ROOT = REPO
SWEEPS = sorted(str(p.relative_to(ROOT / "sweeps").with_suffix("")) for p in (ROOT / "sweeps").rglob("*.yaml"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


def run_py(*args, output_dir, check=True):
    env = {**ENV, "EMLOC_OUTPUT": str(output_dir)}
    out = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check and out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    return out


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_composes(name, tmp_path):
    search = "hydra/sweeper: optuna" in (ROOT / "sweeps" / f"{name}.yaml").read_text()
    if search:
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="an Optuna search needs the `search` extra")
    out = run_py("--config-dir", "sweeps", "--config-name", name, "--cfg", "all", output_dir=tmp_path)
    cfg = yaml.safe_load(out.stdout)
    assert cfg["hydra"]["mode"] == "MULTIRUN" and cfg["sweep_name"].endswith(Path(name).name)
    params = cfg["hydra"]["sweeper"]["params"]
    if search:  # a search compares settings on fixed demonstrations; its front is re-run over seeds as a grid
        assert "," not in str(params["task.demo_seed"])
        assert cfg["hydra"]["sweeper"]["direction"] == ["maximize", "minimize"]
    else:
        assert len(str(params["task.demo_seed"]).split(",")) >= 3, "every sweep needs >= 3 demo seeds"
    if name.startswith("smoke/"):
        assert cfg["model"]["source"].startswith("packaged:") and cfg["backend"]["device"] == "cpu"


def test_local_multirun_survives_a_failing_point_and_reruns_do_nothing(tmp_path):
    """An invalid point is named before anything is queued (plan.json), a point that fails while running does not
    stop the others (status files), and a rerun launches nothing that is finished."""
    args = ["-m", "debug=tiny", "method.js_threshold=0.01,-1", "model.source=tiny:llama,tiny:nope",
            "sweep_name=fail_test", f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    out = run_py(*args, output_dir=tmp_path, check=False)
    assert out.returncode != 0  # the sweep reports its failures ...
    done = list(tmp_path.glob("runs/*/metrics.json"))
    assert len(done) == 1  # ... after the good point finished
    plan = json.loads((tmp_path / "sweep" / "plan.json").read_text())
    invalid = [p for p in plan if p["status"] == "invalid"]
    assert len(invalid) == 2 and all("js_threshold must be a number >= 0, got -1" in p["error"] for p in invalid)
    assert "2 grid point(s) invalid and not run" in out.stderr + out.stdout
    status = {json.loads(p.read_text())["status"] for p in (tmp_path / "sweep" / "status").glob("*.json")}
    assert status == {"COMPLETED", "FAILED"}  # the two valid points ran; the unknown model failed while running
    from emloc.experiment.sweeps import sweep_status

    table, failed = sweep_status(tmp_path / "sweep")
    assert failed == 1 and "nope" in table
    mtime = done[0].stat().st_mtime_ns
    again = run_py("-m", "debug=tiny", "method.js_threshold=0.01", "sweep_name=fail_test", output_dir=tmp_path)
    assert "0 to run, 1 finished" in again.stderr + again.stdout and done[0].stat().st_mtime_ns == mtime


def test_matched_retention_comes_from_the_reference_run_of_the_same_point(tmp_path):
    """`match_retention_of`: the baseline arm keeps the retention its EMLoC arm reached (same seed), launched in a
    second wave after it; a reference that is neither finished nor planned is named before anything runs."""
    args = ["-m", "debug=tiny", "method=emloc,snapkv", "task.demo_seed=0,1", "+match_retention_of=emloc",
            "method.chunk_size=2", "sweep_name=match_test", f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    run_py(*args, output_dir=tmp_path)
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/metrics.json")]
    emloc = {r["signature"]: r for r in runs if r["method_option"] == "emloc"}
    snap = [r for r in runs if r["method_option"] == "snapkv"]
    assert len(emloc) == 2 and len(snap) == 2
    for r in snap:  # each seed's SnapKV kept the retention of that seed's EMLoC run
        ref = emloc[r["matched_to"]]
        assert r["matched_retention"] == ref["retention"] and abs(r["retention"] - ref["retention"]) < 0.05
    plan = json.loads((tmp_path / "sweep" / "plan.json").read_text())
    assert [r["status"] for r in plan].count("deferred") == 2
    alone = run_py("-m", "debug=tiny", "method=snapkv", "+match_retention_of=emloc", "method.chunk_size=3",
                   "sweep_name=match_test", output_dir=tmp_path, check=False)  # fmt: skip
    assert alone.returncode == 2 and "match_retention_of=emloc: its run" in alone.stderr + alone.stdout
    assert "has not finished" in alone.stderr + alone.stdout


def test_a_method_grid_expands_only_its_own_points_and_the_plan_agrees_with_the_sweeper(tmp_path):
    """`hydra.sweeper.grids`: each method gets its own parameter grid (fixed ratios over keep_ratio, a bounded method
    over δ); the planner (`plan_sweep`, used by `emloc report`) expands it with the sweeper's own function (`expand`),
    and the file's grids reach the sweeper's config."""
    from emloc.experiment.sweeps import expand, plan_sweep

    grids = {"kvzip": {"method.keep_ratio": ["0.2", "0.45"]}, "emloc_global": {"method.delta": ["0.01"]}}
    assert expand(["method=kvzip", "seed=1"], grids) == [["method=kvzip", "seed=1", "method.keep_ratio=0.2"],
                                                         ["method=kvzip", "seed=1", "method.keep_ratio=0.45"]]  # fmt: skip
    assert expand(["method=full_context"], grids) == [["method=full_context"]]
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "g.yaml").write_text(yaml.safe_dump({
        "defaults": ["/config", "_self_"], "sweep_name": "g", "task": {"num_shots": 4, "num_queries": 4,
        "heldout": {"fidelity": 0, "tuning": 0, "certification": 0}},
        "hydra": {"mode": "MULTIRUN", "sweeper": {"params": {"method": "full_context,kvzip", "task.demo_seed": "0,1,2"},
                                                  "grids": {"kvzip": {"method.keep_ratio": "0.2,0.45"}}}}}))  # fmt: skip
    plan = plan_sweep("g", tmp_path, directory=sweeps)
    assert len(plan.points) == 3 * (1 + 2) and plan.count("invalid") == 0
    assert plan.columns == ["method", "task.demo_seed", "method.keep_ratio"]
    ratios = {o for p in plan.points for o in p.overrides if o.startswith("method.keep_ratio")}
    assert ratios == {"method.keep_ratio=0.2", "method.keep_ratio=0.45"}
    out = run_py("--config-dir", str(sweeps), "--config-name", "g", "--cfg", "hydra", output_dir=tmp_path)
    assert yaml.safe_load(out.stdout)["hydra"]["sweeper"]["grids"] == {"kvzip": {"method.keep_ratio": "0.2,0.45"}}
