"""Run identity and run artifacts: signatures, the atomic run folder, and Weights & Biases.

* `signature(cfg)` — sha1 over the *semantic* config (dora-style): logger, paths, launcher/hydra, tags, sweep
  and `force` are excluded (the sweep name is kept: a run belongs to one sweep), so moving outputs or switching W&B on does not change a run's identity.
* `RunFolder` — `runs/<signature>/` with `config.yaml`, `predictions.jsonl` (appended and flushed as queries
  finish, so a preempted job resumes), `memory_stats.json` and `metrics.json`. Files are written to a temp
  name and renamed; `metrics.json` is written last and marks the run as done.
* `Tracker` — the only wandb import in the package: one W&B run per job (offline by default, never blocks),
  group = sweep name, full config, summary metrics and the per-layer retention table. `mode: disabled` is a
  no-op tracker with the same methods.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from emloc.storage import atomic_write

log = logging.getLogger(__name__)

EXCLUDED_KEYS = ("logger", "paths", "hydra", "tags", "force", "optimized_metric", "local")
# what is measured about a run's memory, not what the run computes: a finished run is not redone for it
EXCLUDED_EVAL = ("fidelity_queries",)


def signature(semantic: dict[str, Any], length: int = 12) -> str:
    """Deterministic id of a run: sha1 of the sorted semantic config with `EXCLUDED_KEYS` removed."""
    kept = {k: v for k, v in semantic.items() if k not in EXCLUDED_KEYS}
    if isinstance(kept.get("backend"), dict):  # where a run executes does not change what it computes
        kept["backend"] = {k: v for k, v in kept["backend"].items() if k != "device"}
    if isinstance(kept.get("eval"), dict):
        kept["eval"] = {k: v for k, v in kept["eval"].items() if k not in EXCLUDED_EVAL}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


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
    """W&B run for one job. mode: "offline" (default), "online" or "disabled"."""

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
    ) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.mode, self.log_memory, self.run = mode, log_memory, None
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
            tags=tags,
            config=config,
            dir=str(directory),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def finish_run(self, metrics: dict[str, Any], memory_stats: dict[str, Any] | None, memory_dir: Path | None) -> None:
        if self.run is None:
            return
        import wandb

        self.run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
        if memory_stats:
            lengths = memory_stats["layer_lengths"]
            table = wandb.Table(
                columns=["layer", "kept_tokens", "retention"],
                data=[[i, n, n / max(memory_stats["num_source_tokens"], 1)] for i, n in enumerate(lengths)],
            )
            self.run.log({"memory/per_layer": table})
        if self.log_memory and memory_dir is not None:
            art = wandb.Artifact(f"memory-{self.run.name}", type="task-memory")
            art.add_dir(str(memory_dir))
            self.run.log_artifact(art)

    def close(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def fetch_runs(project: str, entity: str | None = None, group: str | None = None) -> list[tuple[dict, dict, str]]:
    """(summary, config, creation time) of the finished runs of an online W&B project, optionally one group (needs
    `wandb login`)."""
    import wandb

    runs = wandb.Api().runs(f"{entity}/{project}" if entity else project, {"group": group} if group else {})
    return [(dict(r.summary), dict(r.config), str(r.created_at)) for r in runs if r.state == "finished"]
