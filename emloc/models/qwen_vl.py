"""Qwen2-VL and Qwen2.5-VL: vision features scattered into the embeddings, M-RoPE positions.

Positions are the model's own 3-D M-RoPE ids (`get_rope_index`), computed per row on the row's real tokens,
so an image advances the position by max(h, w) of its LLM grid rather than by its token count
(method.md §3.4). The engine adds the memory's uncompressed offset on top. Video is not supported here:
torchvision (which the video processor needs) cannot be installed next to the CPU torch build.
"""

from __future__ import annotations

import torch

from emloc.models.base import ModelAdapter
from emloc.prompts import IMAGE, Batch

SUPPORTED = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")


class QwenVLAdapter(ModelAdapter):
    family = "qwen_vl"
    multimodal = True

    def __init__(self, model, tokenizer, processor=None, **kw) -> None:
        if type(model).__name__ not in SUPPORTED:
            raise NotImplementedError(
                f"no Qwen-VL adapter for {type(model).__name__}; supported: {', '.join(SUPPORTED)}"
            )
        super().__init__(model, tokenizer, processor, **kw)

    @property
    def decoder(self) -> torch.nn.Module:
        return self.model.model.language_model

    def embed(self, batch: Batch) -> torch.Tensor:
        ids = batch.ids.to(self.device)
        hidden = self.decoder.embed_tokens(ids)
        if batch.vision:
            pixels = batch.vision["pixel_values"].to(self.device, self.model.model.visual.dtype)
            feats = self.model.model.get_image_features(pixels, batch.vision["image_grid_thw"].to(self.device))
            feats = torch.cat(list(feats.pooler_output), dim=0).to(hidden.dtype)
            slots = ids == self.model.config.image_token_id
            if int(slots.sum()) != feats.shape[0]:
                raise ValueError(f"{int(slots.sum())} image tokens but {feats.shape[0]} image features")
            hidden = hidden.masked_scatter(slots[..., None].expand_as(hidden), feats)
        return hidden

    def row_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        bsz, width = batch.ids.shape
        pos = torch.zeros(3, bsz, width, dtype=torch.long)
        extents = torch.zeros(bsz, dtype=torch.long)
        grids = batch.vision.get("image_grid_thw")
        used = 0
        for b in range(bsz):
            real = batch.valid[b]
            ids = batch.ids[b, real][None]
            mm = (batch.kinds[b, real] == IMAGE).int()[None]
            n_img = len(batch.rows[b].images)
            g = grids[used : used + n_img] if n_img else None
            used += n_img
            p, _ = self.model.model.get_rope_index(ids, mm, image_grid_thw=g)
            pos[:, b, real] = p[:, 0]
            extents[b] = p.max() + 1
        return pos, extents

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor):
        return self.decoder.rotary_emb(hidden, positions)
