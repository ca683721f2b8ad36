"""Qwen2-VL and Qwen2.5-VL: image and video features scattered into the embeddings, M-RoPE positions.

Image features (`get_image_features`) fill the `<|image_pad|>` slots and video features (`get_video_features`,
real temporal patches of 2 frames) the `<|video_pad|>` slots, both in row order. Positions are the model's own
3-D M-RoPE ids (`get_rope_index`), computed per row on the row's real tokens, with the video tokens marked as
video (mm type 2) so they get the model's temporal ids; an image or a video advances the text position by
max(h, w) of its LLM grid rather than by its token count (docs/method.md §3.4). The engine adds the memory's
uncompressed offset on top. Video pixels come from `emloc.models.processor` (no torchvision needed); this module
does not decode or sample videos.
"""

from __future__ import annotations

import torch

from emloc.engine.prompts import IMAGE, Batch
from emloc.models.base import ModelAdapter

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
        """Token embeddings (bsz, L, hidden) with the visual features of the batch's images and videos scattered
        into their placeholder slots, in row order."""
        ids = batch.ids.to(self.device)
        hidden = self.decoder.embed_tokens(ids)
        model, config, vision = self.model.model, self.model.config, batch.vision
        for kind, pixels, grid, token, features in (
            ("image", "pixel_values", "image_grid_thw", config.image_token_id, model.get_image_features),
            ("video", "pixel_values_videos", "video_grid_thw", config.video_token_id, model.get_video_features),
        ):
            if pixels not in vision:
                continue
            feats = features(vision[pixels].to(self.device, model.visual.dtype), vision[grid].to(self.device))
            feats = torch.cat(list(feats.pooler_output), dim=0).to(hidden.dtype)
            slots = ids == token
            if int(slots.sum()) != feats.shape[0]:
                raise ValueError(f"{int(slots.sum())} {kind} tokens but {feats.shape[0]} {kind} features")
            hidden = hidden.masked_scatter(slots[..., None].expand_as(hidden), feats)
        return hidden

    def row_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE ids (3, bsz, L) of each row's real tokens (pads 0) and each row's extent (bsz,)."""
        bsz, width = batch.ids.shape
        pos = torch.zeros(3, bsz, width, dtype=torch.long)
        extents = torch.zeros(bsz, dtype=torch.long)
        image_grids, video_grids = batch.vision.get("image_grid_thw"), batch.vision.get("video_grid_thw")
        # Seconds of video per temporal patch (temporal_patch_size / sampling fps of the uniformly sampled frames,
        # as qwen-vl-utils computes it). Qwen2.5-VL spaces a video's temporal ids by tokens_per_second times this
        # value (absolute time); without it, it would assume one second per patch. Qwen2-VL ignores it.
        seconds = batch.vision.get("second_per_grid_ts")
        video_token = self.model.config.video_token_id
        n_images = n_videos = 0
        for b in range(bsz):
            real, row = batch.valid[b], batch.rows[b]
            ids = batch.ids[b, real][None]
            mm = (batch.kinds[b, real] == IMAGE).int()[None]
            mm[ids == video_token] = 2  # the model tells images (1) and videos (2) apart by mm type
            kw = {}
            if row.images:
                kw["image_grid_thw"] = image_grids[n_images : n_images + len(row.images)]
            if row.videos:
                kw["video_grid_thw"] = video_grids[n_videos : n_videos + len(row.videos)]
                if seconds is not None:
                    kw["second_per_grid_ts"] = seconds[n_videos : n_videos + len(row.videos)]
            n_images, n_videos = n_images + len(row.images), n_videos + len(row.videos)
            p, _ = self.model.model.get_rope_index(ids, mm, **kw)
            pos[:, b, real] = p[:, 0]
            # The next token continues after the row's last token. Rows end in text, whose three ids are equal; a
            # video's temporal ids can exceed them (the model advances text by max(h, w) after a video, whatever
            # its duration), so the row's max id + 1 would not be where the model places the following text.
            extents[b] = p[:, 0, -1].max() + 1
        return pos, extents

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor):
        return self.decoder.rotary_emb(hidden, positions)
