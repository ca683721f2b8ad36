"""Real SLURM checks through submitit (the path `hydra/launcher=slurm` takes).

Needs a cluster: on a CI box `bash .ci/slurm-ci.sh up` makes a single-node one (see .ci/run), and
SLURM_CI_PARTITION names its partition (default `debug`). Without `sbatch` on PATH every test here is
skipped, so a laptop without SLURM still passes; so is a machine whose controller does not answer, unless
SLURM_CI_PARTITION is set (CI: then a dead cluster fails). About 10-15 s of cluster time in all.

    python -m pytest -q tests/cluster -m slurm
"""

import os
import shutil
import subprocess
import sys
import time

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError

PARTITION = os.environ.get("SLURM_CI_PARTITION", "debug")


def why_skip() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not on PATH)"
    if "SLURM_CI_PARTITION" in os.environ:  # CI brought a cluster up (.ci/run): a dead one must fail, not skip
        return None
    # Slurm installed but its controller down (e.g. after `slurm-ci.sh down`): sbatch would retry ~9 s, then fail
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"SLURM installed but `scontrol ping` failed ({e})"
    if ping.returncode != 0:
        return (
            "SLURM installed but no controller answers `scontrol ping` (`bash .ci/slurm-ci.sh up`, "
            "or export SLURM_CI_PARTITION to make this an error)"
        )
    return None


SKIP_REASON = why_skip()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.xdist_group("slurm"),
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]
JOB_TIMEOUT_S = 90  # per wait; a healthy single-node cluster needs 1-5 s

# Ship the job functions below by value: the job's python need not be able to import this test module
# (pytest imports it as a rootdir-relative name that is not on the job's sys.path).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --- what runs on the cluster ------------------------------------------------------------------------
def probe(a: int, b: int) -> dict:
    import socket

    return {
        "sum": a + b,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "host": socket.gethostname(),
    }


def boom(message: str) -> None:
    raise ValueError(message)


# --- helpers -----------------------------------------------------------------------------------------
@pytest.fixture
def executor(tmp_path):
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j")
    # AutoExecutor silently falls back to a local executor when it finds no SLURM commands
    assert ex.cluster == "slurm"
    ex.update_parameters(
        slurm_partition=PARTITION,
        timeout_min=5,
        cpus_per_task=1,
        mem_gb=0.5,
        slurm_array_parallelism=3,
        name="emloc-ci",
    )
    return ex


def wait_done(job, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """job.result() waits forever on a job that never finishes: bound it, and cancel on expiry."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"SLURM job {job.job_id} not done after {timeout_s} s (state {job.state})")
        time.sleep(0.5)


def sacct_state(job_id: str, want: str, timeout_s: float = 15) -> str:
    """The job's state in accounting; sacct lags the result file by a few seconds, so poll for `want`."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.fail(f"sacct failed (accounting off? slurm-ci.sh runs slurmdbd for it): {out.stderr.strip()}")
        state = out.stdout.strip().split("\n")[0].split()[0] if out.stdout.strip() else ""
        if state == want:
            break
        time.sleep(0.5)
    return state


# --- tests -------------------------------------------------------------------------------------------
def test_single_job_runs_under_slurm(executor):
    job = executor.submit(probe, 1, 2)
    wait_done(job)
    out = job.result()
    assert out["sum"] == 3
    assert out["slurm_job_id"] == str(job.job_id)  # it really ran as that SLURM job
    assert sacct_state(job.job_id, "COMPLETED") == "COMPLETED"


def test_job_array(executor):
    jobs = executor.map_array(probe, [10, 20, 30], [1, 2, 3])
    assert len(jobs) == 3
    for job in jobs:
        wait_done(job)
    outs = [job.result() for job in jobs]
    assert [o["sum"] for o in outs] == [11, 22, 33]
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(3)]
    assert [o["array_task_id"] for o in outs] == ["0", "1", "2"]
    assert {o["array_job_id"] for o in outs} == {array_id}
    assert sacct_state(jobs[-1].job_id, "COMPLETED") == "COMPLETED"


def test_failing_job_raises_with_remote_error(executor):
    job = executor.submit(boom, "emloc-ci: deliberate failure 4711")
    wait_done(job)
    with pytest.raises(FailedJobError) as info:
        job.result()
    text = str(info.value)
    assert "ValueError" in text and "deliberate failure 4711" in text  # the remote traceback came back
    assert sacct_state(job.job_id, "FAILED") == "FAILED"
