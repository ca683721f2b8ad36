"""Run identity and run artifacts: signatures, the atomic run folder, and Weights & Biases.

* `signature(cfg)` — sha1 over the *semantic* config (dora-style): logger, paths, launcher/hydra, tags, sweep
  and `force` are excluded (the sweep name is kept: a run belongs to one sweep), so moving outputs or switching
  W&B on does not change a run's identity. Of `backend.device` only the kind is kept (cpu / cuda / npu: kernels
  differ, so an NPU rerun of a CUDA run is a different run, while cuda:0 and cuda:1 are the same).
* `RunFolder` — `runs/<signature>/` with `config.yaml`, `predictions.jsonl` (appended and flushed as queries
  finish, so a preempted job resumes), `memory_stats.json` and `metrics.json`. Files are written to a temp
  name and renamed; `metrics.json` is written last and marks the run as done.
* `Tracker` — the only wandb import in the package: one W&B run per run signature (id = signature,
  `resume="allow"`: a requeued SLURM attempt continues the same run; SIGUSR2 marks it preempting first), offline
  by default, never blocks; group = sweep name, job type = method option, full config with provenance, one
  history row per compressed chunk, summary metrics, the run's outputs (predictions, memory statistics, per-layer
  table) as an artifact, and with `log_memory` the task memory as artifact `memory-<memory key>` (used, not
  re-logged, on a cache hit). `mode: disabled` is a no-op tracker with the same methods.

It does not decide what a run computes or when it is done (the runner does) and reads no results back except
`fetch_runs` (the W&B API source of `emloc.analysis.loading`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from emloc.utils.storage import atomic_write

log = logging.getLogger(__name__)

EXCLUDED_KEYS = ("logger", "paths", "hydra", "tags", "force", "optimized_metric", "local")
# what is measured about a run's memory, not what the run computes: a finished run is not redone for it
EXCLUDED_EVAL = ("fidelity", "fidelity_queries", "fidelity_layers", "drift")


def signature(semantic: dict[str, Any], length: int = 12) -> str:
    """Deterministic id of a run: sha1 of the sorted semantic config with `EXCLUDED_KEYS` removed."""
    kept = {k: v for k, v in semantic.items() if k not in EXCLUDED_KEYS}
    if isinstance(kept.get("backend"), dict):  # which device of a kind does not change what a run computes
        backend = dict(kept["backend"])
        if "device" in backend:
            backend["device"] = device_kind(backend["device"])
        kept["backend"] = backend
    if isinstance(kept.get("eval"), dict):
        kept["eval"] = {k: v for k, v in kept["eval"].items() if k not in EXCLUDED_EVAL}
    blob = json.dumps(_without_nulls(kept), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def _without_nulls(node: Any) -> Any:
    """A key set to null is the same run as an absent key (so a new optional config key never renames runs)."""
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    return [_without_nulls(v) for v in node] if isinstance(node, list) else node


def device_kind(device: object) -> str:
    """`cuda:1` → `cuda`: the part of a device that changes the numbers (kernels), not which card ran them."""
    return str(device).split(":")[0]


class RunFolder:
    def __init__(self, root: str | os.PathLike, sig: str) -> None:
        self.path = Path(root) / "runs" / sig
        self.signature = sig

    @property
    def done(self) -> bool:
        return (self.path / "metrics.json").is_file()

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=1, default=str))

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, text)

    def finished_predictions(self) -> dict[str, dict]:
        """Predictions persisted by an earlier (preempted) attempt, by query uid; a torn last line is ignored."""
        path, out = self.path / "predictions.jsonl", {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                out[row["uid"]] = row
        return out

    def append_predictions(self, rows: list[dict]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "predictions.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Tracker:
    """W&B run for one run signature. mode: "offline" (default), "online" or "disabled"."""

    def __init__(
        self,
        mode: str = "offline",
        project: str = "emloc",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        config: dict | None = None,
        directory: str | os.PathLike | None = None,
        log_memory: bool = False,
        run_id: str | None = None,
        job_type: str | None = None,
    ) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.mode, self.log_memory, self.run, self.preempting = mode, log_memory, None, False
        self._previous_handler, self._busy = None, False
        if mode == "disabled":
            return
        import wandb

        Path(directory or ".").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode=mode,
            project=project,
            entity=entity,
            group=group,
            name=name,
            id=run_id,
            resume="allow" if run_id else None,  # a requeued attempt (same signature) continues the same run
            job_type=job_type,
            tags=tags,
            config=config,
            dir=str(directory),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        # per-chunk history only: the summary keeps the run's metrics (equal to metrics.json), not the last chunk's
        self.run.define_metric("compress/*", summary="none")
        self._hook_preemption()

    # -- while the run computes ------------------------------------------------------------------------------
    def log_chunk(self, memory) -> None:
        """One history row for the chunk just compressed (`memory.chunks[-1]`, an `emloc.engine.memory.ChunkRecord`):
        kept tokens (mean over layers), accepted JS (max over layers), divergence trials, seconds."""
        if self.run is None or not memory.chunks:
            return
        c = memory.chunks[-1]
        kept = sum(c.kept) / max(len(c.kept), 1)
        js = [v for v in c.js if v is not None]
        row = {"chunk": c.index, "chunk_tokens": c.num_tokens, "kept_tokens": kept,
               "chunk_retention": kept / max(c.num_tokens, 1), "memory_tokens": memory.memory_tokens,
               "js_max": max(js) if js else None, "trials": c.trials, "seconds": c.seconds}  # fmt: skip
        self._busy = True  # a signal arriving now must not re-enter W&B (see _hook_preemption)
        try:
            self.run.log({f"compress/{k}": v for k, v in row.items() if v is not None})
        except Exception as err:  # W&B never fails a run
            log.warning("W&B history row of chunk %d not logged: %s", c.index, err)
        finally:
            self._busy = False

    def mark_preempting(self) -> None:
        """Tell W&B the run is about to be stopped and requeued (it then shows as preempted, not failed)."""
        self.preempting = True
        if self.run is not None:
            try:
                self.run.mark_preempting()
            except Exception as err:
                log.warning("W&B run not marked preempting: %s", err)

    def _hook_preemption(self) -> None:
        """SIGUSR2 — SLURM's warning before a time limit or a preemption, on which submitit checkpoints and
        requeues the job — first marks the run preempting and closes it, then runs submitit's handler. Only when a
        handler is installed (a submitit job) and in the main thread; `close` puts the previous handler back."""
        previous = signal.getsignal(signal.SIGUSR2)
        if not callable(previous):
            return

        def handler(signum, frame):
            # Close the W&B run BEFORE submitit requeues: `scontrol requeue` then kills every process of the job,
            # W&B's service included, and what it had not written yet would be lost. Not from inside a W&B call of
            # the main thread (re-entering it could deadlock): then `close` does it on the way out.
            self.preempting = True
            if not self._busy:
                self.close(failed=True)
                _teardown()  # stop W&B's service now: its atexit hook would fail loudly once SLURM killed it
            previous(signum, frame)

        try:
            signal.signal(signal.SIGUSR2, handler)
        except ValueError:  # not the main thread
            return
        self._previous_handler = previous

    # -- when it is done -------------------------------------------------------------------------------------
    def finish_run(self, metrics: dict[str, Any], memory_stats: dict[str, Any] | None, memory_dir: Path | None,
                   outputs: list[Path] = (), memory_cached: bool = False) -> None:  # fmt: skip
        """Summary metrics; the run's `outputs` files (predictions, memory statistics, ...) and the per-layer table
        as artifact `outputs-<signature>`; with `log_memory`, the memory as `memory-<key>` (its folder name)."""
        if self.run is None:
            return
        import wandb

        self.run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
        art = wandb.Artifact(f"outputs-{metrics.get('signature') or self.run.id}", type="run-outputs")
        for path in outputs:
            if Path(path).is_file():
                art.add_file(str(path))
        if memory_stats:
            lengths = memory_stats["layer_lengths"]
            table = wandb.Table(
                columns=["layer", "kept_tokens", "retention"],
                data=[[i, n, n / max(memory_stats["num_source_tokens"], 1)] for i, n in enumerate(lengths)],
            )
            art.add(table, "memory_per_layer")
        self._busy = True  # as in log_chunk: a SIGUSR2 now is handled when the run closes
        try:
            self.run.log_artifact(art)
            if self.log_memory and memory_dir is not None:
                self._memory_artifact(Path(memory_dir), memory_cached)
        finally:
            self._busy = False

    def _memory_artifact(self, memory_dir: Path, cached: bool) -> None:
        """Built here: log `memory-<key>`. From the cache: declare it as an input (`use_artifact`), so the run's
        lineage names the memory it used; W&B offline mode cannot (its summary keeps the name instead)."""
        import wandb

        name = f"memory-{memory_dir.name}"
        self.run.summary["memory_artifact"] = name
        if cached and self.mode == "online":
            try:
                self.run.use_artifact(f"{name}:latest")
                return
            except Exception as err:  # built while log_memory was off: nothing to use, log it now
                log.info("memory artifact %s not found (%s): logging it", name, err)
        elif cached:
            log.info("W&B offline mode cannot record artifact inputs: %s is named in the summary only", name)
            return
        art = wandb.Artifact(name, type="task-memory")
        art.add_dir(str(memory_dir))
        self.run.log_artifact(art)

    def close(self, failed: bool = False) -> None:
        """Finish the W&B run (non-zero exit code when failed or preempted: after `mark_preempting`, W&B shows it
        as preempted) and put the previous SIGUSR2 handler back. Never raises: W&B does not fail a run."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR2, self._previous_handler)
            self._previous_handler = None
        run, self.run = self.run, None
        if run is None:
            return
        try:
            if self.preempting:
                run.mark_preempting()
            run.finish(exit_code=1 if failed or self.preempting else 0)
        except Exception as err:  # e.g. its service already killed with the job
            log.warning("W&B run %s not closed cleanly: %s", run.id, err)


def _teardown() -> None:
    try:
        import wandb

        wandb.teardown()
    except Exception as err:
        log.warning("W&B service not torn down: %s", err)


def fetch_runs(project: str, entity: str | None = None, group: str | None = None) -> list[tuple[dict, dict, str]]:
    """(summary, config, creation time) of the finished runs of an online W&B project, optionally one group (needs
    `wandb login`)."""
    import wandb

    runs = wandb.Api().runs(f"{entity}/{project}" if entity else project, {"group": group} if group else {})
    return [(dict(r.summary), dict(r.config), str(r.created_at)) for r in runs if r.state == "finished"]
