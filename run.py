"""Entry point: `python run.py [overrides]` runs one experiment; `-m` sweeps (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from emloc.runner import run

    return run(cfg).get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
