"""Search instead of grids: the Optuna sweeper (the `search` extra) runs multi-objective trials as ordinary runs —
same run folders, skipped when finished — and its Pareto front is drawn (`emloc.analysis.pareto`)."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from emloc.analysis.pareto import pareto_figure, pareto_front
from emloc.utils.storage import REPO

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the `search` extra (hydra-optuna-sweeper)")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


def run_py(*args, output_dir, timeout=600):
    out = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env={**ENV, "EMLOC_OUTPUT": str(output_dir)},
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out


def test_multi_objective_trials_are_runs_and_reruns_skip_them(tmp_path):
    args = ["-m", "--config-dir", "sweeps", "--config-name", "smoke/search/optuna_emloc", "debug=tiny",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    run_py(*args, output_dir=tmp_path)
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/metrics.json")]
    assert 1 <= len(runs) <= 3 and {r["sweep_name"] for r in runs} == {"smoke_optuna_emloc"}
    result = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "solutions" in result  # multi-objective: Optuna's Pareto solutions, one value per objective
    status = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "status").glob("*.json")]
    assert all(isinstance(s["result"], list) and len(s["result"]) == 2 for s in status)  # [accuracy, retention]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/metrics.json")}
    run_py(*args[:-1], f"hydra.sweep.dir={tmp_path}/sweep2", output_dir=tmp_path)  # same seed: same trials
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/metrics.json")} == stamps


def test_pareto_front_and_figure():
    runs = pd.DataFrame({
        "accuracy": [0.50, 0.60, 0.55, 0.60, 0.40, None],
        "retention": [0.20, 0.50, 0.60, 0.45, 0.10, 0.3],
        "method.js_threshold": [0.05, 0.005, 0.002, 0.01, 0.1, 0.02],
        "method.chunk_size": [4, 4, 4, 8, 4, 4],
        "sweep_name": "s",
    })  # fmt: skip
    front = pareto_front(runs)
    assert list(front["retention"]) == [0.10, 0.20, 0.45]  # 0.50 and 0.60 are dominated by 0.45 (same/better accuracy)
    fig = pareto_figure(runs)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("retention") and ax.get_ylabel().startswith("accuracy")
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 3 and any("δ=0.01" in t and "chunk=8" in t for t in labels)
    with pytest.raises(ValueError, match="retention"):
        pareto_front(runs.drop(columns="retention"))


@pytest.mark.slow  # ~3 minutes on 2 cores: CI runs it in its own step (.ci/run)
def test_smoke_search_on_the_packaged_model_draws_its_front(tmp_path):
    from emloc.analysis.loading import load_runs

    run_py("-m", "--config-dir", "sweeps", "--config-name", "smoke/search/optuna_emloc",
           f"hydra.sweep.dir={tmp_path}/sweep", output_dir=tmp_path, timeout=1800)  # fmt: skip
    runs = load_runs(tmp_path, "smoke_optuna_emloc")
    assert len(runs) >= 2 and runs["model"].str.startswith("packaged:").all()
    path = tmp_path / "pareto_front.png"
    pareto_figure(runs).savefig(path)
    assert path.stat().st_size > 10_000 and len(pareto_front(runs)) >= 1
