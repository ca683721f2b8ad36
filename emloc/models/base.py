"""The model adapter interface: everything the engine needs from a decoder, and nothing model-specific.

An adapter exposes a decoder as embed → positions → decoder layers → norm → lm_head, so the compressor can
(1) run a chunk with a memory prefix, (2) keep the input of every layer, and (3) re-run the upper layers from
a stored hidden state (the JS trials, docs/method.md §3.2), all without forking modeling code. Families override
`embed`, `row_positions` and `rotary`; the rest is generic. Device and dtype are whatever the loaded model
has: they come from the `backend` config, never from here.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from dataclasses import dataclass

import torch

from emloc.engine import attention
from emloc.engine.attention import AttentionContext, additive_mask
from emloc.engine.prompts import Batch, ChatRenderer, collate


@functools.cache
def _cache_kwarg(layer_cls: type) -> str:
    """What a decoder layer calls its cache argument: `cache` (transformers ≥ 5.2x) or `past_key_values` (before)."""
    return "cache" if "cache" in inspect.signature(layer_cls.forward).parameters else "past_key_values"


@dataclass
class Prepared:
    """A batch ready for the layers: input embeddings, absolute positions, segment ids, per-row extents.

    Packed (`pack=True`): the rows' real tokens are laid end to end in ONE sequence and kept apart by the mask
    (segment id = row index). A memory prefix then has batch size 1 and is never copied per row, which is what
    makes probe trials, batched decoding and candidate scoring cheap.
    """

    hidden: torch.Tensor  # (bsz, L, hidden) or (1, T, hidden) packed
    positions: torch.Tensor  # (P, bsz, L) or (P, 1, T); P = 1 (1-D RoPE) or 3 (M-RoPE)
    extents: torch.Tensor  # (rows,) first free position after each row, offset included
    seg: torch.Tensor  # (bsz, L) or (1, T): row id, -1 for padding
    valid: torch.Tensor  # (rows, L) of the unpacked batch
    packed: bool = False

    def select(self, mask: torch.Tensor) -> torch.Tensor:
        """A (rows, L) per-token mask of the unpacked batch, in this layout."""
        mask = mask.to(self.valid.device)
        return mask[self.valid][None] if self.packed else mask

    def last(self) -> torch.Tensor:
        """Index (in this layout's token axis) of each row's last real token; packed layout only."""
        return self.valid.sum(-1).cumsum(0) - 1


class ModelAdapter:
    """Generic decoder-only adapter. Subclasses set `family` and override the three family hooks."""

    family = "base"
    multimodal = False

    def __init__(self, model, tokenizer, processor=None, *, attn: str = "sdpa", name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer, self.processor = tokenizer, processor
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        attention.install(model, attn)
        self.attn = attn
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # -------------------------------------------------------------- family hooks
    @property
    def decoder(self) -> torch.nn.Module:
        """The module holding `layers`, `norm`, `rotary_emb`, `embed_tokens`."""
        return self.model.model

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.decoder.embed_tokens(batch.ids.to(self.device))

    def row_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """0-based positions (P, bsz, L) with pads at 0, and each row's extent (max position + 1)."""
        pos = (batch.valid.long().cumsum(-1) - 1).clamp_min(0)
        return pos[None], batch.valid.sum(-1)

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor):
        return self.decoder.rotary_emb(hidden, positions[0])

    # -------------------------------------------------------------- generic
    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.decoder.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def renderer(self, instruction: str | None = None) -> ChatRenderer:
        return ChatRenderer(self.tokenizer, self.processor, instruction, multimodal=self.multimodal, name=self.name)

    def collate(self, rows, pad_side: str = "right") -> Batch:
        return collate(rows, self.pad_id, pad_side, self.processor)

    def prepare(self, batch: Batch, offset: int | torch.Tensor, pack: bool = False) -> Prepared:
        """Embed and position a batch; `offset` is added to every position (an int, or one per row)."""
        pos, extents = self.row_positions(batch)
        offset = torch.as_tensor(offset, device=self.device)
        pos, valid = pos.to(self.device) + (offset[:, None] if offset.dim() else offset), batch.valid.to(self.device)
        hidden = self.embed(batch)
        rows = torch.arange(valid.shape[0], device=self.device)[:, None].expand_as(valid)
        seg = torch.where(valid, rows, -1)
        if pack:
            hidden, pos, seg = hidden[valid][None], pos[:, valid][:, None], seg[valid][None]
        return Prepared(hidden, pos, extents.to(self.device) + offset, seg, valid, pack)

    def run_layers(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        key_seg: torch.Tensor,
        ctx: AttentionContext,
        *,
        cache=None,
        start: int = 0,
        keep_inputs: bool = False,
        query_seg: torch.Tensor | None = None,
        parent_seg: torch.Tensor | None = None,
    ):
        """Run decoder layers `start..` and the final norm.

        key_seg : (bsz, k_len) segment ids of the sequence's own keys (cached + current; the current tokens last);
        query_seg : those of the current tokens (default: the last L of key_seg); parent_seg : optional extra segment
        each current token sees. See `attention.additive_mask`.
        Returns the normed final hidden states (bsz, L, hidden) and, if asked, the input of every layer run.
        """
        query_seg = key_seg[:, -hidden.shape[1] :] if query_seg is None else query_seg
        mask = additive_mask(key_seg.to(self.device), query_seg.to(self.device), hidden.dtype, parent_seg)
        cos_sin = self.rotary(hidden, positions)
        inputs = []
        cache_kw = {_cache_kwarg(type(self.layers[0])): cache}
        for layer in self.layers[start:]:
            if keep_inputs:
                inputs.append(hidden)
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=cos_sin,
                use_cache=cache is not None,
                emloc=ctx,
                **cache_kw,
            )
        return self.decoder.norm(hidden), inputs

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)

    def kv_heads(self) -> int:
        cfg = self.model.config.get_text_config()
        return cfg.num_key_value_heads

    def signature(self) -> dict[str, str]:
        """Identity of model weights/config and tokenizer; a saved memory only loads into a matching model."""
        cfg = self.model.config.to_dict()
        (
            cfg.pop("_name_or_path", None),
            cfg.pop("_attn_implementation_autoset", None),
            cfg.pop("attn_implementation", None),
        )
        cfg.pop("_attn_implementation", None)
        h = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode())
        params = list(self.model.parameters())
        for t in (params[0], params[len(params) // 2], params[-1]):
            h.update(t.detach().float().cpu().reshape(-1)[:4096].numpy().tobytes())
        tok = self.tokenizer
        th = hashlib.sha1(json.dumps([len(tok), tok.chat_template, tok.all_special_tokens], default=str).encode())
        out = {"model_family": self.family, "model_hash": h.hexdigest()[:16], "tokenizer_hash": th.hexdigest()[:16]}
        if self.processor is not None:  # image resolution (min/max pixels) changes what a memory holds
            proc = getattr(self.processor, "image_processor", self.processor).to_dict()
            out["processor_hash"] = hashlib.sha1(json.dumps(proc, sort_keys=True, default=str).encode()).hexdigest()[
                :16
            ]
        return out
