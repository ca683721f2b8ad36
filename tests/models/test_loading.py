"""Model loading: checkpoints go straight to the target device (`device_map`, no host copy), a hub `revision` is
passed to every `from_pretrained`, and an accelerator kind whose runtime sees no device is refused by name."""

import pytest
import torch

from emloc.models import loading


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """The tiny random Llama saved as a local checkpoint folder (a "hub" source)."""
    from emloc.models import tiny

    model, tokenizer = tiny.tiny_text_model("llama", seed=0)
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_checkpoints_load_onto_the_device_with_the_revision(saved_tiny, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    seen = {}

    def spy(cls, name):
        original = cls.from_pretrained.__func__

        def wrapped(klass, *args, **kwargs):
            seen.setdefault(name, []).append(dict(kwargs))
            kwargs.pop("revision", None)  # a local folder has no revisions; what matters is that it was passed
            return original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))

    for cls, name in ((AutoConfig, "config"), (AutoModelForCausalLM, "model"), (AutoTokenizer, "tokenizer")):
        spy(cls, name)
    adapter = loading.load(str(saved_tiny), revision="0123abc")
    assert seen["model"][0]["device_map"] == torch.device("cpu")  # placed at load time, not copied afterwards
    assert {name: kw[0].get("revision") for name, kw in seen.items()} == dict.fromkeys(seen, "0123abc"), seen
    assert adapter.num_layers >= 2 and next(adapter.model.parameters()).device.type == "cpu"


def test_revision_is_for_hub_models_only():
    with pytest.raises(ValueError, match="hub models only"):
        loading.load("tiny:llama", revision="main")


def test_npu_without_a_visible_device_is_refused(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    monkeypatch.setattr(torch, "npu", types.SimpleNamespace(is_available=lambda: False), raising=False)
    with pytest.raises(
        ValueError, match=r"backend.device=npu:0: no NPU is visible \(torch.npu.is_available\(\) is False\)"
    ):
        loading.resolve_device("npu:0")
