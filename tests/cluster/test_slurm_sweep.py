"""Sweeps on a real SLURM cluster (`.ci/slurm-ci.sh up`): arrays, requeue-and-resume (into one W&B run), skipping
finished runs.

Skipped when `sbatch` is not on PATH. Run: pytest -m slurm tests/cluster/test_slurm_sweep.py (the requeue test is also `slow`).
"""

import json
import os
import subprocess
import sys

import pytest

from emloc.utils.storage import REPO

ROOT = REPO
PARTITION = os.environ.get("SLURM_CI_PARTITION", "debug")
SHOTS, QUERIES = 64, 640  # ~200 s of work on 2 idle cores (32 chunks ~55 s, 640 queries ~85 s, fidelity ~50 s): one
# 3-minute attempt (<= 150 s of it before SIGUSR2) cannot finish it; 32 shots did, once batching got faster
from tests.cluster.test_slurm import SKIP_REASON  # noqa: E402  (no sbatch, or no controller outside CI)

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.xdist_group("slurm"),
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


def launch(tmp_path, *overrides, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMLOC_OUTPUT": str(tmp_path / "out"), "WANDB_SILENT": "true"}
    cmd = [
        sys.executable,
        "run.py",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={PARTITION}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def sacct_jobs(job_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line]


def test_sweep_runs_as_a_slurm_array_and_reruns_do_nothing(tmp_path):
    args = [
        "debug=tiny",
        "sweep_name=slurm_smoke",
        "method.js_threshold=0.005,0.05",
        "task.demo_seed=0,1",
        "hydra.launcher.timeout_min=5",
    ]
    out = launch(tmp_path, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/metrics.json")]
    assert len(metrics) == 4
    for m in metrics:
        folder = tmp_path / "out" / "runs" / m["signature"]
        assert {"config.yaml", "predictions.jsonl", "memory_stats.json"} <= {p.name for p in folder.iterdir()}
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    array_ids = {p.name.split("_")[0] for p in logs}
    assert len(logs) == 4 and len(array_ids) == 1, "the four points must be one SLURM array"
    assert any("COMPLETED" in line for line in sacct_jobs(array_ids.pop()))
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("runs/*/metrics.json")}
    again = launch(tmp_path, *args)
    assert again.returncode == 0 and all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.slow  # 6-10 minutes of real SLURM time: .ci/run runs it in its own step (pytest -m 'slurm and slow')
def test_a_job_past_its_time_limit_is_requeued_and_resumes(tmp_path):
    """The real SmolLM2 on a run that outlives its 3-minute limit: SIGUSR2 → submitit checkpoint → requeue.
    The second attempt must take over the finished chunks / predictions, not recompute them, and every attempt
    writes to ONE W&B run (id = run signature, offline files) whose history has one row per chunk."""
    # ~200 s of work (idle 2 cores) against <= 150 s per attempt (3-minute limit, SIGUSR2 30 s before, Slurm may
    # signal up to 60 s early): at least one requeue; each attempt has room for the cold first chunk even on a busy node
    out = launch(
        tmp_path,
        "sweep_name=requeue",
        "logger=wandb_offline",
        f"task.num_shots={SHOTS}",
        f"task.num_queries={QUERIES}",
        "method.chunk_size=2",
        "eval.batch_size=4",
        "hydra.launcher.timeout_min=3",
        "hydra.launcher.signal_delay_s=30",
        "hydra.launcher.max_num_timeout=6",
        timeout=2400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [m] = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/metrics.json")]
    assert m["attempt"] >= 1, "the job finished in its first attempt: the limit did not bite"
    assert m["resumed_chunks"] + m["resumed_predictions"] > 0
    rows = (tmp_path / "out" / "runs" / m["signature"] / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == len({json.loads(r)["uid"] for r in rows}) == QUERIES, "a prediction was recomputed"
    from tests.experiment.test_tracking import history, offline_runs, wandb_records

    folder = tmp_path / "out" / "runs" / m["signature"]
    attempts = offline_runs(folder)
    assert len(attempts) == m["attempt"] + 1, [p.name for p in attempts]  # one W&B file per SLURM attempt ...
    assert {p.name.rsplit("-", 1)[-1] for p in attempts} == {m["signature"]}  # ... all of ONE run id
    records = [wandb_records(p) for p in attempts]
    assert all(r["run"]["run_id"] == m["signature"] for rs in records for r in rs if r["type"] == "run")
    assert any(r["type"] == "preempting" for r in records[0]), "the interrupted attempt was not marked preempting"
    chunks = [h["compress/chunk"] for rs in records for h in history(rs) if "compress/chunk" in h]
    assert chunks == list(range(SHOTS // 2)), "one history row per chunk, across the attempts"
