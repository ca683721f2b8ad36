"""RICES: retrieval ranks the pool by cosine similarity (deterministic embedders) and answers end to end."""

import json

import numpy as np
import pytest

from emloc.data import SyntheticTask
from emloc.data.base import Example
from emloc.engine.compress import FullContext
from emloc.engine.generate import answer
from emloc.methods import rices
from emloc.methods.rices import RICES, resolve_embedder
from tests.conftest import colour_image

VECTORS = {
    "d0": [1.0, 0.0, 0.0],
    "d1": [0.8, 0.6, 0.0],
    "d2": [0.0, 1.0, 0.0],
    "d3": [0.0, 0.0, 1.0],
    "d4": [1.0, 0.0, 0.0],
    "q": [0.9, 0.1, 0.0],
}


def table_embedder(examples):
    return np.array([VECTORS[e.uid] for e in examples])


def ex(uid: str, **kw) -> Example:
    return Example(uid, kw.pop("question", f"question {uid}"), kw.pop("answer", "a"), **kw)


def uids(examples) -> list[str]:
    return [e.uid for e in examples]


def test_select_ranks_by_cosine_in_the_requested_order():
    pool = [ex(u) for u in ("d0", "d1", "d2", "d3", "d4")]
    first = RICES(k=3, embedder=table_embedder)
    (picked,) = first.retrieve(first.index(pool), [ex("q")])
    assert uids(picked) == ["d0", "d4", "d1"]  # d0 and d4 tie: the earlier pool entry first
    last = RICES(k=3, embedder=table_embedder, order="most_similar_last")
    assert uids(last.retrieve(last.index(pool), [ex("q")])[0]) == ["d1", "d4", "d0"]
    # a query that is itself in the pool never retrieves itself
    assert uids(first.retrieve(first.index(pool), [ex("d0")])[0]) == ["d4", "d1", "d2"]


def test_bad_inputs_fail_with_the_value_named():
    with pytest.raises(ValueError, match="k=9"):
        RICES(k=9, embedder=table_embedder).index([ex("d0")])
    with pytest.raises(ValueError, match="order"):
        RICES(order="random")
    with pytest.raises(ValueError, match="shape"):
        RICES(k=1, embedder=lambda exs: np.zeros(3)).index([ex("d0"), ex("d1")])
    with pytest.raises(ValueError, match="unknown embedder"):
        resolve_embedder("bert")


def test_default_embedders_find_the_same_colour_and_the_shared_words():
    colours = ["red", "green", "blue", "yellow"]
    pool = [
        ex(f"d{i}", question=f"Item {i}: what colour is it?", answer=colours[i % 4], images=(colour_image(i),))
        for i in range(8)
    ]
    by_image = RICES(k=2, embedder="image")
    (picked,) = by_image.retrieve(by_image.index(pool), [ex("q", images=(colour_image(2),))])
    assert [e.answer for e in picked] == ["blue", "blue"]
    texts = [
        ex("t0", question="the capital of France"),
        ex("t1", question="a red square shape"),
        ex("t2", question="which river flows through Paris in France"),
    ]
    by_text = RICES(k=1, embedder="text")
    assert uids(by_text.retrieve(by_text.index(texts), [ex("q", question="a big red square")])[0]) == ["t1"]
    assert uids(by_text.retrieve(by_text.index(texts), [ex("q", question="a river flows through Paris")])[0]) == ["t2"]


def test_rices_answers_each_query_against_its_own_retrieved_context(llama):
    task = SyntheticTask(num_items=24)
    split = task.split(0, 3, demo_seed=0)
    pool = [d for d in task.load()[0] if d.uid not in {q.uid for q in split.queries}]
    method = RICES(k=4, embedder="text")
    rows = rices.evaluate(method, llama, task, pool, split.queries, max_new_tokens=4)
    assert [r["uid"] for r in rows] == uids(split.queries)
    renderer = llama.renderer(task.instruction)
    for row, query in zip(rows, split.queries):
        assert len(row["demo_ids"]) == 4 and query.uid not in row["demo_ids"]
        chosen = [d for d in pool if d.uid in row["demo_ids"]]
        assert sorted(uids(chosen)) == sorted(row["demo_ids"])
        demos = sorted(chosen, key=lambda d: row["demo_ids"].index(d.uid))
        memory = FullContext(show_progress=False).build(llama, demos, task.instruction)
        assert row["prediction"] == answer(llama, memory, renderer, [query], 4)[0]
        assert row["correct"] == task.score(query, row["prediction"])


def test_rices_is_a_method_option_of_the_runner(tmp_path):
    """`method=rices` through the runner: the run's demonstrations are the pool, each query is answered against its
    own k (the same predictions as `rices.evaluate` on that pool), and the run is recorded as RICES."""
    from emloc.experiment import runner
    from emloc.models.loading import load
    from tests.conftest import compose

    cfg = compose(["debug=tiny", "method=rices", "method.k=3", "method.embedder=text", "task.num_queries=6"], tmp_path)
    metrics = runner.run(cfg)
    assert (
        metrics["method_option"] == "rices" and metrics["method_label"] == "RICES, k = 3" and not metrics["compresses"]
    )
    p = runner.plan(cfg)
    rows = [
        json.loads(r) for r in (tmp_path / "runs" / metrics["signature"] / "predictions.jsonl").read_text().splitlines()
    ]
    adapter = load(**cfg.model, device="cpu", dtype="float32", attn="sdpa")
    expect = rices.evaluate(RICES(k=3, embedder="text"), adapter, p.task, p.demos, p.queries, 8)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in expect]
