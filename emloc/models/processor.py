"""An image-only processor for Qwen2-VL and Qwen2.5-VL that works without torchvision.

The stock `Qwen2VLProcessor` / `Qwen2_5_VLProcessor` require a video processor, and the Qwen2-VL video
processor cannot be built without torchvision, which is not installed on CPU machines. For images the two
stock processors behave identically (same placeholder expansion, same `mm_token_type_ids`), so one subclass
of `Qwen2VLProcessor` that declares only an image processor and a tokenizer serves both families, the tiny
random models as well as real checkpoints.

It deliberately does not handle videos: passing `videos=` is an error.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without the video processor: `__call__(text=..., images=...)` works as the stock one.

    `ProcessorMixin` derives the sub-processors it expects from this `__init__`'s parameter names, so the
    signature below (no `video_processor`) is what makes the video processor optional.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = _single_token_id(tokenizer, self.image_token)
        self.video_token_id = _single_token_id(tokenizer, self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise ValueError(f"{type(self).__name__} handles images only; got videos={type(videos).__name__}")
        return super().__call__(images=images, text=text, **kwargs)


def _single_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"tokenizer splits the placeholder {token!r} into {len(ids)} tokens {ids}; expected one")
    return ids[0]


def image_only_processor(
    tokenizer: PreTrainedTokenizerBase, image_processor: Any, chat_template: str | None = None
) -> ImageOnlyQwen2VLProcessor:
    """Build the processor; `chat_template` defaults to the tokenizer's own."""
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None)
    return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=chat_template)
