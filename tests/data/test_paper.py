"""The paper's tasks on small local copies: the 100-document carve-out (seed 42), examples, image files, scores."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
from PIL import Image

from emloc.data.paper import (
    PAPER_TASKS,
    DatasetUnavailableError,
    IllusionVQATask,
    ImageNet100Task,
    MMERealWorldLiteTask,
    OKVQATask,
    ScreenSpotRECTask,
    YouCook2Task,
    carve_fewshot_pool,
    parse_box,
    rouge_l,
)

N = 106  # a 100-document pool and 6 queries


def png(i: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (i % 256, 40, 200))


def row(task: str, i: int) -> dict:
    if task == "illusionvqa":
        return {
            "image": png(i),
            "question": f"Where is illusion {i}?",
            "options": ["left", "right", "top"],
            "answer": ["left", "right", "top"][i % 3],
        }
    if task == "mme_realworld_lite":
        buf = io.BytesIO()
        png(i).save(buf, format="PNG")
        return {
            "bytes": base64.b64encode(buf.getvalue()).decode(),
            "question": f"Count {i}?",
            "index": 1000 + i,
            "multi-choice options": ["(A) 1", "(B) 2", "(C) 3", "(D) 4", "(E) 5"],
            "answer": "ABCDE"[i % 5],
            "category": "count",
            "l2-category": "perception",
        }
    if task == "ok_vqa":
        return {
            "image": png(i),
            "question": f"What is {i}?",
            "question_id": 5000 + i,
            "answers": ["cat"] * 6 + ["dog"] * 4 if i % 2 else ["dog"] * 7 + ["cat"] * 3,
        }
    return {
        "image": png(i),
        "instruction": f"the button {i}",
        "bbox": [0.1, 0.2, 0.3, 0.4],
        "data_type": "text",
        "data_source": "web",
    }


@pytest.fixture
def local_copy(tmp_path):
    import datasets

    def build(task: str):
        ds = datasets.Dataset.from_list([row(task, i) for i in range(N)])
        ds.save_to_disk(str(tmp_path / task))
        return PAPER_TASKS[task](path=str(tmp_path / task), image_cache=str(tmp_path / "images"))

    return build


def test_carve_out_is_the_reference_protocol():
    pool, rest = carve_fewshot_pool(250)
    assert pool == random.Random(42).sample(range(250), 100)  # sampled order, not sorted
    assert rest == sorted(set(range(250)) - set(pool))
    with pytest.raises(ValueError, match="100 out of 100"):
        carve_fewshot_pool(100)


def test_missing_local_copy_names_the_dataset_and_the_path(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=f"'lmms-lab/OK-VQA' not found at {tmp_path}/nowhere"):
        OKVQATask(path=str(tmp_path / "nowhere")).load()


@pytest.mark.parametrize("task", ["illusionvqa", "mme_realworld_lite", "ok_vqa", "screenspot_rec"])
def test_local_copy_gives_the_pool_the_queries_and_the_paper_demos(task, local_copy, tmp_path):
    t = local_copy(task)
    pool, rest = t.load()
    pool_idx, rest_idx = carve_fewshot_pool(N)
    assert [e.meta["index"] for e in pool] == pool_idx and [e.meta["index"] for e in rest] == rest_idx
    for e in pool[:3]:
        (image,) = e.images
        assert image.startswith(str(tmp_path / "images")) and Image.open(image).size == (8, 8)
    split = t.split(20, None, demo_seed=42)
    assert split.demos == [pool[i] for i in random.Random(42).sample(range(100), 20)]  # the reference's demos
    assert sorted(q.uid for q in split.queries) == sorted(e.uid for e in rest)
    first = rest[0]
    assert t.score(first, first.answer) == 1.0 and t.score(first, "nothing") == 0.0


def test_example_formats_and_scores(local_copy):
    ill = local_copy("illusionvqa").load()[1][0]
    assert ill.question.endswith("A. left\nB. right\nC. top") and ill.answer in "ABC"
    assert IllusionVQATask().score(ill, f"{ill.answer}. something") == 1.0
    mme = local_copy("mme_realworld_lite").load()[1][0]
    assert "The best answer is:" in mme.question and MMERealWorldLiteTask().score(mme, f"({mme.answer})") == 1.0
    ok = next(e for e in local_copy("ok_vqa").load()[1] if e.meta["index"] % 2 == 0)  # 7 x dog, 3 x cat
    assert ok.answer == "dog" and len(ok.references) == 10
    assert OKVQATask().score(ok, "A dog.") == 1.0 and OKVQATask().score(ok, "cat") == pytest.approx(0.9)
    box = local_copy("screenspot_rec").load()[1][0]
    ss = ScreenSpotRECTask()
    assert ss.score(box, "(0.15, 0.25, 0.25, 0.35)") == 1.0  # centre inside the target
    assert ss.scores(box, "[100, 200, 300, 400]")["iou"] == pytest.approx(1.0)  # a 0-1000 grid is rescaled
    assert ss.score(box, "no box") == 0.0 and parse_box("x") is None
    with pytest.raises(ValueError, match="box_metric"):
        ScreenSpotRECTask(box_metric="f1")


def test_imagenet100_takes_the_first_demos_of_the_train_list(tmp_path):
    rows = {"train": [], "val": []}
    for split, count in (("train", 4), ("val", 3)):
        for i in range(count):
            wnid = f"n0{i % 2}"
            (tmp_path / "imagenet1k" / split / wnid).mkdir(parents=True, exist_ok=True)
            png(i).save(tmp_path / "imagenet1k" / split / wnid / f"{split}{i}.JPEG", format="JPEG")
            rows[split].append(
                {
                    "question": "What category does the above image belong to?",
                    "answer": f"class {wnid}.",
                    "image": f"/x/data/imagenet1k/{split}/{wnid}/{split}{i}.JPEG",
                }
            )
        (tmp_path / f"{split}.json").write_text(json.dumps(rows[split]))
    task = ImageNet100Task(
        root=str(tmp_path / "imagenet1k"), train_list=str(tmp_path / "train.json"), val_list=str(tmp_path / "val.json")
    )
    split = task.split(3, None, demo_seed=7)
    assert [d.images[0] for d in split.demos] == [
        str(tmp_path / "imagenet1k/train" / f"n0{i % 2}/train{i}.JPEG") for i in range(3)
    ]
    assert len(split.queries) == 3 and split.demos[0].answer == "class n00."
    assert (
        task.score(split.queries[0], "It is a Class N00 .") == 1.0 and task.score(split.queries[0], "class n01") == 0.0
    )
    (tmp_path / "imagenet1k/val/n00/val0.JPEG").unlink()
    with pytest.raises(DatasetUnavailableError, match="1 of 3 ImageNet-1k images"):
        ImageNet100Task(
            root=str(tmp_path / "imagenet1k"),
            train_list=str(tmp_path / "train.json"),
            val_list=str(tmp_path / "val.json"),
        ).load()


def test_youcook2_examples_carry_their_video_and_rouge_l(tmp_path):
    import datasets

    (tmp_path / "videos").mkdir()
    rows = [{"video_path": f"clip{i}.mp4", "sentence": f"add {i} eggs to the pan"} for i in range(N)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "yc"))
    for i in range(N):  # loading only checks the files exist; frames are decoded when a prompt is rendered
        (tmp_path / "videos" / f"clip{i}.mp4").write_bytes(b"")
    task = YouCook2Task(path=str(tmp_path / "yc"), video_root=str(tmp_path / "videos"), num_frames=2)
    pool, rest = task.load()
    assert len(pool) == 100 and len(rest) == N - 100 and rest[0].images == ()
    assert rest[0].videos == (str(tmp_path / "videos" / f"clip{rest[0].meta['index']}.mp4"),)
    assert rest[0].num_frames == 2
    assert task.score(rest[0], rest[0].answer.upper()) == 1.0
    assert rouge_l("add eggs", "add two eggs to the pan") == pytest.approx(
        (1 + 1.2**2) * (1 / 3) / (1 / 3 + 1.2**2)
    )  # p = 1, r = 2/6
    with pytest.raises(DatasetUnavailableError, match="video_root"):
        YouCook2Task(path=str(tmp_path / "yc"), video_root=str(tmp_path / "nowhere")).load()
    (tmp_path / "videos" / "clip7.mp4").unlink()
    with pytest.raises(DatasetUnavailableError, match="clip7.mp4"):
        YouCook2Task(path=str(tmp_path / "yc"), video_root=str(tmp_path / "videos")).load()
