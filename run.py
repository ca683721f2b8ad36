"""Entry point: `python run.py [overrides]` runs one experiment; `-m` sweeps (see README). A config or data error is
printed as one line naming the key, the value and the fix, with exit code 2 (`HYDRA_FULL_ERROR=1`: the traceback)."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from emloc.experiment.runner import job

    return job(cfg)


if __name__ == "__main__":
    from emloc.experiment.errors import guard

    sys.exit(guard(main))
