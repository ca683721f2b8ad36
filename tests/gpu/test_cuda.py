"""`make gpu-check`: the engine's invariants on a CUDA device, with the tiny random models only (no downloads, no
packaged weights). fp32 must match the CPU to 1e-4; bf16 to a bf16 tolerance. Skipped where no GPU is visible."""

import pytest
import torch

from emloc.engine.compress import FullContext
from emloc.experiment import runner
from emloc.methods.emloc import EMLoC
from emloc.models.loading import load
from tests.conftest import compose, make_demos
from tests.engine.test_compress import INSTR, query_logits, reference_logits

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
TOLERANCE = {"float32": 1e-4, "bfloat16": 0.15}  # on logits of a tiny random model (bf16 has 8 bits of mantissa)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_keep_all_equals_the_full_context_on_cuda(family, dtype):
    adapter = load(f"tiny:{family}", device="cuda", dtype=dtype)
    demos = make_demos(5, images=adapter.multimodal)
    query = make_demos(1, images=adapter.multimodal, offset=40)[0]
    memory = FullContext(chunk_size=2, show_progress=False).build(adapter, demos, INSTR)
    got, want = query_logits(adapter, memory, query).float(), reference_logits(adapter, demos, query).float()
    assert got.device.type == "cuda" and (got - want).abs().max().item() < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_cuda_memory_matches_the_cpu_one_and_delta_zero_is_exact(dtype):
    cpu, gpu = load("tiny:llama"), load("tiny:llama", device="cuda", dtype=dtype)
    demos, query = make_demos(6), make_demos(1, offset=40)[0]
    exact = EMLoC(chunk_size=2, js_threshold=0.0, show_progress=False).build(gpu, demos, INSTR)
    assert exact.retention == 1.0
    want = reference_logits(cpu, demos, query)
    assert (query_logits(gpu, exact, query).float().cpu() - want).abs().max().item() < TOLERANCE[dtype]
    before = exact.fingerprint()
    query_logits(gpu, exact, query)
    assert exact.fingerprint() == before  # queries leave the memory unchanged


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_a_tiny_run_end_to_end_on_cuda(dtype, tmp_path):
    cfg = compose(["debug=tiny", "backend=cuda", f"backend.dtype={dtype}", "method=emloc"], tmp_path)
    metrics = runner.run(cfg)
    assert cfg.backend.device == "cuda" and 0 < metrics["retention"] <= 1 and metrics["num_queries"] > 0


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_a_per_head_whole_context_memory_on_cuda(dtype, tmp_path):
    """The whole-context path on CUDA: keep-all per head is the full context, and EMLoC-G runs end to end."""
    from emloc.methods.kvzip import KVzipPublished

    cpu, gpu = load("tiny:llama"), load("tiny:llama", device="cuda", dtype=dtype)
    demos, query = make_demos(6), make_demos(1, offset=40)[0]
    every = KVzipPublished(keep_ratio=1.0, block_tokens=48, show_progress=False).build(gpu, demos, INSTR)
    assert every.head_lengths and every.retention == 1.0
    want = reference_logits(cpu, demos, query)
    assert (query_logits(gpu, every, query).float().cpu() - want).abs().max().item() < TOLERANCE[dtype]
    cfg = compose(["debug=tiny", "backend=cuda", f"backend.dtype={dtype}", "method=emloc_global",
                   "method.tuning_inputs=8", "method.delta=0.02"], tmp_path)  # fmt: skip
    metrics = runner.run(cfg)
    assert 0 < metrics["retention"] <= 1 and metrics["certificate_target"] == pytest.approx(0.04)
