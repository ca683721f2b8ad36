"""Native lmms-eval tasks with the emloc model, in process and offline: task YAMLs written the way lmms-eval users
write them (a YAML, a utils.py with doc_to_* functions, local json data, PNG images) in a temporary folder, run
through `lmms_eval.evaluator.simple_evaluate` on the tiny Qwen2-VL.

* `multiple_choice` (the regression test of `compat`: lmms-eval 0.7.3 stringified the `(loss, is_greedy)` tuples
  and postprocessing died with `ValueError: too many values to unpack`) ranks every document's choices as
  `emloc.engine.generate.score_choices` does on the same memory;
* `generate_until` answers as `emloc.engine.generate.answer` on the same memory;
* `loglikelihood` returns the engine's negated log-likelihood of the target;
* `fewshot_split` equal to the evaluated split is refused before anything is encoded.
"""

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the optional [eval] extra (make install)")

COLOURS = ["red", "green", "blue", "yellow"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ["square", "tile", "patch", "card", "block", "sheet"]
N_TRAIN, N_TEST, SHOTS, SEED = 12, 6, 8, 5
METHOD = "emloc_paper"  # the memory is rebuilt with the model's own method object, so any method compares alike

UTILS = '''"""doc_to_* functions of the native colour tasks (written by tests/integrations/test_lmms_eval_native.py)."""
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return f"What colour is this {doc['shape']}?"
'''

COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    train: train.json
    test: test.json
test_split: test
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
description: "Answer with the colour of the picture, in one word."
metadata:
  version: 1
"""

TASKS = {
    "native_colours_mc": """output_type: multiple_choice
fewshot_split: train
doc_to_choice: [red, green, blue, yellow]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "native_colours_gen": """output_type: generate_until
fewshot_split: train
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
  until: ["\\n"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
""",
    "native_colours_ll": """output_type: loglikelihood
fewshot_split: train
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: perplexity
""",
    "native_colours_leaky": """output_type: multiple_choice
fewshot_split: test
doc_to_choice: [red, green, blue, yellow]
doc_to_target: label
metric_list:
  - metric: acc
""",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The task folder: YAMLs, utils.py, train.json / test.json and the PNGs they point to."""
    from PIL import Image

    root = tmp_path_factory.mktemp("native_tasks")
    (root / "images").mkdir()
    rows, rng = [], random.Random(0)
    for i in range(N_TRAIN + N_TEST):
        label = rng.randrange(len(COLOURS))
        colour = COLOURS[label]
        shade = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in RGB[colour])
        Image.new("RGB", (56 + 8 * (i % 3), 56), shade).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "shape": SHAPES[i % len(SHAPES)], "label": label, "answer": colour})
    (root / "train.json").write_text(json.dumps(rows[:N_TRAIN]))
    (root / "test.json").write_text(json.dumps(rows[N_TRAIN:]))
    (root / "utils.py").write_text(UTILS)
    for name, body in TASKS.items():
        (root / f"{name}.yaml").write_text(f"task: {name}\n{COMMON}{body}")
    return root


@pytest.fixture(scope="module")
def model():
    from emloc.integrations.lmms_eval.model import EMLoCLMM

    return EMLoCLMM(source="tiny:qwen2_vl", method=METHOD, num_fewshot=SHOTS, demo_seed=SEED, chunk_size=4)


def evaluate(model, folder: Path, task: str) -> tuple[dict, list[dict]]:
    """lmms-eval's results of `task` and its logged samples in doc_id order."""
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    manager = TaskManager("ERROR", include_path=str(folder), include_defaults=False)
    out = evaluator.simple_evaluate(model=model, tasks=[task], task_manager=manager, batch_size=1, verbosity="ERROR")
    return out["results"][task], sorted(out["samples"][task], key=lambda s: s["doc_id"])


def docs(folder: Path, split: str) -> list[dict]:
    return json.loads((folder / f"{split}.json").read_text())


def queries(folder: Path) -> list:
    """The test documents as engine queries: the same question and the same image as the task's doc functions."""
    from PIL import Image

    from emloc.data.base import Example

    return [
        Example(
            f"q{i}",
            f"What colour is this {d['shape']}?",
            "<query>",
            images=(Image.open(folder / d["image"]).convert("RGB"),),
        )
        for i, d in enumerate(docs(folder, "test"))
    ]


def engine_memory(model, folder: Path, task: str):
    """The demonstrations the model drew (checked against the seeded draw over the train split) and a memory
    built afresh from them by the model's method (the model's own memory is not reused)."""
    state, train = model.states[task], docs(folder, "train")
    picks = random.Random(SEED).sample(range(N_TRAIN), SHOTS)
    assert [(d.question, d.answer) for d in state.demos] == [
        (f"What colour is this {train[i]['shape']}?", train[i]["answer"]) for i in picks
    ]
    assert state.instruction == "Answer with the colour of the picture, in one word."
    return state.method.build(model.adapter, state.demos, state.instruction), model.adapter.renderer(state.instruction)


def test_native_multiple_choice_ranks_like_score_choices(model, folder):
    """Regression test of `compat`: before it, lmms-eval 0.7.3 turned the `(loss, is_greedy)` tuples into strings
    and `ConfigurableTask.process_results` failed with `ValueError: too many values to unpack (expected 2)`."""
    from emloc.engine.generate import score_choices

    results, samples = evaluate(model, folder, "native_colours_mc")
    assert len(samples) == N_TEST
    for s in samples:
        assert all(
            isinstance(r, tuple) and isinstance(r[0], float) and isinstance(r[1], bool) for r in s["filtered_resps"]
        )
    losses = [[r[0] for r in s["filtered_resps"]] for s in samples]
    memory, renderer = engine_memory(model, folder, "native_colours_mc")
    scores = score_choices(model.adapter, memory, renderer, queries(folder), [COLOURS] * N_TEST)
    lmms_picks = [min(range(len(v)), key=v.__getitem__) for v in losses]  # lmms-eval's argmin over the losses
    engine_picks = [max(range(len(v)), key=v.__getitem__) for v in scores]
    assert lmms_picks == engine_picks  # per document
    assert [v for row in losses for v in row] == pytest.approx([-v for row in scores for v in row], rel=1e-4, abs=1e-3)
    gold = [d["label"] for d in docs(folder, "test")]
    assert [s["acc"] for s in samples] == [float(p == g) for p, g in zip(engine_picks, gold)]
    assert results["acc,none"] == pytest.approx(sum(p == g for p, g in zip(engine_picks, gold)) / N_TEST)


def test_native_generate_until_answers_like_the_engine(model, folder):
    from emloc.engine.generate import answer

    results, samples = evaluate(model, folder, "native_colours_gen")
    memory, renderer = engine_memory(model, folder, "native_colours_gen")
    expected = [answer(model.adapter, memory, renderer, [q], 3)[0].split("\n", 1)[0] for q in queries(folder)]
    assert [s["filtered_resps"][0] for s in samples] == expected  # the model cuts at `until`, as here
    gold = [d["answer"] for d in docs(folder, "test")]
    assert results["exact_match,none"] == pytest.approx(
        sum(e.strip().lower() == g for e, g in zip(expected, gold)) / N_TEST
    )


def test_native_loglikelihood_returns_the_engines_negated_loglikelihood(model, folder):
    """Regression test of `compat`: lmms-eval 0.7.3's `ConfigurableTask.process_results` unpacked the one-element
    result list of a `loglikelihood` document (`ValueError: not enough values to unpack (expected 2, got 1)`)."""
    from emloc.engine.generate import loglikelihood

    results, samples = evaluate(model, folder, "native_colours_ll")
    memory, renderer = engine_memory(model, folder, "native_colours_ll")
    test = docs(folder, "test")
    expected = [
        -loglikelihood(model.adapter, memory, renderer, q, [d["answer"]])[0] for q, d in zip(queries(folder), test)
    ]
    ((loss, greedy),) = samples[0]["filtered_resps"]
    assert isinstance(loss, float) and isinstance(greedy, bool)
    assert [s["filtered_resps"][0][0] for s in samples] == pytest.approx(expected, rel=1e-4, abs=1e-3)
    assert [s["perplexity"] for s in samples] == pytest.approx(expected, rel=1e-4, abs=1e-3)  # lmms-eval: a passthrough
    assert results["acc,none"] == pytest.approx(sum(s["filtered_resps"][0][1] for s in samples) / N_TEST)


def test_fewshot_split_equal_to_the_evaluated_split_is_refused(model, folder):
    with pytest.raises(ValueError, match=r"native_colours_leaky' draws demos from 'test', the evaluated split"):
        evaluate(model, folder, "native_colours_leaky")
    assert "native_colours_leaky" not in model.states
