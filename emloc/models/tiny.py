"""Tiny random models of every supported family, built offline in milliseconds, for tests and `debug` runs.

`tiny_tokenizer` trains a small byte-level BPE in-process on a fixed corpus (deterministic; any text encodes,
since every byte is in the alphabet) and gives it the Qwen special tokens and a Qwen2-VL-style chat template
(text, image and video items, as the real template renders them).
`tiny_text_model` builds Llama / Qwen2 / SmolLM-shaped decoders and `tiny_vl_model` Qwen2-VL / Qwen2.5-VL
models from small configs (hidden 64, 4 query heads sharing 2 KV heads, head_dim 16), seeded so that the
weights depend only on `seed`, and returns them in float32 eval mode.

The weights are random: outputs are meaningless, only shapes, positions and plumbing are real. This module
deliberately does not download, cache to disk, or touch the global torch RNG state.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from emloc.models.processor import QwenVLProcessor, qwen_vl_processor

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VOCAB_SIZE = 768  # upper bound for the BPE trainer; this corpus stops at 567 tokens (merges run out)
TEXT_FAMILIES = ("llama", "qwen2", "smollm")
VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
# A 64x64 image becomes a 4x4 patch grid = 4 visual tokens; the largest images get 16.
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16
# Larger than the usual 0.02 so random attention is far from uniform and token rankings are not float noise.
INIT_RANGE = 0.1

_CORPUS = """\
You are a helpful assistant. Answer the question with a single word or a short phrase.
What color is the circle? The circle is red. What shape is blue? The triangle is blue.
Is there a square in the image? Yes, there is a green square next to a yellow rectangle.
How many objects are there? There are 3 objects: one, two, three. Count 0 1 2 3 4 5 6 7 8 9 10.
What is the capital of France? Paris. The capital of Vietnam is Hanoi; Cao Bằng is a province.
Which animal is in the picture? A dog, a cat, a bird and a horse stand near the tree.
Question: what is shown here? Answer: a photo of a person riding a bike on the street.
The quick brown fox jumps over the lazy dog. Numbers like 12, 345 and 6789 appear often.
Classify the image: positive or negative, true or false, left or right, small or large.
"""

CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unsupported chat role ' ~ message['role']) }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' ~ message['role'] ~ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- else -%}{{ raise_exception('unsupported content item type ' ~ item['type']) }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh (mutable) copy of the deterministic tiny tokenizer; training happens once per process."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    for token in SPECIAL_TOKENS:
        if len(tokenizer.encode(token, add_special_tokens=False)) != 1:  # guards tokenizers-library changes
            raise RuntimeError(f"special token {token!r} is not a single token in the tiny tokenizer")
    return tokenizer


def _token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _text_kwargs(tokenizer: PreTrainedTokenizerFast, layers: int, rope: dict[str, Any]) -> dict[str, Any]:
    return {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "initializer_range": INIT_RANGE,
        "rope_parameters": rope,
        **_token_ids(tokenizer),
    }


def _build(
    model_class: type[PreTrainedModel],
    config: Any,
    seed: int,
    attn_implementation: str,
    tokenizer: PreTrainedTokenizerFast,
) -> PreTrainedModel:
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.to(torch.float32).eval()
    # stop generation at the end of a chat turn as well as at end-of-text
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_text_model(
    family: str = "llama", seed: int = 0, attn_implementation: str = "sdpa"
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """(model, tokenizer) for `family` in "llama" (LlamaForCausalLM), "qwen2" (Qwen2ForCausalLM, q/k/v biases)
    or "smollm" (LlamaForCausalLM with tied embeddings and SmolLM2's rope theta)."""
    tokenizer = tiny_tokenizer()
    if family == "llama":
        config = LlamaConfig(**_text_kwargs(tokenizer, 4, {"rope_type": "default", "rope_theta": 10000.0}))
        return _build(LlamaForCausalLM, config, seed, attn_implementation, tokenizer), tokenizer
    if family == "smollm":
        config = LlamaConfig(
            **_text_kwargs(tokenizer, 4, {"rope_type": "default", "rope_theta": 100000.0}), tie_word_embeddings=True
        )
        return _build(LlamaForCausalLM, config, seed, attn_implementation, tokenizer), tokenizer
    if family == "qwen2":
        config = Qwen2Config(
            **_text_kwargs(tokenizer, 4, {"rope_type": "default", "rope_theta": 1000000.0}), tie_word_embeddings=False
        )
        return _build(Qwen2ForCausalLM, config, seed, attn_implementation, tokenizer), tokenizer
    raise ValueError(f"unknown text family {family!r}; expected one of {TEXT_FAMILIES}")


def tiny_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> QwenVLProcessor:
    """The torchvision-free Qwen2-VL processor (images and videos) over the tiny tokenizer, with small pixel
    bounds (also per video frame)."""
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    return qwen_vl_processor(tokenizer or tiny_tokenizer(), image_processor)


def tiny_vl_model(
    family: str = "qwen2_vl", seed: int = 0, attn_implementation: str = "sdpa"
) -> tuple[PreTrainedModel, QwenVLProcessor]:
    """(model, processor) for `family` in "qwen2_vl" (Qwen2VLForConditionalGeneration) or "qwen2_5_vl"
    (Qwen2_5_VLForConditionalGeneration). M-RoPE sections [2, 3, 3] cover head_dim/2 = 8 frequencies."""
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids
    text = _text_kwargs(tokenizer, 3, {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]})
    vision_common = {
        "depth": 2,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": INIT_RANGE,
    }
    top = {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
        "tie_word_embeddings": False,
    }
    if family == "qwen2_vl":
        vision = {**vision_common, "embed_dim": 32, "mlp_ratio": 2, "hidden_size": 64}
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **top)
        model_class: type[PreTrainedModel] = Qwen2VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        vision = {
            **vision_common,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": 64,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **top)
        model_class = Qwen2_5_VLForConditionalGeneration
    else:
        raise ValueError(f"unknown vision-language family {family!r}; expected one of {VL_FAMILIES}")
    return _build(model_class, config, seed, attn_implementation, tokenizer), processor
