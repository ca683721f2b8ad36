"""The experiment layer: a composed Hydra config to a finished run folder and back to tables.

The only layer (with the lmms-eval bridge) that sees Hydra, OmegaConf or W&B. `config` composes and validates,
`runner` plans, builds (through `cache`), evaluates and records, `tracking` writes run folders and W&B, `matching`
and `sweeps` plan grids, `errors` turns every user error into one line, `report` and `cli` are the commands.
"""
