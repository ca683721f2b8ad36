"""The bottom layer, imported by every other: paths of the repository and its caches, the atomic writer
(`storage`), and progress reporting that suits terminals and SLURM logs (`progress`). Standard library only."""
