"""W&B that survives requeues (one run per signature, resumed; preempting on SIGUSR2; one history row per chunk;
outputs and memory artifacts), provenance in metrics.json and the W&B config, and the device kind in signatures."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emloc.experiment import runner
from emloc.experiment.tracking import Tracker, signature
from tests.conftest import compose


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of the offline W&B run in `run_dir` (`wandb leet inspect --json`: one JSON object per line)."""
    exe = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(exe), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def offline_runs(folder: Path) -> list[Path]:
    """The offline W&B run folders of a run folder, oldest first (`latest-run` is a symlink to one of them)."""
    return sorted(p for p in (folder / "wandb").glob("offline-run-*") if not p.is_symlink())


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def test_signature_keeps_the_device_kind_only():
    base = {"backend": {"device": "cuda:0", "dtype": "bfloat16", "attn": "sdpa"}, "method": {"x": 1}}
    other_card = {**base, "backend": {**base["backend"], "device": "cuda:1"}}
    npu = {**base, "backend": {**base["backend"], "device": "npu:0"}}
    assert signature(base) == signature(other_card) != signature(npu)


def test_offline_run_is_the_signature_with_chunk_history_artifacts_and_provenance(tmp_path):
    cfg = compose(["debug=tiny", "logger=wandb_offline", "logger.log_memory=true", "eval.fidelity=false"], tmp_path)
    metrics = runner.run(cfg)
    folder = tmp_path / "runs" / metrics["signature"]
    [run_dir] = offline_runs(folder)
    assert run_dir.name.endswith(f"-{metrics['signature']}")
    records = wandb_records(run_dir)
    [start] = [r["run"] for r in records if r["type"] == "run"]
    assert start["run_id"] == metrics["signature"] and start["job_type"] == "emloc" and start["resume"]
    rows = [h for h in history(records) if "compress/chunk" in h]
    assert [h["compress/chunk"] for h in rows] == [0, 1] == [c["index"] for c in _stats(folder)["chunks"]]
    assert len(history(records)) == len(rows), "one history row per chunk, nothing else"
    for h in rows:
        assert {"compress/kept_tokens", "compress/js_max", "compress/trials", "compress/seconds"} <= set(h)
    artifacts = {r["artifact"]["name"]: r["artifact"]["type"] for r in records if r["type"] == "artifact"}
    assert artifacts == {
        f"outputs-{metrics['signature']}": "run-outputs",
        f"memory-{metrics['memory_key']}": "task-memory",
    }
    prov = metrics["provenance"]
    assert {"torch", "transformers", "emloc"} <= set(prov["versions"]) and prov["device_name"] == "cpu"
    assert prov["git"] is None or (len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool))
    assert json.loads((folder / "metrics.json").read_text())["provenance"] == prov
    config = json.loads(json.dumps(start["config"]))["update"]
    assert "provenance" in config and "versions" in json.dumps(config["provenance"])
    # a cache hit names the memory it used (W&B offline cannot record an artifact input)
    hit = runner.run(compose(["debug=tiny", "logger=wandb_offline", "logger.log_memory=true",
                              "eval.fidelity=false", "eval.max_new_tokens=4"], tmp_path))  # fmt: skip
    assert hit["memory_cached"] and hit["memory_key"] == metrics["memory_key"]
    records = wandb_records(offline_runs(tmp_path / "runs" / hit["signature"])[0])
    summary = {k: v for r in records if r["type"] == "summary" for k, v in _updates(r).items()}
    assert summary["memory_artifact"] == f"memory-{metrics['memory_key']}"
    assert not [r for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "task-memory"]
    assert not [h for h in history(records) if "compress/chunk" in h]  # nothing compressed: no chunk rows


def _stats(folder: Path) -> dict:
    return json.loads((folder / "memory_stats.json").read_text())


def _updates(record: dict) -> dict:
    return {k: json.loads(v) if isinstance(v, str) and v[:1] in "[{\"" else v
            for k, v in record["summary"].get("update", {}).items()}  # fmt: skip


def test_a_preempted_attempt_and_its_requeue_write_one_run(tmp_path, monkeypatch):
    """SIGUSR2 during compression (submitit's handler: checkpoint, requeue, exit) marks the run preempting; the
    next attempt resumes the partial memory and continues the same W&B run: one history row per chunk in all."""
    cfg = compose(["debug=tiny", "logger=wandb_offline", "eval.fidelity=false", "task.num_shots=12"], tmp_path)
    caught = []

    def submitit_handler(signum, frame):  # what submitit does on SIGUSR2: requeue, then sys.exit(-1)
        caught.append(signum)
        raise SystemExit(-1)

    log_chunk = Tracker.log_chunk

    def log_then_signal(self, memory):
        log_chunk(self, memory)
        if len(memory.chunks) == 1:
            os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with monkeypatch.context() as m:
            m.setattr(Tracker, "log_chunk", log_then_signal)
            with pytest.raises(SystemExit):
                runner.run(cfg)
        assert caught == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is submitit_handler
        metrics = runner.run(cfg)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert metrics["resumed_chunks"] == 1
    first, second = offline_runs(tmp_path / "runs" / metrics["signature"])
    # W&B names the second folder `...-<id>-1` when both attempts start in the same second; the id is in the file
    assert (
        [f.name for f in first.glob("*.wandb")]
        == [f.name for f in second.glob("*.wandb")]
        == [f"run-{metrics['signature']}.wandb"]
    )
    a, b = wandb_records(first), wandb_records(second)
    assert any(r["type"] == "preempting" for r in a) and not any(r["type"] == "preempting" for r in b)
    chunks = [h["compress/chunk"] for h in history(a) + history(b)]
    assert chunks == list(range(len(_stats(tmp_path / "runs" / metrics["signature"])["chunks"]))) == [0, 1, 2]


def test_tracker_disabled_is_a_no_op():
    t = Tracker("disabled", run_id="abc")
    t.log_chunk(None)
    t.mark_preempting()
    t.finish_run({"accuracy": 1.0}, None, None)
    t.close()
    assert t.run is None and t.preempting
