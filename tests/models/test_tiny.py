"""Tiny random models: tokenizer, chat template, determinism, forward passes, processor and M-RoPE plumbing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from emloc.models import tiny

MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": [{"type": "text", "text": "And here?"}, {"type": "image"}]},
    {"role": "assistant", "content": "Blue, 42 of them."},
]


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_tokenizer_is_deterministic_and_has_single_special_tokens():
    assert tiny._trained_tokenizer_json.__wrapped__() == tiny._trained_tokenizer_json()
    tok = tiny.tiny_tokenizer()
    assert 300 <= len(tok) <= 1000
    ids = [tok.encode(t, add_special_tokens=False) for t in tiny.SPECIAL_TOKENS]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == len(tiny.SPECIAL_TOKENS)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>" and tok.pad_token_id is not None
    assert set(tiny.SPECIAL_TOKENS) <= set(tok.all_special_tokens)


@pytest.mark.parametrize("text", ["Cao Bằng", "x = 3.14; y != 2!", "日本語 🙂 tab\there\n", "zqxjkv wvutsr"])
def test_any_text_round_trips(text):
    tok = tiny.tiny_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    assert ids and max(ids) < len(tok)
    assert tok.decode(ids) == text


def test_chat_template_layout():
    tok = tiny.tiny_tokenizer()
    text = tok.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What color is the circle?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    custom = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(custom, tokenize=False) == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    with pytest.raises(Exception, match="tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("k", [1, 3])
def test_chat_template_is_prefix_stable(k):
    tok = tiny.tiny_tokenizer()
    assert MESSAGES[k]["role"] == "assistant"
    prefix = tok.apply_chat_template(MESSAGES[:k], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert full.startswith(prefix)
    # and at the token level too, for answers not starting with whitespace
    prefix_ids = tok.encode(prefix, add_special_tokens=False)
    assert tok.encode(full, add_special_tokens=False)[: len(prefix_ids)] == prefix_ids


@pytest.mark.parametrize("family", tiny.TEXT_FAMILIES)
def test_text_model_deterministic_forward(family):
    start = time.perf_counter()
    model, tok = tiny.tiny_text_model(family, seed=0)
    assert time.perf_counter() - start < 2.0
    again, _ = tiny.tiny_text_model(family, seed=0)
    other, _ = tiny.tiny_text_model(family, seed=1)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    assert any(not torch.equal(state[k], state_other[k]) for k in state)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (64, 4, 2, len(tok))
    assert not model.training and model.dtype == torch.float32
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == (family == "smollm")
    batch = tok(["What color is the circle?", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    eager, _ = tiny.tiny_text_model(family, seed=0, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(eager(**batch).logits[0], logits[0], atol=1e-4, rtol=1e-4)


def test_rotary_conventions():
    model, _ = tiny.tiny_text_model("llama")
    cos, sin = model.model.rotary_emb(torch.zeros(2, 5, 64), torch.arange(5)[None].expand(2, -1))
    assert cos.shape == sin.shape == (2, 5, 16)
    vl, _ = tiny.tiny_vl_model("qwen2_vl")
    positions = torch.arange(5).view(1, 1, -1).expand(3, 2, -1)
    cos3, _ = vl.model.language_model.rotary_emb(torch.zeros(2, 5, 64), positions)
    assert cos3.shape == (2, 5, 16)
    assert sum(vl.config.text_config.rope_parameters["mrope_section"]) == 16 // 2


def test_unknown_family_names_the_value():
    with pytest.raises(ValueError, match="'gpt2'"):
        tiny.tiny_text_model("gpt2")
    with pytest.raises(ValueError, match="'llava'"):
        tiny.tiny_vl_model("llava")


@pytest.mark.parametrize("family", tiny.VL_FAMILIES)
def test_vl_model_processor_and_forward(family):
    start = time.perf_counter()
    model, processor = tiny.tiny_vl_model(family, seed=0)
    assert time.perf_counter() - start < 2.0
    again, _ = tiny.tiny_vl_model(family, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    tok = processor.tokenizer
    assert model.config.image_token_id == processor.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.text_config.vocab_size == len(tok)

    text = processor.apply_chat_template(MESSAGES[:3], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_image(64, 64), _image(80, 100, seed=1)], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert grid[0].tolist() == [1, 4, 4]  # 64x64 -> 56x56 -> 4x4 patches -> 4 tokens
    n_pad = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_pad == int((grid.prod(-1) // 4).sum()) == int((inputs["mm_token_type_ids"] == 1).sum())
    assert inputs["pixel_values"].shape[0] == int(grid.prod(-1).sum())

    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tok))
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=grid, attention_mask=inputs["attention_mask"]
    )
    assert positions.shape == (3, 1, inputs["input_ids"].shape[1]) and deltas.shape == (1, 1)
    assert int(positions.max()) + 1 - inputs["input_ids"].shape[1] == int(deltas)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs, position_ids=positions).logits, out.logits)

    language = model.model.language_model
    assert len(language.layers) == 3 and language.norm is not None and model.lm_head is not None
    features = model.model.get_image_features(inputs["pixel_values"], grid).pooler_output
    assert [f.shape for f in features] == [(int(g.prod()) // 4, 64) for g in grid]
    with pytest.raises(ValueError, match="video_pad"):  # videos work (tests/test_video.py), but need placeholders
        processor(text=["no placeholder"], videos=[np.zeros((2, 28, 28, 3), dtype=np.uint8)])
