"""A Qwen2-VL / Qwen2.5-VL processor for images and videos that works without torchvision.

The stock `Qwen2VLProcessor` / `Qwen2_5_VLProcessor` require the stock video processor, which cannot be built
without torchvision (not installable next to the CPU torch build). `QwenVLProcessor` declares only an image
processor and a tokenizer, and computes video pixels itself with `FrameVideoProcessor`: every frame resized by the
image processor's rules (`smart_resize` to multiples of patch * merge within its min/max pixels, PIL bicubic),
rescaled and normalised with its mean/std, the frame count padded to a multiple of `temporal_patch_size` by
repeating the last frame, then cut into patches with real temporal grouping, in the stock video processor's
layout. A video of identical frames therefore gets exactly the pixels the image path gives that frame (which
tiles one frame temporally). One class serves both families: for images and videos they expand placeholders and
build `mm_token_type_ids` the same way; `second_per_grid_ts` (used by Qwen2.5-VL only) is always returned.

It does not decode video files or sample frames (`emloc.data.video` does), apply qwen-vl-utils' total-pixel cap for
long videos, or resize with torchvision (so pixels can differ from a torchvision resize by interpolation noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase
from transformers.image_processing_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from emloc.data.video import Clip, is_video_file, load_video


class FrameVideoProcessor:
    """Video pixels for Qwen2-VL / Qwen2.5-VL from decoded frames, with the image processor's settings.

    Parameters
    ----------
    image_processor : the model's Qwen2-VL image processor (min/max pixels, patch, merge and temporal patch
        sizes, rescale factor, mean and std are read from it at every call).
    """

    model_input_names = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    @property
    def patch_size(self) -> int:
        return self.image_processor.patch_size

    @property
    def merge_size(self) -> int:
        return self.image_processor.merge_size

    @property
    def temporal_patch_size(self) -> int:
        return self.image_processor.temporal_patch_size

    def frames(self, clip: Clip) -> np.ndarray:
        """Resized, rescaled, normalised frames (T, C, H, W) float32; H and W are multiples of patch * merge."""
        ip = self.image_processor
        first = clip.frames[0]
        height, width = first.height, first.width
        if ip.do_resize:
            factor = self.patch_size * self.merge_size
            height, width = smart_resize(
                height, width, factor, min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"]
            )
        mean, std = np.asarray(ip.image_mean, np.float32), np.asarray(ip.image_std, np.float32)
        out = []
        for frame in clip.frames:
            frame = frame.convert("RGB")
            if ip.do_resize:  # like the image path, resample even when the size is already right
                frame = frame.resize((width, height), resample=ip.resample)
            pixels = np.asarray(frame)  # (H, W, C) uint8
            if ip.do_rescale:  # the image processor's rescale: multiply in float64, store float32
                pixels = (pixels.astype(np.float64) * ip.rescale_factor).astype(np.float32)
            else:
                pixels = pixels.astype(np.float32)
            if ip.do_normalize:
                pixels = (pixels - mean) / std
            out.append(pixels.transpose(2, 0, 1))
        return np.stack(out)

    def patchify(self, video: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Patches of one video (T, C, H, W) in the stock Qwen2-VL video layout.

        Returns
        -------
        patches : (grid_t * grid_h * grid_w, C * temporal_patch_size * patch * patch) float32, rows ordered by
            (t, merge-block row, merge-block column, row in block, column in block), each row ordered
            (channel, frame in the temporal patch, y, x).
        grid : [grid_t, grid_h, grid_w] in patches.
        """
        tp, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        pad = -video.shape[0] % tp
        if pad:  # repeat the last frame up to a whole temporal patch
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        frames, channels, height, width = video.shape
        gt, gh, gw = frames // tp, height // p, width // p
        blocks = video.reshape(gt, tp, channels, gh // m, m, p, gw // m, m, p)
        # -> (t, block row, block col, row in block, col in block, channel, frame in patch, y, x)
        blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return blocks.reshape(gt * gh * gw, channels * tp * p * p), [gt, gh, gw]

    def __call__(self, videos: Any, return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        """Pixels of a list of videos (each a `Clip` or a sequence of frames, see `emloc.data.video.load_video`).

        Returns
        -------
        BatchFeature with
        pixel_values_videos : (sum of grid_t * grid_h * grid_w, C * temporal_patch_size * patch * patch)
        video_grid_thw : (num_videos, 3) int64
        second_per_grid_ts : (num_videos,) seconds of video per temporal patch (temporal_patch_size / fps)
        """
        clips = _clips(videos)
        patches, grids = zip(*(self.patchify(self.frames(c)) for c in clips))
        data = {
            "pixel_values_videos": np.concatenate(patches),
            "video_grid_thw": np.asarray(grids, dtype=np.int64),
            "second_per_grid_ts": np.asarray([self.temporal_patch_size / c.fps for c in clips], dtype=np.float32),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


class QwenVLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without torchvision: `__call__(text=..., images=..., videos=...)` works as the stock one.

    `ProcessorMixin` derives the sub-processors it expects from this `__init__`'s parameter names, so the
    signature below (no `video_processor`) is what makes the stock video processor optional; `video_processor`
    is a `FrameVideoProcessor` over the image processor instead. Videos are `Clip`s or sequences of frames.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = _single_token_id(tokenizer, self.image_token)
        self.video_token_id = _single_token_id(tokenizer, self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    @property
    def video_processor(self) -> FrameVideoProcessor:
        return FrameVideoProcessor(self.image_processor)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is None:
            return super().__call__(images=images, text=text, **kwargs)
        clips = _clips(videos)
        # the stock flow counts videos, expands each `<|video_pad|>` to grid_t*grid_h*grid_w / merge² copies,
        # marks them 2 in mm_token_type_ids and calls `video_processor` on the frames; the clips' rates are lost
        # on the way (frame lists carry none), so second_per_grid_ts is set from the clips afterwards
        out = super().__call__(images=images, text=text, videos=[list(c.frames) for c in clips], **kwargs)
        seconds = [self.video_processor.temporal_patch_size / c.fps for c in clips]
        out["second_per_grid_ts"] = torch.tensor(seconds) if kwargs.get("return_tensors") == "pt" else seconds
        return out


ImageOnlyQwen2VLProcessor = QwenVLProcessor  # the name before videos were supported


def _clips(videos: Any) -> list[Clip]:
    """Clips from one video or a list of videos (`Clip`s or frame sequences); files must be decoded first."""
    if isinstance(videos, (Clip, np.ndarray)) or (videos and isinstance(videos[0], Image.Image)):
        videos = [videos]  # one video
    for v in videos:
        if is_video_file(v) or isinstance(v, str):
            raise ValueError(f"decode video files before processing (emloc.data.video.read_clip): got {v!s}")
    return [load_video(v, num_frames=1) for v in videos]


def _single_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"tokenizer splits the placeholder {token!r} into {len(ids)} tokens {ids}; expected one")
    return ids[0]


def qwen_vl_processor(
    tokenizer: PreTrainedTokenizerBase, image_processor: Any, chat_template: str | None = None
) -> QwenVLProcessor:
    """Build the processor; `chat_template` defaults to the tokenizer's own."""
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None)
    return QwenVLProcessor(image_processor, tokenizer, chat_template=chat_template)


image_only_processor = qwen_vl_processor  # the name before videos were supported
