"""Decoder-only text LMs (Llama, Qwen2, SmolLM, Mistral families): 1-D RoPE, token embeddings only.

Everything generic lives in `base.ModelAdapter`; this module only names the supported architectures so an
unsupported one fails loudly instead of silently mis-positioning the memory.
"""

from __future__ import annotations

from emloc.models.base import ModelAdapter

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM")


class TextAdapter(ModelAdapter):
    family = "text"

    def __init__(self, model, tokenizer, processor=None, **kw) -> None:
        if type(model).__name__ not in SUPPORTED:
            raise NotImplementedError(f"no text adapter for {type(model).__name__}; supported: {', '.join(SUPPORTED)}")
        super().__init__(model, tokenizer, processor, **kw)
