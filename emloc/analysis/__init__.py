"""Analysis: runs → tidy frames → statistics, tables and figures. Reads what runs wrote; runs nothing.

Modules, in import order (each imports only those before it): `frame` (the `Sweep` data type and the shared
vocabulary), `loading` (run folders, W&B offline files, the W&B API), `grid` (grid columns and completeness by
signature), `stats` (aggregation over demo seeds, paired comparisons), `tables`, `figures`. Notebooks and the CLI
reach them through the façade `emloc.experiment.report`. This package imports neither torch nor the engine (checked by
import-linter, `pyproject.toml`).
"""
