"""The engine: task memories and the model passes that build and read them (paper §3).

Plain torch and transformers' Cache classes; never Hydra, W&B, pandas or a concrete method. `compress` is the chunk
loop every method shares, `memory` the per-layer KV store, `attention` the prefix-aware attention, `generate` and
`fidelity` read a memory, and `pruning`, `scoring`, `divergence` and `prompts` are the pieces the methods use.
"""
