"""RICES: retrieval-based in-context example selection, the paper's retrieval baseline (its Table 3).

For every query, the demonstration pool is ranked by cosine similarity between embeddings of the query and of
each demonstration, and the top `k` are used as an ordinary, uncompressed many-shot context (a `FullContext`
memory built for that query alone, then the query is answered against it). Nothing is shared across queries,
so compression is never involved; the cost is one context prefill per query. As in the reference, the most
similar demonstration comes first (`order="most_similar_first"`; "most_similar_last" puts it next to the query).

Embedders are plain callables `embed(examples: list[Example]) -> array (n, d)`; rows need not be normalised.
The default, `default_embedder`, is cheap, deterministic and offline:

* image part (examples with images): per image a 12x12 RGB thumbnail (centred) and an 8x8x8 RGB colour
  histogram, averaged over the example's images;
* text part: signed feature hashing of lowercase word unigrams and bigrams of the question into 4,096 buckets
  with sublinear term frequency;
* each part is L2-normalised, weighted (`image_weight`, `text_weight`) and concatenated.

It knows nothing semantic (images are close when colours and layout are, texts when they share words). For the
reference's behaviour use `clip_embedder()` (needs `open_clip_torch` and its weights already on disk).
This module deliberately does not download anything and does not persist embeddings.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from emloc.data.base import Example
from emloc.engine.compress import FullContext

Embedder = Callable[[Sequence[Example]], Any]
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def image_features(image: Any, thumb: int = 12, bins: int = 8) -> np.ndarray:
    """A thumbnail (thumb x thumb x 3, centred) followed by a bins^3 RGB histogram (sums to 1)."""
    from emloc.engine.prompts import load_image

    img = load_image(image)
    small = np.asarray(img.resize((thumb, thumb)), dtype=np.float32).reshape(-1) / 255.0
    small = small - small.mean()
    pixels = np.asarray(img.resize((64, 64)), dtype=np.int64).reshape(-1, 3) * bins // 256
    codes = (pixels[:, 0] * bins + pixels[:, 1]) * bins + pixels[:, 2]
    hist = np.bincount(codes, minlength=bins**3).astype(np.float32)
    return np.concatenate([_unit(small[None])[0], _unit(hist[None])[0]])


def text_features(text: str, dim: int = 4096) -> np.ndarray:
    """Signed hashing of word unigrams and bigrams (blake2b, so stable across processes), sublinear tf."""
    words = _WORD.findall(str(text).lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    counts: dict[int, float] = {}
    for g in grams:
        h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
        slot, sign = h % dim, 1.0 if (h >> 63) & 1 else -1.0
        counts[slot] = counts.get(slot, 0.0) + sign
    vec = np.zeros(dim, dtype=np.float32)
    for slot, c in counts.items():
        vec[slot] = math.copysign(1.0 + math.log(abs(c)), c) if c else 0.0
    return vec


def default_embedder(examples: Sequence[Example], image_weight: float = 1.0, text_weight: float = 1.0) -> np.ndarray:
    """Image and text features of each example (see the module docstring); (n, d) float32."""
    rows = []
    for ex in examples:
        img = [image_features(im) for im in ex.images]
        img_part = _unit(np.mean(img, axis=0)[None])[0] if img else np.zeros(12 * 12 * 3 + 8**3, dtype=np.float32)
        txt_part = _unit(text_features(ex.question)[None])[0]
        rows.append(np.concatenate([image_weight * img_part, text_weight * txt_part]))
    return np.stack(rows).astype(np.float32)


def clip_embedder(model: str = "ViT-B-32", pretrained: str = "openai", device: str = "cpu") -> Embedder:
    """The reference's embedder: open_clip image embeddings (first image of each example). Weights must already
    be in the open_clip / HF cache on offline machines; nothing here forces a download."""
    try:
        import open_clip
        import torch
    except ImportError as err:
        raise RuntimeError(f"clip_embedder needs `pip install open_clip_torch`: {err}") from err
    from emloc.engine.prompts import load_image

    net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
    net.eval()

    @torch.no_grad()
    def embed(examples: Sequence[Example]) -> np.ndarray:
        missing = [ex.uid for ex in examples if not ex.images]
        if missing:
            raise ValueError(f"clip_embedder embeds images, but examples {missing[:3]} have none")
        batch = torch.stack([preprocess(load_image(ex.images[0])) for ex in examples]).to(device)
        return net.encode_image(batch).float().cpu().numpy()

    return embed


def resolve_embedder(embedder: Embedder | str | None) -> Embedder:
    """A callable, or a name: "default" (images + text), "image", "text", "clip"."""
    if embedder is None or embedder == "default":
        return default_embedder
    if embedder == "image":
        return lambda exs: default_embedder(exs, text_weight=0.0)
    if embedder == "text":
        return lambda exs: default_embedder(exs, image_weight=0.0)
    if embedder == "clip":
        return clip_embedder()
    if callable(embedder):
        return embedder
    raise ValueError(f"unknown embedder {embedder!r}; use a callable or one of default, image, text, clip")


@dataclass
class RetrievalIndex:
    pool: list[Example]
    vectors: np.ndarray  # (n, d), unit rows


@dataclass
class RICES(FullContext):
    """Per-query retrieval of the `k` most similar demonstrations, answered with an uncompressed context.

    As a method option (`method=rices`): the run's demonstrations are the retrieval pool; the shared memory is their
    full context (what the run's statistics describe), and every query is answered against its own k (`respond`).

    Parameters
    ----------
    k : demonstrations per query (reference: 40 on ImageNet, 5 on MME-RealWorld and OK-VQA).
    embedder : a callable (see the module docstring) or a name for `resolve_embedder`.
    order : where the most similar demonstration goes: "most_similar_first" (reference) or "most_similar_last".
    chunk_size : chunking of the per-query context (`FullContext`; the memory is exact either way).
    """

    option = "rices"
    label = "RICES"
    lossless = None  # k of the demonstrations per query: never the full context

    k: int = 5
    embedder: Embedder | str | None = "default"
    order: Literal["most_similar_first", "most_similar_last"] = "most_similar_first"
    show_progress: bool = False
    _embed: Embedder = field(init=False, repr=False)
    _index: tuple[tuple[str, ...], RetrievalIndex] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.order not in ("most_similar_first", "most_similar_last"):
            raise ValueError(f"order must be 'most_similar_first' or 'most_similar_last', got {self.order!r}")
        self._embed = resolve_embedder(self.embedder)

    def params(self) -> dict:
        name = (
            self.embedder
            if isinstance(self.embedder, str) or self.embedder is None
            else getattr(self.embedder, "__qualname__", type(self.embedder).__name__)
        )
        return {"k": self.k, "embedder": name, "order": self.order, "chunk_size": self.chunk_size}

    def describe(self) -> str:
        return f"RICES, k = {self.k}"

    def validate_demos(self, demos: list[Example]) -> None:
        super().validate_demos(demos)
        if len(demos) < self.k:
            raise ValueError(f"k={self.k} exceeds the {len(demos)} demonstrations RICES retrieves from")

    def respond(self, adapter, memory, renderer, queries, max_new_tokens, demos):
        """Each query against a context of its own k most similar demonstrations (the shared memory is unused)."""
        from emloc.engine.generate import respond

        ids = tuple(d.uid for d in demos)
        if self._index is None or self._index[0] != ids:
            self._index = (ids, self.index(demos))
        out = []
        for q, picked in zip(queries, self.retrieve(self._index[1], queries)):
            out += respond(
                adapter, self.memory_for(adapter, picked, renderer.instruction), renderer, [q], max_new_tokens
            )
        return out

    # ------------------------------------------------------------------------------------------- retrieval
    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        vecs = np.asarray(self._embed(list(examples)), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(examples):
            raise ValueError(f"embedder returned shape {vecs.shape} for {len(examples)} examples; expected (n, d)")
        return _unit(vecs)

    def index(self, pool: Sequence[Example]) -> RetrievalIndex:
        if len(pool) < self.k:
            raise ValueError(f"RICES k={self.k} needs at least {self.k} demonstrations in the pool, got {len(pool)}")
        return RetrievalIndex(list(pool), self.embed(pool))

    def retrieve(self, index: RetrievalIndex, queries: Sequence[Example]) -> list[list[Example]]:
        """The k demonstrations of each query, ordered by `order`; ties break towards the earlier pool entry."""
        sims = self.embed(queries) @ index.vectors.T  # (queries, pool)
        picks = []
        for q, row in zip(queries, sims):
            ranked = [i for i in np.lexsort((np.arange(row.shape[0]), -row)) if index.pool[i].uid != q.uid][: self.k]
            demos = [index.pool[i] for i in ranked]
            picks.append(demos if self.order == "most_similar_first" else demos[::-1])
        return picks

    # ------------------------------------------------------------------------------------------- answering
    def memory_for(self, adapter, demos: list[Example], instruction: str | None = None):
        return FullContext(chunk_size=self.chunk_size, show_progress=False).build(adapter, demos, instruction)

    def answer(
        self,
        adapter,
        index: RetrievalIndex,
        queries: Sequence[Example],
        instruction: str | None = None,
        max_new_tokens: int = 32,
    ) -> tuple[list[str], list[list[str]]]:
        """Predictions for `queries` (each against its own retrieved context) and the retrieved demo uids."""
        from emloc.engine.generate import answer

        renderer = adapter.renderer(instruction)
        preds, chosen = [], []
        for q, demos in zip(queries, self.retrieve(index, queries)):
            memory = self.memory_for(adapter, demos, instruction)
            preds.append(answer(adapter, memory, renderer, [q], max_new_tokens)[0])
            chosen.append([d.uid for d in demos])
        return preds, chosen


def evaluate(
    method: RICES, adapter, task, pool: Sequence[Example], queries: Sequence[Example], max_new_tokens: int = 32
) -> list[dict]:
    """Prediction rows in the runner's format (uid, question, prediction, target, correct, seconds, demo_ids)."""
    index = method.index(pool)
    rows = []
    for q in queries:
        start = time.perf_counter()
        (pred,), (demo_ids,) = method.answer(adapter, index, [q], task.instruction, max_new_tokens)
        rows.append(
            {
                "uid": q.uid,
                "question": q.question,
                "prediction": pred,
                "target": q.answer,
                "correct": task.score(q, pred),
                "seconds": time.perf_counter() - start,
                "demo_ids": demo_ids,
            }
        )
    return rows
