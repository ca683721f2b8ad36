"""Two array tasks that need the same task memory (same model, demos and method; different evaluation settings) on a
real SLURM cluster (`.ci/slurm-ci.sh up`): one compresses, the other waits on the memory's lock and loads the result.

Skipped without `sbatch` (see test_slurm.py). About 2 minutes on the 2-core CI node: `slow`, run by .ci/run's
`pytest -m "slurm and slow" tests/cluster` step.
"""

import json

import pytest

from tests.cluster.test_slurm import SKIP_REASON
from tests.cluster.test_slurm_sweep import launch

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.xdist_group("slurm"),
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


@pytest.mark.slow
def test_two_array_tasks_with_one_memory_key_compress_once(tmp_path):
    # 16 shots in chunks of 2 on the real SmolLM2: tens of seconds of compression, far longer than the start skew of
    # two array tasks; one core each, so both run at once on the CI node
    out = launch(
        tmp_path,
        "sweep_name=cache_lock",
        "logger=none",
        "task.num_shots=16",
        "task.num_queries=8",
        "method.chunk_size=2",
        "eval.fidelity=false",
        "eval.batch_size=4,8",  # two runs (two signatures), one memory key
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=3",
        "hydra.launcher.timeout_min=10",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/metrics.json")]
    assert len(runs) == 2 and len({r["signature"] for r in runs}) == 2
    assert len({r["memory_key"] for r in runs}) == 1
    builder, waiter = sorted(runs, key=lambda r: r["memory_cached"])
    assert not builder["memory_cached"] and builder["memory_wait_seconds"] < 1
    assert waiter["memory_cached"] and waiter["memory_wait_seconds"] > 1, "the second task did not wait for the first"
    assert waiter["compress_seconds"] == pytest.approx(builder["compress_seconds"])  # the builder's memory, loaded
    ids = {r["provenance"]["slurm"]["array_task_id"] for r in runs}
    assert ids == {"0", "1"} and len({r["provenance"]["slurm"]["array_job_id"] for r in runs}) == 1
    logs = {p.name: p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out")}  # per array task
    assert len(logs) == 2
    waited = [name for name, text in logs.items() if "built by another process, and loaded it" in text]
    assert len(waited) == 1, f"exactly one task logs that it waited and loaded: {waited}"
    assert sum("being built by another process" in text for text in logs.values()) == 1
    memories = [p for p in (tmp_path / "out" / "memories").iterdir() if p.is_dir()]
    assert [p.name for p in memories] == [builder["memory_key"]]  # one finished memory, no partial left
