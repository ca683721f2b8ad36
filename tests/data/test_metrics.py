"""Scoring rules: each metric on ordinary and edge-case inputs, dispatch errors and aggregation."""

from __future__ import annotations

import pytest

from emloc.data import metrics
from emloc.data.base import Example


def ex(answer: str, references: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> Example:
    return Example(uid="x", question="q?", answer=answer, references=references, choices=choices)


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("Paris", "paris", 1.0),
        ("  PARIS.  ", "Paris", 1.0),
        ("paris!?", "Paris", 1.0),
        ("New   York", "new york", 1.0),
        ("Pari", "Paris", 0.0),
        ("Paris, France", "Paris", 0.0),
        (".Paris", "Paris", 0.0),  # only trailing punctuation is forgiven
    ],
)
def test_exact_match(prediction: str, answer: str, expected: float) -> None:
    assert metrics.score("exact_match", prediction, ex(answer)) == expected


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("It is a Golden Retriever, clearly.", "golden retriever", 1.0),
        ("golden retriever", "Golden retriever.", 1.0),
        ("a retriever", "golden retriever", 0.0),
        ("goldenretriever", "golden retriever", 0.0),
        ("anything at all", ".", 0.0),  # an empty normalised reference never matches
    ],
)
def test_substring(prediction: str, answer: str, expected: float) -> None:
    assert metrics.score("substring", prediction, ex(answer)) == expected


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B. a red car", "B"),
        ("B) a red car", "B"),
        ("The answer is B", "B"),
        ("the answer is (D).", "D"),
        ("Answer: C", "C"),
        ("I think it is E", "E"),
        ("Definitely C", "C"),  # the D of "Definitely" is not standalone
        ("none of them", None),
        ("answer is a cat", None),  # lowercase 'a' is an article, not option A
    ],
)
def test_extract_letter(text: str, letter: str | None) -> None:
    assert metrics.extract_letter(text) == letter


def test_mc_letter() -> None:
    assert metrics.score("mc_letter", "The answer is (B).", ex("B")) == 1.0
    assert metrics.score("mc_letter", "(C) a dog", ex("(B) a cat")) == 0.0
    assert metrics.score("mc_letter", "C", ex("C. a cow")) == 1.0
    # answer given as option text: its index in choices gives the letter
    assert metrics.score("mc_letter", "B", ex("dog", choices=("cat", "dog", "cow"))) == 1.0
    assert metrics.score("mc_letter", "A", ex("dog", choices=("cat", "dog", "cow"))) == 0.0
    with pytest.raises(ValueError, match="no option letter"):
        metrics.score("mc_letter", "A", ex("dog"))


def test_vqa_leave_one_out_two_of_ten() -> None:
    refs = ("2",) * 2 + ("3",) * 8
    # left out a matching ref: 1 match among the other 9 -> 1/3 (twice); left out another: 2 -> 2/3 (8 times)
    expected = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert expected == pytest.approx(0.6)
    assert metrics.score("vqa", "two", ex("3", references=refs)) == pytest.approx(0.6)


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_soft_accuracy_curve(matches: int, expected: float) -> None:
    refs = ("yes",) * matches + ("no",) * (10 - matches)
    assert metrics.score("vqa", "Yes.", ex("no", references=refs)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("Two", "2"),
        ("the dog.", "dog"),
        ("dont know", "don't know"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("An apple", "apple"),
    ],
)
def test_vqa_normalisation(prediction: str, reference: str) -> None:
    assert metrics.normalize_vqa(prediction) == metrics.normalize_vqa(reference)
    assert metrics.score("vqa", prediction, ex(reference)) == 1.0  # single reference: normalised equality


def test_vqa_normalisation_keeps_distinctions() -> None:
    assert metrics.normalize_vqa("3.5") != metrics.normalize_vqa("35")
    assert metrics.score("vqa", "red", ex("blue")) == 0.0


def test_vqa_few_references() -> None:
    assert metrics.score("vqa", "cat", ex("cat", references=("cat", "cat", "cat"))) == 1.0
    assert metrics.score("vqa", "cat", ex("cat", references=("cat", "dog"))) == pytest.approx(0.5)


def test_unknown_metric_names_it_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match="bleu") as err:
        metrics.score("bleu", "x", ex("x"))
    for known in ("exact_match", "substring", "mc_letter", "vqa"):
        assert known in str(err.value)


def test_aggregate() -> None:
    rows = [{"correct": True}, {"correct": 0.0}, {"correct": 1}, {"correct": 0.5, "uid": "a"}]
    assert metrics.aggregate(rows) == {"accuracy": pytest.approx(0.625), "num_queries": 4}
    with pytest.raises(ValueError, match="empty"):
        metrics.aggregate([])
    with pytest.raises(ValueError, match="row 1"):
        metrics.aggregate([{"correct": 1}, {"score": 1}])


def test_every_task_option_scores_with_a_registered_metric():
    """`Task.metric` is always a key of `metrics.METRICS` (the paper tasks included: no free-text labels)."""
    from hydra.utils import instantiate

    from emloc.data.metrics import METRICS
    from emloc.utils.storage import conf_dir
    from tests.conftest import compose

    for option in sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml")):
        task = instantiate(compose([f"task={option}"]).task.loader)  # builds the task object; loads no data
        assert task.metric in METRICS, (option, task.metric)
