"""Tasks: split guarantees (disjoint, seeded, balanced, clear errors) and the real loaders on real or tmp data."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from emloc.data import EasyVQATask, Example, ImageFolderTask, Iso3166Task, JsonlTask, SyntheticTask, iso3166


def uids(examples: list[Example]) -> list[str]:
    return [e.uid for e in examples]


# --- generic split guarantees (on the synthetic task) ---


def test_synthetic_is_deterministic_and_seed_dependent() -> None:
    a, b, c = SyntheticTask(seed=0).load()[0], SyntheticTask(seed=0).load()[0], SyntheticTask(seed=1).load()[0]
    assert a == b and a != c
    assert len(a) == 64 and len(set(uids(a))) == 64 and len({e.question for e in a}) == 64
    assert Counter(e.answer for e in a) == {label: 16 for label in SyntheticTask().labels}


def test_synthetic_images_encode_the_class() -> None:
    pool, _ = SyntheticTask(num_items=12, num_classes=3, with_images=True).load()
    colours = {}
    for e in pool:
        (img,) = e.images
        assert img.size == (64, 64)
        colours.setdefault(e.answer, set()).add(img.getpixel((5, 40)))
    assert all(len(c) == 1 for c in colours.values()) and len({c.pop() for c in colours.values()}) == 3
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticTask(num_classes=99)


def test_split_is_disjoint_seeded_and_queries_ignore_shots() -> None:
    task = SyntheticTask()
    s1 = task.split(10, 20, demo_seed=0)
    assert not set(uids(s1.demos)) & set(uids(s1.queries))
    assert (len(s1.demos), len(s1.queries)) == (10, 20)
    assert s1 == task.split(10, 20, demo_seed=0)
    s2 = task.split(30, 20, demo_seed=5)
    assert uids(s2.queries) == uids(s1.queries)  # the query set does not depend on shots or demo seed
    assert uids(s2.demos)[:10] != uids(s1.demos)
    assert uids(task.split(10, 20, demo_seed=0, query_seed=7).queries) != uids(s1.queries)


HELD = {"fidelity": 64, "tuning": 64, "certification": 64}


def test_held_out_sets_are_disjoint_from_each_other_the_demos_and_the_queries(iso: Iso3166Task) -> None:
    """The default task's three held-out sets (fidelity, tuning, certification): pairwise disjoint, disjoint from the
    queries and from the demonstrations of every seed and shot count, class-balanced, and the same for every demo
    seed (the crossed design: what certifies one seed certifies the others on the same inputs)."""
    for shots in (64, 256):
        for seed in (0, 1, 2):
            s = iso.split(shots, 256, demo_seed=seed, held_out=HELD)
            sets = {"demos": s.demos, "queries": s.queries, **s.held_out}
            assert {k: len(v) for k, v in s.held_out.items()} == HELD
            for a in sets:
                for b in sets:
                    if a < b:
                        assert not set(uids(sets[a])) & set(uids(sets[b])), f"{a} overlaps {b}"
            assert all(set(Counter(e.answer for e in v).values()) == {4} for v in s.held_out.values())  # 64 / 16
            assert s.held_out == iso.split(8, 256, demo_seed=7, held_out=HELD).held_out
    assert uids(iso.split(64, 256, 0, held_out=HELD).queries) == uids(iso.split(64, 256, 0).queries)


def test_a_held_out_set_larger_than_what_is_left_is_one_line_naming_task_and_sizes() -> None:
    with pytest.raises(ValueError) as err:
        SyntheticTask().split(4, 20, demo_seed=0, held_out={"fidelity": 30, "tuning": 30})
    assert str(err.value).startswith("task.heldout.tuning=30: task 'synthetic' has only 14 inputs left")
    assert "\n" not in str(err.value)


def test_split_errors_name_the_bad_value() -> None:
    task = SyntheticTask()
    with pytest.raises(ValueError, match="num_queries=65"):
        task.split(0, 65, demo_seed=0)
    with pytest.raises(ValueError, match="num_shots=45"):
        task.split(45, 20, demo_seed=0)
    with pytest.raises(ValueError, match="-1"):
        task.split(-1, 20, demo_seed=0)


def test_score_goes_through_the_metric() -> None:
    task = SyntheticTask()
    q = task.load()[0][0]
    assert task.score(q, f" {q.answer.upper()}.") == 1.0
    assert task.score(q, "nothing") == 0.0


# --- iso3166 (real data from iso-codes or pycountry) ---


@pytest.fixture(scope="module")
def iso() -> Iso3166Task:
    task = Iso3166Task()
    try:
        task.items()
    except FileNotFoundError as err:
        pytest.skip(f"no ISO 3166-2 data on this machine: {err}")
    return task


def test_iso3166_data_is_real(iso: Iso3166Task) -> None:
    items = iso.items()
    assert len(items) > 1500
    by_name = {name: cc for _, name, cc in items}
    assert by_name["Bursa"] == "TR" and by_name["Newport"] == "GB" and by_name["Barcelona"] == "ES"
    assert by_name["Hokkaido"] == "JP" and by_name["Ljubljana"] == "SI"
    assert not any("[" in name for name in by_name)
    assert len(by_name) == len(items)  # ambiguous names were dropped
    assert set(Counter(cc for *_, cc in items)) == set(iso.countries)
    pool, queries = iso.load()
    assert pool is queries and len(set(uids(pool))) == len(pool)
    bursa = next(e for e in pool if e.question == "Region: Bursa")
    assert (bursa.uid, bursa.answer) == ("TR-16", "Turkey") and len(bursa.choices) == 16
    assert iso.instruction.startswith("Name the country each region belongs to. Answer with one of: United Kingdom, ")
    fp = iso.data_fingerprint()
    assert len(fp) == 40 and fp == Iso3166Task().data_fingerprint()
    assert fp != Iso3166Task(countries=("GB", "FR")).data_fingerprint()


def test_iso3166_balanced_split(iso: Iso3166Task) -> None:
    s = iso.split(128, 256, demo_seed=0)
    assert set(Counter(q.answer for q in s.queries).values()) == {16}
    assert not set(uids(s.demos)) & set(uids(s.queries)) and len(s.demos) == 128
    assert s == iso.split(128, 256, demo_seed=0)
    assert uids(iso.split(4, 256, demo_seed=3).queries) == uids(s.queries)
    odd = Counter(q.answer for q in iso.split(0, 250, demo_seed=0).queries)
    assert sorted(set(odd.values())) == [15, 16] and sum(odd.values()) == 250
    everything_else = iso.split(len(iso.items()) - 256, 256, demo_seed=0)
    assert len(everything_else.demos) + 256 == len(iso.items())


def test_iso3166_split_errors(iso: Iso3166Task) -> None:
    with pytest.raises(ValueError, match="Japan"):  # 48 per class, but Japan has fewer items
        iso.split(0, 16 * 48, demo_seed=0)
    with pytest.raises(ValueError, match="num_queries=99999"):
        iso.split(0, 99999, demo_seed=0)
    with pytest.raises(ValueError, match="num_shots=5000"):
        iso.split(5000, 256, demo_seed=0)
    unbalanced = Iso3166Task(balanced_queries=False).split(8, 256, demo_seed=0)
    assert len(unbalanced.queries) == 256 and len(set(q.answer for q in unbalanced.queries)) > 1


def test_iso3166_letters_and_bad_config(iso: Iso3166Task) -> None:
    task = Iso3166Task(countries=("GB", "FR", "JP"), label_style="letters")
    assert task.instruction == "Classify each input as one of A, B, C."
    pool, _ = task.load()
    assert {e.answer for e in pool if e.meta["country"] == "JP"} == {"C"} and pool[0].choices == ("A", "B", "C")
    assert Iso3166Task(countries=("de", "FR")).labels == {"DE": "Germany", "FR": "France"}
    with pytest.raises(ValueError, match="label_style"):
        Iso3166Task(label_style="emoji")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ZZ"):
        Iso3166Task(countries=("GB", "ZZ"))


def test_iso3166_pycountry_fallback_and_missing_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iso3166, "_find_json", lambda filename: None)
    iso3166.load_subdivisions.cache_clear()
    monkeypatch.setitem(sys.modules, "pycountry", None)  # import pycountry -> ImportError
    try:
        with pytest.raises(FileNotFoundError, match="iso-codes.*pycountry"):
            Iso3166Task().items()
        fake = types.SimpleNamespace(__version__="0.test", subdivisions=[
            types.SimpleNamespace(code="GB-NWP", name="Newport [Casnewydd GB-CNW]", type="Unitary authority"),
            types.SimpleNamespace(code="FR-75C", name="Paris", type="Metropolitan collectivity"),
        ])  # fmt: skip
        monkeypatch.setitem(sys.modules, "pycountry", fake)
        iso3166.load_subdivisions.cache_clear()
        task = Iso3166Task(countries=("GB", "FR"))
        assert task.items() == [("FR-75C", "Paris", "FR"), ("GB-NWP", "Newport", "GB")]
        assert task.source == "pycountry:0.test"
    finally:
        iso3166.load_subdivisions.cache_clear()


# --- easy-VQA (data ships inside the PyPI package) ---


def test_easy_vqa() -> None:
    full = EasyVQATask()
    demos, queries = full.load()
    assert len(demos) > 30000 and len(queries) > 9000
    assert len(set(uids(demos))) == len(demos) and len(set(uids(queries))) == len(queries)
    assert not set(uids(demos)) & set(uids(queries))
    assert demos[0].choices == () and Path(demos[0].images[0]).is_file()
    assert {e.answer for e in queries} <= set(full.answers) and len(full.answers) == 13
    small = EasyVQATask(max_pool=40, score_by="loglik")
    d, q = small.load()
    assert len(d) == len(q) == 40 and d == small.load()[0]
    assert q[0].choices == full.answers and set(uids(d)) <= set(uids(demos))
    s = small.split(8, 16, demo_seed=0)
    assert len(s.demos) == 8 and len(s.queries) == 16
    with pytest.raises(ValueError, match="score_by"):
        EasyVQATask(score_by="beam")  # type: ignore[arg-type]


# --- bring-your-own JSONL ---


def write_png(path: Path, colour: tuple[int, int, int] = (200, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_task(tmp_path: Path) -> None:
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png")
    rows = [
        {"id": "r0", "question": "colour?", "answer": "red", "image": "img/a.png", "opts": ["red", "blue"]},
        {"id": "r1", "question": "same?", "answer": ["yes", "yes", "no"], "image": ["img/a.png", "img/b.png"],
         "opts": ["yes", "no"]},
        {"id": "r2", "question": "no image", "answer": "blue", "image": None, "opts": ["red", "blue"]},
    ]  # fmt: skip
    write_jsonl(tmp_path / "data.jsonl", rows)
    task = JsonlTask(str(tmp_path / "data.jsonl"), choices_key="opts", metric="vqa", cache_dir=str(tmp_path / "hf"))
    demos, queries = task.load()
    assert demos == queries and uids(queries) == ["data:r0", "data:r1", "data:r2"]
    assert queries[0].images == (str(tmp_path / "img" / "a.png"),) and len(queries[1].images) == 2
    assert queries[2].images == () and queries[0].choices == ("red", "blue")
    assert queries[1].answer == "yes" and queries[1].references == ("yes", "yes", "no")
    assert task.score(queries[1], "Yes") == pytest.approx(2 / 3)
    s = task.split(1, 2, demo_seed=0)
    assert not set(uids(s.demos)) & set(uids(s.queries))
    with pytest.raises(ValueError, match="num_shots=2"):
        task.split(2, 2, demo_seed=0)


def test_jsonl_demo_path_image_root_and_errors(tmp_path: Path) -> None:
    write_png(tmp_path / "pics" / "x.png")
    write_jsonl(tmp_path / "q.jsonl", [{"q": f"q{i}", "a": str(i), "im": "x.png"} for i in range(3)])
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"d{i}", "a": str(i), "im": "x.png"} for i in range(5)])
    task = JsonlTask(str(tmp_path / "q.jsonl"), image_root=str(tmp_path / "pics"), question_key="q",
                     answer_key="a", image_key="im", demo_path=str(tmp_path / "d.jsonl"),
                     cache_dir=str(tmp_path / "hf"))  # fmt: skip
    demos, queries = task.load()
    assert [e.question for e in demos] == [f"d{i}" for i in range(5)] and len(queries) == 3
    assert demos[0].images == (str(tmp_path / "pics" / "x.png"),)
    assert len(task.split(5, 3, demo_seed=0).demos) == 5  # separate files: the whole demo file is available
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        JsonlTask(str(missing)).load()
    with pytest.raises(FileNotFoundError, match="x.png"):
        JsonlTask(str(tmp_path / "q.jsonl"), question_key="q", answer_key="a", image_key="im",
                  cache_dir=str(tmp_path / "hf")).load()  # fmt: skip
    with pytest.raises(KeyError, match="question"):
        JsonlTask(str(tmp_path / "q.jsonl"), cache_dir=str(tmp_path / "hf")).load()


# --- image folder ---


def test_imagefolder_task(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for cls, colour in (("golden_retriever", (200, 150, 50)), ("tabby_cat", (90, 90, 90))):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", colour)
    (tmp_path / "train" / "tabby_cat" / "notes.txt").write_text("not an image")
    task = ImageFolderTask(str(tmp_path))
    demos, queries = task.load()
    assert len(demos) == 6 and len(queries) == 4
    assert {e.answer for e in demos} == {"golden retriever", "tabby cat"}
    assert all(Path(e.images[0]).is_file() and e.images[0].endswith(".png") for e in demos)
    assert queries[0].question == "What category does the above image belong to?"
    assert task.score(queries[0], "This is a Golden Retriever.") == 1.0
    assert task.score(queries[0], "a cat") == 0.0
    s = task.split(6, 4, demo_seed=0)
    assert not set(uids(s.demos)) & set(uids(s.queries))
    same = ImageFolderTask(str(tmp_path), query_split="train").split(3, 3, demo_seed=1)
    assert not set(uids(same.demos)) & set(uids(same.queries))
    with pytest.raises(FileNotFoundError, match="missing_root"):
        ImageFolderTask(str(tmp_path / "missing_root")).load()
    with pytest.raises(FileNotFoundError, match="test"):
        ImageFolderTask(str(tmp_path), query_split="test").load()
