"""The task memory: a compressed, reusable per-layer KV cache of the demonstrations (paper §3, docs/method.md §3.5).

`TaskMemory` is a transformers `Cache` with one `DynamicLayer` per decoder layer. Layers have independent
lengths. In a memory built chunk by chunk every KV head of a layer keeps the same count (a different token set);
a per-head layer (`select_heads`, the whole-context path, docs/method.md §8) keeps a count per KV head, stored flat
with no padding (`attention.Ragged`): its bytes are its entries'. Keys are stored after RoPE and are never re-rotated: a kept entry keeps the position
it had in the uncompressed context, and anything that runs after the memory starts at `position_offset`,
the *uncompressed* position extent (for M-RoPE: the sum over chunks of max position id + 1, not a token
count).

This module is the only one that touches cache internals. It deliberately does not run models: the memory
is made by `compress` and consumed through the attention wrapper in `attention`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.cache_utils import Cache, DynamicLayer

from emloc.engine.attention import KV, Ragged
from emloc.utils.storage import atomic_dir

FORMAT_VERSION = 1


def memory_key(
    model: dict[str, Any], device: str, dtype: str, method: dict[str, Any], demo_ids: list[str], instruction: str | None
) -> str:
    """The cache key of a task memory: everything it depends on, and nothing else.

    model : the adapter's `signature()` (weights, config, tokenizer, processor); device : the device kind ("cpu",
    "cuda", "npu": kernels differ, so a memory built on one is not reused on another); dtype : the weights' dtype;
    method : the method's `identity()` (option, parameters, revision); demo_ids : the demonstrations, in order;
    instruction : the system turn. Evaluation settings are not part of it, so runs that differ only in how they
    evaluate share one memory. 16 hex characters.
    """
    parts = {"model": model, "device": device, "dtype": dtype, "method": method, "demos": list(demo_ids),
             "instruction": instruction}  # fmt: skip
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CorruptMemoryError(ValueError):
    """A saved memory whose files are damaged (truncated, or not what was written): its checksum or format fails."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class MemoryMismatchError(ValueError):
    """A saved memory was loaded for a model (or tokenizer) other than the one that made it."""


@dataclass
class ChunkRecord:
    """What happened to one chunk: its size and, per layer, what was kept and the divergence accepted."""

    index: int
    num_demos: int
    num_tokens: int
    kept: list[int]  # per layer: entries kept per KV head
    js: list[float | None]  # per layer: JS of the accepted trial covering this layer (None: never tested)
    kept_by_kind: list[dict[str, float]] = field(default_factory=list)  # per layer: mean over heads
    tokens_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    trials: int = 0
    rungs: list[int] = field(
        default_factory=list
    )  # per layer: rung taken on the keep-ratio ladder (len = kept in full)
    extent: int | None = None  # positions the chunk spans (None in memories saved before it was recorded: tokens)
    sizing: list[list[float]] = field(default_factory=list)  # whole-context sizing: [fraction kept, tuning JS] tried


class TaskMemory(Cache):
    """Per-layer KV memory plus the metadata needed to reuse it safely.

    Parameters
    ----------
    num_layers : int
        number of decoder layers of the model.
    provenance : dict
        model signature, tokenizer hash, demo ids and method parameters (checked on load).
    """

    def __init__(self, num_layers: int, provenance: dict[str, Any] | None = None) -> None:
        super().__init__(layers=[DynamicLayer() for _ in range(num_layers)])
        self.position_offset = 0  # uncompressed position extent: the first position after the memory
        self.num_source_tokens = 0  # tokens of the uncompressed context
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.chunks: list[ChunkRecord] = []
        self.head_lengths: dict[int, list[int]] = {}  # per-head layers: entries of each KV head (stored flat)

    # ------------------------------------------------------------------ access
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def kv(self, layer: int) -> KV | Ragged | None:
        """(keys, values) of a layer, each (1, num_kv_heads, length, head_dim), or the `Ragged` layer of a per-head
        memory; None when empty."""
        lay = self.layers[layer]
        if not lay.is_initialized or lay.keys.numel() == 0:
            return None
        if layer in self.head_lengths:
            return Ragged(lay.keys, lay.values, tuple(self.head_lengths[layer]))
        return lay.keys, lay.values

    def entries(self, layer: int) -> float:
        """Entries of a layer per KV head (the mean over heads for a per-head layer)."""
        if layer in self.head_lengths:
            return sum(self.head_lengths[layer]) / len(self.head_lengths[layer])
        return 0 if (kv := self.kv(layer)) is None else kv[0].shape[-2]

    def lengths(self) -> list[int]:
        """Entries per layer of a memory whose heads keep equal counts (what a chunk-wise build appends to)."""
        if self.head_lengths:
            raise ValueError("a per-head memory has no single length per layer; see `entries` and `head_lengths`")
        return [int(self.entries(i)) for i in range(self.num_layers)]

    def prefix(self, lengths: list[int] | None = None) -> list[KV | Ragged | None]:
        """The per-layer prefix handed to the attention wrapper; with `lengths`, only the first lengths[l] entries
        of each layer (views, no copy)."""
        out = [self.kv(i) for i in range(self.num_layers)]
        if lengths is None:
            return out
        if self.head_lengths:
            raise ValueError("a per-head memory has no prefix by length: it is selected over the whole context")
        return [None if kv is None or n == 0 else (kv[0][:, :, :n], kv[1][:, :, :n]) for kv, n in zip(out, lengths)]

    def select_heads(self, keep: list[list[torch.Tensor]], record: ChunkRecord | None = None) -> TaskMemory:
        """A per-head memory of this (uniform) one: `keep[l][h]` the indices KV head h of layer l keeps, in any
        order (kept in position order). The kept keys and values are these exact tensors, positions unchanged."""
        new = TaskMemory(self.num_layers, self.provenance)
        for layer, heads in enumerate(keep):
            kv = self.kv(layer)
            if kv is None or isinstance(kv, Ragged):
                raise ValueError(f"layer {layer}: select_heads needs a uniform, non-empty layer")
            idx = [i.to(kv[0].device).sort().values for i in heads]
            new.layers[layer].update(*(torch.cat([t[:, h : h + 1, i] for h, i in enumerate(idx)], dim=2) for t in kv))
            new.head_lengths[layer] = [len(i) for i in idx]
        new.position_offset, new.num_source_tokens = self.position_offset, self.num_source_tokens
        new.chunks = [record] if record is not None else []
        return new

    def chunk_ends(self) -> list[tuple[list[int], int, int]]:
        """After each chunk: (entries per layer, source tokens, position offset) — what the memory was then."""
        ends, entries, tokens, offset = [], [0] * self.num_layers, 0, 0
        for c in self.chunks:
            entries = [e + k for e, k in zip(entries, c.kept)]
            tokens += c.num_tokens
            offset += c.extent if c.extent is not None else c.num_tokens
            ends.append((entries, tokens, offset))
        return ends

    # ------------------------------------------------------------------ building
    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append entries to one layer. keys/values: (1, num_kv_heads, n, head_dim)."""
        if layer in self.head_lengths:
            raise ValueError(f"layer {layer} is per-head: entries are chosen over the whole context, not appended")
        if keys.shape != values.shape or keys.ndim != 4 or keys.shape[0] != 1:
            raise ValueError(
                f"expected (1, heads, n, head_dim) keys and values, got {tuple(keys.shape)}, {tuple(values.shape)}"
            )
        if keys.shape[-2] == 0:
            return
        self.layers[layer].update(keys.contiguous(), values.contiguous())

    def advance(self, extent: int, num_tokens: int) -> None:
        """Record that a chunk of `num_tokens` tokens spanning `extent` positions was consumed."""
        self.position_offset += int(extent)
        self.num_source_tokens += int(num_tokens)

    def clone(self) -> TaskMemory:
        new = TaskMemory(self.num_layers, self.provenance)
        for i, lay in enumerate(self.layers):
            if lay.is_initialized and lay.keys.numel():
                new.layers[i].update(lay.keys.clone(), lay.values.clone())
        new.head_lengths = {i: list(n) for i, n in self.head_lengths.items()}
        new.position_offset, new.num_source_tokens = self.position_offset, self.num_source_tokens
        new.chunks = list(self.chunks)
        return new

    # ------------------------------------------------------------------ statistics
    @property
    def memory_tokens(self) -> float:
        """Mean entries per layer (per KV head): the paper's "context length" of a memory."""
        return sum(self.entries(i) for i in range(self.num_layers)) / max(self.num_layers, 1)

    @property
    def retention(self) -> float:
        return self.memory_tokens / self.num_source_tokens if self.num_source_tokens else 1.0

    def nbytes(self) -> int:
        return sum(lay.keys.numel() * lay.keys.element_size() * 2 for lay in self.layers if lay.is_initialized)

    def stats(self) -> dict[str, Any]:
        """JSON-ready summary: per layer lengths and per chunk records."""
        return {
            "num_layers": self.num_layers,
            "position_offset": self.position_offset,
            "num_source_tokens": self.num_source_tokens,
            "memory_tokens": self.memory_tokens,
            "retention": self.retention,
            "bytes": self.nbytes(),
            "layer_lengths": [self.entries(i) for i in range(self.num_layers)],
            "head_lengths": {str(i): n for i, n in self.head_lengths.items()},
            "chunks": [vars(c) for c in self.chunks],
        }

    def fingerprint(self) -> str:
        """sha1 over every stored tensor byte and the offset: equal iff bit-identical."""
        h = hashlib.sha1(str(self.position_offset).encode())
        for i, lay in enumerate(self.layers):
            if lay.is_initialized:
                for t in (lay.keys, lay.values):
                    h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            h.update(f"|{i}{self.head_lengths.get(i, '')}".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `memory.safetensors` + `memory.json` atomically (a temp folder swapped into place)."""
        with atomic_dir(directory) as tmp:
            tensors = {}
            for i, lay in enumerate(self.layers):
                if lay.is_initialized and lay.keys.numel():
                    tensors[f"k.{i}"], tensors[f"v.{i}"] = (
                        t.detach().cpu().contiguous() for t in (lay.keys, lay.values)
                    )
            save_file(tensors, tmp / "memory.safetensors")
            meta = {"format": FORMAT_VERSION, "sha256": _sha256(tmp / "memory.safetensors"), "num_layers": self.num_layers, "position_offset": self.position_offset,
                    "num_source_tokens": self.num_source_tokens, "provenance": self.provenance,
                    "chunks": [vars(c) for c in self.chunks],
                    "head_lengths": {str(i): n for i, n in self.head_lengths.items()}}  # fmt: skip
            (tmp / "memory.json").write_text(json.dumps(meta, indent=1, default=str))
        return Path(directory)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        expect: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> TaskMemory:
        """Load a saved memory. `expect` maps provenance keys (e.g. model signature) to required values."""
        d = Path(directory)
        if not (d / "memory.json").is_file():
            raise FileNotFoundError(f"no saved task memory in {d} (memory.json missing)")
        try:
            meta = json.loads((d / "memory.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptMemoryError(f"{d / 'memory.json'} is damaged ({err})") from err
        tensors_file = d / "memory.safetensors"
        if not tensors_file.is_file():
            raise CorruptMemoryError(f"{tensors_file} is missing")
        if "sha256" in meta and _sha256(tensors_file) != meta["sha256"]:  # older memories have no checksum
            raise CorruptMemoryError(
                f"{tensors_file} is damaged: its sha256 is not the one recorded when it was saved "
                f"({tensors_file.stat().st_size} bytes)"
            )
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported memory format {meta.get('format')!r} in {d}")
        for key, want in (expect or {}).items():
            have = meta["provenance"].get(key)
            if have != want:
                raise MemoryMismatchError(
                    f"memory in {d} was built with {key}={have!r}, but this model has {key}={want!r}"
                )
        mem = cls(meta["num_layers"], meta["provenance"])
        heads = {int(i): list(n) for i, n in meta.get("head_lengths", {}).items()}  # absent before per-head layers
        try:
            tensors = load_file(tensors_file, device=str(device))
        except Exception as err:  # safetensors' own error for a truncated or garbled file
            raise CorruptMemoryError(f"{tensors_file} is damaged ({err})") from err
        for i in range(mem.num_layers):
            if f"k.{i}" in tensors:
                k, v = tensors[f"k.{i}"], tensors[f"v.{i}"]
                if dtype is not None:
                    k, v = k.to(dtype), v.to(dtype)
                if i in heads and sum(heads[i]) != k.shape[-2]:
                    raise CorruptMemoryError(f"{d}: layer {i} holds {k.shape[-2]} entries, its heads {sum(heads[i])}")
                mem.layers[i].update(k.contiguous(), v.contiguous())
        mem.head_lengths = heads
        mem.position_offset, mem.num_source_tokens = meta["position_offset"], meta["num_source_tokens"]
        renamed = {"steps": "rungs"}  # memories saved before the rename
        mem.chunks = [ChunkRecord(**{renamed.get(k, k): v for k, v in c.items()}) for c in meta["chunks"]]
        return mem
