"""The held-out divergence from the full context: zero for a lossless memory, and the drift curve's point at chunk k
is exactly the divergence of a memory built from the first k chunks alone."""

import pytest

from emloc.engine.compress import FullContext
from emloc.engine.fidelity import measure
from emloc.methods.emloc import EMLoC
from tests.conftest import make_demos

INSTR = "Name the colour."


def test_lossless_memory_has_zero_divergence_everywhere(adapter, demos_for):
    demos, queries = demos_for(adapter, 6), demos_for(adapter, 3, offset=30)
    full = FullContext().build(adapter, demos, INSTR)
    chunked = FullContext(chunk_size=2).build(adapter, demos, INSTR)
    f = measure(adapter, chunked, full, adapter.renderer(INSTR), queries)
    assert len(f.drift) == 3 and len(f.per_layer) == adapter.num_layers and len(f.per_query) == 3
    assert max([f.heldout_js, *f.drift, *f.per_layer]) < 1e-6


def test_drift_point_k_is_the_memory_of_the_first_k_chunks(llama):
    demos, queries, r = make_demos(9), make_demos(4, offset=30), llama.renderer(INSTR)
    method = EMLoC(chunk_size=3, js_threshold=0.05, show_progress=False)
    f = measure(llama, method.build(llama, demos, INSTR), FullContext().build(llama, demos, INSTR), r, queries)
    assert f.heldout_js > 0 and f.drift[-1] == pytest.approx(f.heldout_js)
    for k in (1, 2):
        head = demos[: 3 * k]
        alone = measure(llama, method.build(llama, head, INSTR), FullContext().build(llama, head, INSTR), r, queries,
                        per_layer=False)  # fmt: skip
        assert f.drift[k - 1] == pytest.approx(alone.heldout_js, rel=1e-4, abs=1e-7)
    assert any(v > 0 for v in f.per_layer)
    memory, full = method.build(llama, demos, INSTR), FullContext().build(llama, demos, INSTR)
    finished = measure(llama, memory, full, r, queries, per_layer=False, drift=False)  # eval.drift=false
    assert finished.drift == [finished.heldout_js] and finished.per_query == pytest.approx(f.per_query)


def test_other_demonstrations_are_refused(llama):
    r = llama.renderer(INSTR)
    with pytest.raises(ValueError, match="not the same demonstrations"):
        measure(llama, FullContext().build(llama, make_demos(4), INSTR), FullContext().build(llama, make_demos(5), INSTR),
                r, make_demos(1, offset=20))  # fmt: skip
