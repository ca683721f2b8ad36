"""lmms-eval plugin: `python -m lmms_eval --model emloc` on the local tasks gives the runner's predictions and
accuracy; stock-style tasks and RICES work in process; the paper tasks fail fast, naming their dataset."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the optional [eval] extra (make install)")

from emloc.experiment import runner
from tests.conftest import compose

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PAPER = ("imagenet100", "illusionvqa", "mme_realworld_lite", "ok_vqa", "screenspot_rec", "youcook2")
# the runner's EMLoC defaults (conf/method/emloc.yaml, warm start on), spelled as model args
RUNNER_EMLOC = "method=emloc"  # conf/method/emloc.yaml, composed on both sides


def lmms_cli(out_dir: Path, task: str, model_args: str, include: str = "lmms_tasks") -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "emloc",
        "--model_args",
        model_args,
        "--tasks",
        task,
        "--include_path",
        str(ROOT / include),
        "--output_path",
        str(out_dir),
        "--log_samples",
    ]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)


def lmms_samples(out_dir: Path, task: str, proc: subprocess.CompletedProcess) -> tuple[float, list[dict]]:
    """lmms-eval's accuracy on `task` and its logged samples in doc_id (= query) order."""
    results = list(out_dir.rglob("*_results.json"))  # lmms-eval exits 0 even when the evaluation failed
    assert len(results) == 1, proc.stdout[-3000:] + proc.stderr[-5000:]
    accuracy = json.loads(results[0].read_text())["results"][task]["accuracy,none"]
    (samples,) = out_dir.rglob(f"*_samples_{task}.jsonl")
    return accuracy, sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])


def lmms_losses(out_dir: Path, task: str, proc: subprocess.CompletedProcess) -> tuple[float, list[list[float]]]:
    """lmms-eval's accuracy and, per query, the loss of every choice (logged as `["<loss>", "<is_greedy>"]`)."""
    accuracy, rows = lmms_samples(out_dir, task, proc)
    return accuracy, [[float(r[0]) for r in row["filtered_resps"]] for row in rows]


def runner_losses(out_dir: Path, overrides: list[str], check: int = 4) -> tuple[float, list[int], list[list[float]]]:
    """The runner's accuracy, its predicted choice per query, and for the first `check` queries the loss of every
    choice recomputed on the memory the runner built and cached (so the two memories are compared, not only argmaxes)."""
    from emloc.engine.generate import loglikelihood
    from emloc.engine.memory import TaskMemory
    from emloc.models.loading import load

    cfg = compose([*overrides, "logger=none"], out_dir)
    metrics, p = runner.run(cfg), runner.plan(cfg)
    rows = {
        r["uid"]: r
        for r in map(
            json.loads, (out_dir / "runs" / metrics["signature"] / "predictions.jsonl").read_text().splitlines()
        )
    }
    adapter = load(**cfg.model, **cfg.backend)
    memory = TaskMemory.load(
        out_dir / "memories" / metrics["memory_key"],
        expect=adapter.signature(),
        device=adapter.device,
        dtype=adapter.dtype,
    )
    renderer = adapter.renderer(p.task.instruction)
    losses = [[-s for s in loglikelihood(adapter, memory, renderer, q, list(q.choices))] for q in p.queries[:check]]
    return metrics["accuracy"], [q.choices.index(rows[q.uid]["prediction"]) for q in p.queries], losses


def assert_same_run(lmms_side, runner_side, n: int) -> None:
    (lmms_acc, lmms_loss), (acc, picks, losses) = lmms_side, runner_side
    assert len(picks) == n and [min(range(len(v)), key=v.__getitem__) for v in lmms_loss] == picks
    flat = [v for row in lmms_loss[: len(losses)] for v in row]
    assert flat == pytest.approx([v for row in losses for v in row], rel=1e-5, abs=1e-4)
    assert lmms_acc == acc


def test_cli_easy_vqa_on_a_tiny_qwen2_vl_equals_the_runner(tmp_path):
    """Local image task (packaged easy-VQA images), tiny Qwen2-VL, EMLoC, 8 shots: 16 queries ranked over the 13
    answers (emloc_easy_vqa) and 8 answered by greedy generation (emloc_easy_vqa_gen), in one lmms-eval call."""
    tasks = "emloc_easy_vqa,emloc_easy_vqa_gen"
    shared = tmp_path / "runner" / "memories"  # the runner's memory cache, handed to lmms-eval
    proc = lmms_cli(tmp_path / "lmms", tasks, f"source=tiny:qwen2_vl,num_fewshot=8,{RUNNER_EMLOC},memory_dir={shared}")
    assert len(list(shared.glob("*/memory.json"))) == 1  # lmms-eval built the task memory once, for both tasks
    easy_vqa = ["task=easy_vqa", "model=tiny_qwen2_vl", "method=emloc", "task.num_shots=8", "task.loader.max_pool=400"]
    ours = runner_losses(tmp_path / "runner", [*easy_vqa, "task.num_queries=16"])
    assert json.loads(next((tmp_path / "runner" / "runs").glob("*/metrics.json")).read_text())["memory_cached"]
    assert_same_run(lmms_losses(tmp_path / "lmms", "emloc_easy_vqa", proc), ours, 16)
    # generation: the runner answers one query at a time here, as lmms-eval (batch size 1) does
    gen = runner.run(
        compose(
            [
                *easy_vqa,
                "task.num_queries=8",
                "task.loader.score_by=generate",
                "eval.max_new_tokens=8",
                "eval.batch_size=1",
                "logger=none",
            ],
            tmp_path / "runner",
        )
    )
    assert gen["memory_cached"]  # same demos, model and method: the memory of the first run
    rows = (tmp_path / "runner" / "runs" / gen["signature"] / "predictions.jsonl").read_text().splitlines()
    lmms_acc, samples = lmms_samples(tmp_path / "lmms", "emloc_easy_vqa_gen", proc)
    texts = [s["filtered_resps"] if isinstance(s["filtered_resps"], str) else s["filtered_resps"][0] for s in samples]
    assert texts == [json.loads(r)["prediction"] for r in rows]
    assert lmms_acc == gen["accuracy"]


@pytest.mark.slow
def test_cli_iso3166_on_the_packaged_smollm2_equals_the_runner(tmp_path):
    """Local text task (ISO 3166-2 regions), real SmolLM2-135M-Instruct, EMLoC, 16 shots, 16 queries over 16 countries."""
    proc = lmms_cli(
        tmp_path / "lmms", "emloc_iso3166", f"source=packaged:smollm2-135m-instruct,num_fewshot=16,{RUNNER_EMLOC}"
    )
    ours = runner_losses(
        tmp_path / "runner",
        ["task=iso3166", "model=smollm2_135m", "method=emloc", "task.num_shots=16", "task.num_queries=16"],
    )
    assert_same_run(lmms_losses(tmp_path / "lmms", "emloc_iso3166", proc), ours, 16)
    assert 0 < ours[0] < 1


def test_cli_paper_task_without_data_fails_fast_naming_the_dataset(tmp_path):
    proc = lmms_cli(tmp_path / "lmms", "emloc_ok_vqa", "source=tiny:llama", include="lmms_tasks/paper")
    log = proc.stdout + proc.stderr
    assert "DatasetUnavailableError" in log and "'lmms-lab/OK-VQA'" in log and "hf download" in log
    assert not list((tmp_path / "lmms").rglob("*_results.json"))


# ------------------------------------------------------------------------------------------------ in process
@pytest.fixture(scope="module")
def lmms():
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    def evaluate(model, tasks: list[str], include: Path, limit: int | None = None) -> dict:
        manager = TaskManager("ERROR", include_path=str(include), include_defaults=False)
        return evaluator.simple_evaluate(
            model=model, tasks=tasks, task_manager=manager, batch_size=1, limit=limit, verbosity="ERROR"
        )

    return evaluate


def test_entry_point_resolves_the_emloc_model():
    from importlib.metadata import entry_points

    from lmms_eval.models import get_model

    from emloc.integrations.lmms_eval import EMLoCLMM, EmlocTask, manifests

    (ep,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "emloc"]
    assert ep.load() is manifests and manifests()[0].model_id == "emloc"
    assert get_model("emloc") is EMLoCLMM and EMLoCLMM.is_simple
    assert EmlocTask.__module__ == "emloc.integrations.lmms_eval.task"
    with pytest.raises(ValueError, match="unknown method 'annealing'"):
        EMLoCLMM(source="tiny:llama", method="annealing")
    with pytest.raises(ValueError, match="deltaa"):  # not a parameter of the method
        EMLoCLMM(source="tiny:llama", deltaa=0.1)


def test_stock_lmms_eval_task_builds_its_memory_from_the_fewshot_split(tmp_path, lmms, monkeypatch):
    """A plain lmms-eval YAML (local JSON, field-name doc functions): demos drawn by seed from its `fewshot` split,
    answers equal to the engine's on the same memory; a second model reuses the memory saved in memory_dir."""
    from emloc.data.base import Example
    from emloc.engine.compress import FullContext
    from emloc.engine.generate import answer
    from emloc.integrations.lmms_eval.model import EMLoCLMM

    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "maple",
        "tiger",
        "piano",
        "lemon",
        "ocean",
        "candle",
        "forest",
        "copper",
    ]
    rows = [
        {"question": f"Which colour goes with {w}?", "answer": ["red", "blue", "grey", "white"][i % 4]}
        for i, w in enumerate(words)
    ]
    for split, part in (("fewshot", rows[:8]), ("test", rows[8:])):
        (tmp_path / f"{split}.json").write_text(json.dumps(part))
    (tmp_path / "stock.yaml").write_text(
        "task: stock_colours\ndataset_path: json\ndataset_kwargs: {data_files: {fewshot: fewshot.json, test: test.json}}\n"
        "test_split: test\nfewshot_split: fewshot\noutput_type: generate_until\ndoc_to_text: question\n"
        "doc_to_target: answer\ndescription: 'Answer with one colour word.'\n"
        "generation_kwargs: {max_new_tokens: 3, until: []}\nmetric_list: [{metric: exact_match}]\nmetadata: {version: 1}\n"
    )

    def run(model) -> list[str]:
        samples = lmms(model, ["stock_colours"], tmp_path)["samples"]["stock_colours"]
        return [s["filtered_resps"][0] for s in sorted(samples, key=lambda s: s["doc_id"])]

    args = dict(
        source="tiny:llama", method="full_context", num_fewshot=4, demo_seed=3, memory_dir=str(tmp_path / "mem")
    )
    model = EMLoCLMM(**args)
    predictions = run(model)
    state, adapter = model.states["stock_colours"], model.adapter
    picks = random.Random(3).sample(range(8), 4)
    assert [(d.question, d.answer) for d in state.demos] == [(rows[i]["question"], rows[i]["answer"]) for i in picks]
    assert state.instruction == "Answer with one colour word."
    memory = FullContext(show_progress=False).build(adapter, state.demos, state.instruction)
    queries = [Example(f"q{i}", r["question"], "<query>") for i, r in enumerate(rows[8:])]
    assert predictions == answer(adapter, memory, adapter.renderer(state.instruction), queries, 3)
    assert len(list((tmp_path / "mem").glob("*/memory.json"))) == 1
    monkeypatch.setattr(FullContext, "build", lambda *a, **k: pytest.fail("the saved memory was not reused"))
    assert run(EMLoCLMM(**args)) == predictions


def test_rices_through_lmms_eval_matches_rices_evaluate(lmms):
    """RICES on the bridged iso3166 task (tiny llama, log-likelihood ranking): the predictions of `rices.evaluate`."""
    from hydra.utils import instantiate

    from emloc.integrations.lmms_eval.model import EMLoCLMM
    from emloc.integrations.lmms_eval.task import bridge_splits, compose_task
    from emloc.methods import rices

    model = EMLoCLMM(source="tiny:llama", method="rices", rices_k=4, rices_embedder="text")
    out = lmms(model, ["emloc_iso3166"], ROOT / "lmms_tasks", limit=6)  # the first 6 queries
    task_cfg, _ = compose_task("iso3166", ["task.num_queries=16"])
    task = instantiate(task_cfg.loader)
    pool, queries = bridge_splits(task, 16, task_cfg.query_seed, dict(task_cfg.heldout))
    rows = rices.evaluate(rices.RICES(k=4, embedder="text"), model.adapter, task, pool, queries[:6])
    samples = sorted(out["samples"]["emloc_iso3166"], key=lambda s: s["doc_id"])
    losses = [[r[0] for r in s["filtered_resps"]] for s in samples]  # (loss, is_greedy) pairs (see compat)
    picked = [q.choices[min(range(len(v)), key=v.__getitem__)] for q, v in zip(queries, losses)]
    assert picked == [r["prediction"] for r in rows]
    assert out["results"]["emloc_iso3166"]["accuracy,none"] == pytest.approx(
        sum(r["correct"] for r in rows) / len(rows)
    )


def test_paper_tasks_fail_fast_in_lmms_eval_naming_the_dataset(monkeypatch, tmp_path):
    from lmms_eval.tasks import TaskManager

    from emloc.data.paper import DatasetUnavailableError

    monkeypatch.setenv("EMLOC_DATA", str(tmp_path))  # no local ImageNet / YouCook2 copies
    manager = TaskManager("ERROR", include_path=str(ROOT / "lmms_tasks" / "paper"), include_defaults=False)
    assert {f"emloc_{t}" for t in PAPER} | {"emloc_paper"} <= set(manager.all_tasks)
    from tests.experiment.test_configs import PAPER_DATA as names

    for task in PAPER:
        with pytest.raises(DatasetUnavailableError, match=names[task].replace(".", r"\.")) as err:
            manager.load_task_or_group([f"emloc_{task}"])
        assert str(tmp_path) in str(err.value) or task not in ("imagenet100", "youcook2")
