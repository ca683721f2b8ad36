"""Registers emloc's structured-config schemas (`schema/<group>`, see `emloc.experiment.config`) with Hydra's ConfigStore.

Hydra imports every module under `hydra_plugins` before it composes a config, so `conf/config.yaml` finds its
schemas whichever entry point composes it (run.py, `emloc run`, the lmms-eval model, a SLURM array task). No
plugin class lives here.
"""

import emloc.experiment.config  # noqa: F401  (registers the schemas on import)
