"""Invariants every method gets from the shared matrix (`tests/methods/matrix.py`): its card is consistent, its
lossless parameters reproduce the full context, its memory never changes under queries and survives save/load,
and an interrupted build resumes to the same memory.

pytest tests/methods/test_methods.py
"""

import pytest

import emloc
from emloc.engine.generate import generate, score_choices
from emloc.engine.memory import TaskMemory
from emloc.utils.storage import conf_dir
from tests.engine.test_compress import INSTR, query_logits, reference_logits
from tests.methods.matrix import easy, hard, options, probes_for

OPTIONS = options()


@pytest.mark.parametrize("option", OPTIONS)
def test_card_matches_the_config_tree(option):
    method = hard(option)
    assert (conf_dir() / "method" / f"{method.option}.yaml").is_file()
    assert method.describe().startswith(method.label) and method.label
    card = method.card()
    assert card["method_option"] == method.option and card["method_label"] == method.describe()
    assert "method" not in card  # one name per concept: the option and the label, never a bare `method`
    assert method.searches <= method.compresses  # a search prunes
    assert method.lossless is None or method.uses_demos is not False
    assert getattr(emloc, type(method).__name__) is type(method)  # exported: `from emloc import <Class>`


@pytest.mark.parametrize("option", [o for o in OPTIONS if easy(o) is not None])
def test_lossless_parameters_reproduce_the_full_context(option, adapter, demos_for):
    method = easy(option)
    demos, query = demos_for(adapter, 5), demos_for(adapter, 1, offset=40)[0]
    memory = method.build(adapter, demos, INSTR, probes=probes_for(method))
    assert memory.retention == 1.0
    diff = (query_logits(adapter, memory, query) - reference_logits(adapter, demos, query)).abs().max().item()
    assert diff < 1e-4, f"{option}: {diff}"


@pytest.mark.parametrize("option", OPTIONS)
def test_memory_is_unchanged_by_queries_and_survives_save_load(option, llama, tmp_path):
    from tests.conftest import make_demos

    method = hard(option)
    memory = method.build(llama, make_demos(6), INSTR, probes=probes_for(method))
    if method.compresses:
        assert memory.retention < 1.0, f"{option}: the hard setting prunes nothing, the test would be vacuous"
    before = memory.fingerprint()
    queries, r = make_demos(3, offset=20), llama.renderer(INSTR)
    text = generate(llama, memory, r, queries, max_new_tokens=3)
    scores = score_choices(llama, memory, r, queries, [["red", "blue"]] * 3)
    assert memory.fingerprint() == before
    loaded = TaskMemory.load(memory.save(tmp_path / option), expect=llama.signature())
    assert loaded.fingerprint() == before and loaded.stats()["chunks"] == memory.stats()["chunks"]
    assert generate(llama, loaded, r, queries, max_new_tokens=3) == text
    again = score_choices(llama, loaded, r, queries, [["red", "blue"]] * 3)
    assert [s for row in again for s in row] == pytest.approx([s for row in scores for s in row], abs=1e-5)


class Interrupted(RuntimeError):
    pass


@pytest.mark.parametrize("option", OPTIONS)
def test_an_interrupted_build_resumes_to_the_same_memory(option, llama, tmp_path):
    from tests.conftest import make_demos

    demos, saved = make_demos(6), tmp_path / "partial"
    probes, steps = probes_for(hard(option)), []
    whole = hard(option).build(llama, demos, INSTR, probes=probes, on_chunk=steps.append)  # a chunk or prefill block

    def stop_after_first_chunk(memory):
        memory.save(saved)
        raise Interrupted

    if len(steps) < 2:
        pytest.skip(f"{option} builds in one pass: nothing to resume")
    with pytest.raises(Interrupted):
        hard(option).build(llama, demos, INSTR, on_chunk=stop_after_first_chunk, probes=probes)
    partial = TaskMemory.load(saved, expect=llama.signature())
    assert len(partial.chunks) == 1
    resumed = hard(option).build(llama, demos, INSTR, resume=partial, probes=probes)
    assert resumed.fingerprint() == whole.fingerprint()
    assert [c.kept for c in resumed.chunks] == [c.kept for c in whole.chunks]


# -- the contract fails loudly -------------------------------------------------------------------------------------
def test_a_method_class_without_option_or_label_fails_when_it_is_defined():
    from dataclasses import dataclass

    from emloc.engine.compress import Compressor
    from emloc.methods.baselines import SnapKV

    with pytest.raises(TypeError, match="must declare `option`"):

        @dataclass
        class Forgetful(Compressor):
            label = "forgetful"

    with pytest.raises(TypeError, match="must declare `label`"):

        class Unlabelled(SnapKV):
            option = "unlabelled"

    with pytest.raises(TypeError, match="must declare `option`"):  # never inherited: it would record runs as SnapKV

        class Variant(SnapKV):
            label = "variant"


@pytest.mark.parametrize("option", OPTIONS)
def test_composing_a_class_option_gives_that_class(option):
    from emloc.methods import registry

    cls = registry()[option]
    assert type(hard(cls.option)) is cls and type(hard(option)) is cls


@pytest.fixture
def method_conf(tmp_path, monkeypatch):
    """A copy of conf/ to break, used by the registry for the test's duration."""
    import shutil

    from emloc.methods import registry

    shutil.copytree(conf_dir(), tmp_path / "conf")
    monkeypatch.setenv("EMLOC_CONF_DIR", str(tmp_path / "conf"))
    registry.cache_clear()
    yield tmp_path / "conf" / "method"
    registry.cache_clear()


def test_a_class_whose_option_has_no_yaml_fails_in_the_registry(method_conf):
    from emloc.methods import ContractError, registry

    (method_conf / "h2o.yaml").unlink()
    (method_conf / "h2o_protect.yaml").write_text("_target_: emloc.methods.baselines.H2O\nprotect_answers: true\n")
    with pytest.raises(ContractError, match=r"H2O.option='h2o' has no .*h2o.yaml"):
        registry()


def test_a_class_whose_yaml_targets_another_class_fails_in_the_registry(method_conf):
    from emloc.methods import ContractError, registry

    path = method_conf / "streamingllm.yaml"
    path.write_text(path.read_text().replace("emloc.methods.baselines.StreamingLLM", "emloc.methods.baselines.H2O"))
    with pytest.raises(ContractError, match=r"StreamingLLM.option='streamingllm', but .*streamingllm.yaml targets"):
        registry()
