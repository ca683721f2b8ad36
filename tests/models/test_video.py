"""The video path on tiny Qwen2-VL / Qwen2.5-VL: PyAV decoding, torchvision-free pixels, rendering, positions and
lossless chunked memories with video demonstrations (fp32, CPU, offline; videos are written by the test).

pytest tests/models/test_video.py
"""

import numpy as np
import pytest
import torch
from PIL import Image

from emloc.data.base import Example
from emloc.data.video import Clip, probe, read_clip, read_frames, sample_indices, validate_media
from emloc.engine.compress import FullContext
from emloc.engine.generate import answer, score_choices
from emloc.engine.prompts import IMAGE
from emloc.methods.emloc import EMLoC
from emloc.models.loading import load
from tests.conftest import colour_image

av = pytest.importorskip("av")

INSTR = "Name the step."
LABELS = ("stir", "chop", "fry", "boil")
CODECS = ("mpeg4", "libx264", "mjpeg")


def write_video(path, frames: list[np.ndarray], fps: int = 6) -> str:
    """Encode (H, W, 3) uint8 frames with the first codec this PyAV build can write."""
    for codec in CODECS:
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            continue
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            container.mux(stream.encode())
        return str(path)
    pytest.skip(f"this PyAV build writes none of {CODECS}")


def clip_frames(seed: int, n: int = 6, height: int = 56, width: int = 56) -> list[np.ndarray]:
    """Smooth frames (they survive lossy codecs): a colour ramp drifting with the frame index."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, 3)
    yy, xx = np.mgrid[0:height, 0:width]
    return [
        np.clip(
            base[None, None] + ((xx + 7 * k) % width)[..., None] * rng.integers(-1, 2, 3) + yy[..., None] // 2, 0, 255
        ).astype(np.uint8)
        for k in range(n)
    ]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five short clips and a long one; the 1-fps ones give Qwen2.5-VL temporal ids far apart (seconds per
    temporal patch > 1), and the long one's temporal ids outrun the few text tokens after it."""
    folder = tmp_path_factory.mktemp("videos")
    sizes = [(56, 56), (56, 84), (84, 56), (56, 56), (56, 56)]
    short = [
        write_video(folder / f"clip{i}.mp4", clip_frames(i, 8, *sizes[i]), fps=1 if i % 2 else 6)
        for i in range(len(sizes))
    ]
    return short + [write_video(folder / "long.mp4", clip_frames(5, 32), fps=1)]


def long_query(videos, **kw) -> Example:
    """A query whose video's temporal ids exceed every text position after it (16 temporal patches)."""
    return Example("q", "Step?", "stir", videos=(videos[5],), num_frames=32, **kw)


@pytest.fixture(scope="module", params=("qwen2_vl", "qwen2_5_vl"))
def vl(request):
    return load(f"tiny:{request.param}")


def video_demos(videos) -> list[Example]:
    """Four demonstrations: video files, one with an image before its video, one with in-memory frames."""
    frames = [Image.fromarray(f) for f in clip_frames(9, 3)]
    return [
        Example("v0", "Clip 0: what is done?", LABELS[0], videos=(videos[0],), num_frames=4),
        Example("v1", "Clip 1: what is done?", LABELS[1], images=(colour_image(1),), videos=(videos[1],), num_frames=6),
        Example("v2", "Clip 2: what is done?", LABELS[2], videos=(frames,)),
        Example("v3", "Clip 3: what is done?", LABELS[3], videos=(videos[3],), num_frames=5),
    ]


def model_inputs(adapter, batch) -> dict:
    """The batch as the stock model's forward takes it (mm types 1 image, 2 video)."""
    mm = (batch.kinds == IMAGE).int()
    mm[batch.ids == adapter.model.config.video_token_id] = 2
    kwargs = {"input_ids": batch.ids, "mm_token_type_ids": mm}
    kwargs.update({k: v for k, v in batch.vision.items() if k != "second_per_grid_ts"})
    if "second_per_grid_ts" in batch.vision and "Qwen2_5" in type(adapter.model).__name__:
        kwargs["second_per_grid_ts"] = batch.vision["second_per_grid_ts"]
    return kwargs


def full_model_scores(adapter, demos, query, candidates) -> list[float]:
    """Log-likelihood of each candidate answer from ONE stock forward over the whole uncompressed conversation."""
    r = adapter.renderer(INSTR)
    row = sum([r.demo(d) for d in demos], r.preamble()) + r.query(query)
    scores = []
    for cand in candidates:
        c = r.answer_row(cand)
        with torch.no_grad():
            logits = adapter.model(**model_inputs(adapter, adapter.collate([row + c]))).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        scores.append(sum(logp[len(row) + j - 1, t].item() for j, t in enumerate(c.ids) if c.targets[j]))
    return scores


# ------------------------------------------------------------------------------------------------ decoding
def test_decoding_samples_num_frames_uniformly(tmp_path):
    levels = [0, 50, 100, 150, 200, 250]
    path = write_video(tmp_path / "grey.mp4", [np.full((56, 56, 3), v, np.uint8) for v in levels], fps=6)
    clip = read_clip(path, 4)
    assert len(clip.frames) == 4 and all(f.size == (56, 56) and f.mode == "RGB" for f in clip.frames)
    assert sample_indices(6, 4) == [0, 2, 3, 5]  # round(linspace(0, 5, 4))
    means = [float(np.asarray(f).mean()) for f in clip.frames]
    assert means == pytest.approx([levels[i] for i in (0, 2, 3, 5)], abs=12)
    assert clip.fps == pytest.approx(4 / 6 * 6)  # num_frames / total * stream fps
    assert len(read_frames(path, 9)) == 9  # more frames than the clip has: frames repeat
    probe(path)


def test_undecodable_or_missing_files_fail_naming_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for call in (lambda: probe(bad), lambda: read_frames(bad, 4)):
        with pytest.raises(ValueError, match="broken.mp4") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="'q'.*broken.mp4"):
        validate_media([Example("q", "?", "a", videos=(str(bad),))])
    with pytest.raises(ValueError, match="'i'.*nowhere.png"):
        validate_media([Example("i", "?", "a", images=(str(tmp_path / "nowhere.png"),))])
    with pytest.raises(ValueError, match="gone.mp4"):
        probe(tmp_path / "gone.mp4")


# ------------------------------------------------------------------------------------------------ pixels
def test_identical_frames_give_the_image_pixels_and_real_temporal_patches(qwen_vl):
    processor = qwen_vl.processor
    rng = np.random.default_rng(1)
    a, b = (Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)) for _ in range(2))
    image = processor.image_processor(images=[a], return_tensors="pt")
    same = processor.video_processor([[a, a]], return_tensors="pt")
    assert torch.equal(same["pixel_values_videos"], image["pixel_values"])
    assert same["video_grid_thw"].tolist() == [[1, *image["image_grid_thw"][0, 1:].tolist()]]
    # two different frames: temporal slot 0 holds frame a, slot 1 frame b, patch for patch
    both = processor.video_processor([[a, b]], return_tensors="pt")["pixel_values_videos"].view(-1, 3, 2, 14, 14)
    image_b = processor.image_processor(images=[b], return_tensors="pt")["pixel_values"].view(-1, 3, 2, 14, 14)
    assert torch.equal(both[:, :, 0], image["pixel_values"].view(-1, 3, 2, 14, 14)[:, :, 0])
    assert torch.equal(both[:, :, 1], image_b[:, :, 0])
    # an odd frame count is padded by repeating the last frame
    odd = processor.video_processor([Clip((a, b, b))], return_tensors="pt")
    assert odd["video_grid_thw"][0, 0] == 2
    assert torch.equal(odd["pixel_values_videos"][: both.shape[0]], both.reshape(both.shape[0], -1))


def test_processor_expands_video_placeholders(qwen_vl):
    processor = qwen_vl.processor
    frames = [Image.fromarray(f) for f in clip_frames(0, 5, 56, 84)]
    text = "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>Hi"
    out = processor(text=[text], images=[colour_image(0)], videos=[Clip(tuple(frames), fps=0.5)], return_tensors="pt")
    grid = out["video_grid_thw"][0]
    assert grid.tolist() == [3, 4, 6]
    assert int((out["input_ids"] == processor.video_token_id).sum()) == int(grid.prod()) // 4
    assert int((out["mm_token_type_ids"] == 2).sum()) == int(grid.prod()) // 4
    assert out["pixel_values_videos"].shape == (int(grid.prod()), 3 * 2 * 14 * 14)
    assert out["second_per_grid_ts"].tolist() == [4.0]  # temporal_patch_size / fps


# ------------------------------------------------------------------------------------------------ rendering, positions
def test_rendering_puts_images_then_videos_then_text(vl, videos):
    r = vl.renderer(INSTR)
    ex = video_demos(videos)[1]
    row = r.demo(ex)
    assert len(row.images) == 1 and len(row.videos) == 1 and len(row.videos[0].frames) == 6
    image_token, video_token = vl.processor.image_token_id, vl.processor.video_token_id
    first_image, first_video = row.ids.index(image_token), row.ids.index(video_token)
    assert first_image < first_video < min(i for i, k in enumerate(row.kinds) if k not in (0, IMAGE))
    assert all(k == IMAGE for i, k in zip(row.ids, row.kinds) if i in (image_token, video_token))
    batch = vl.collate([row])
    assert batch.vision["video_grid_thw"].tolist() == [[3, 4, 6]]  # 56x84 frames, 6 frames -> 3 temporal patches


def test_chunked_positions_equal_the_models_own_on_the_whole_sequence(vl, videos):
    r, demos = vl.renderer(INSTR), video_demos(videos)
    query = long_query(videos)
    pieces = [r.preamble() + r.demo(demos[0]) + r.demo(demos[1]), r.demo(demos[2]) + r.demo(demos[3]), r.query(query)]
    offset, chunked = 0, []
    for piece in pieces:
        prep = vl.prepare(vl.collate([piece]), offset)
        chunked.append(prep.positions[:, 0].cpu())
        offset = int(prep.extents[0])
    whole = vl.collate([sum(pieces[1:], pieces[0])])
    kw = model_inputs(vl, whole)
    extra = {"second_per_grid_ts": kw["second_per_grid_ts"]} if "second_per_grid_ts" in kw else {}
    expect, _ = vl.model.model.get_rope_index(
        whole.ids,
        kw["mm_token_type_ids"],
        image_grid_thw=kw["image_grid_thw"],
        video_grid_thw=kw["video_grid_thw"],
        **extra,
    )
    assert torch.equal(torch.cat(chunked, dim=1), expect[:, 0])
    video_pos = expect[0, 0, whole.ids[0] == vl.processor.video_token_id]
    assert len(set(video_pos.tolist())) > 1, "video tokens must get temporal ids, not one frame's"
    assert int(video_pos.max()) > int(expect[0, 0, -1]), "the query's video must outrun its text (vacuous test)"


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize(
    "method", [FullContext(chunk_size=2), EMLoC(chunk_size=2, js_threshold=0.0)], ids=["full_context", "emloc_lossless"]
)
def test_lossless_video_memories_score_like_the_full_model(vl, videos, method):
    demos, query = video_demos(videos), long_query(videos, choices=LABELS)
    memory = method.build(vl, demos, INSTR)
    assert len(memory.chunks) == 2 and memory.retention == 1.0
    ours = score_choices(vl, memory, vl.renderer(INSTR), [query], [list(LABELS)])[0]
    assert ours == pytest.approx(full_model_scores(vl, demos, query, LABELS), abs=1e-4)


def test_compressed_video_memory_answers(vl, videos):
    demos = video_demos(videos)
    memory = EMLoC(chunk_size=2, js_threshold=0.05).build(vl, demos, INSTR)
    assert memory.retention < 1.0
    queries = [
        Example("q", "Clip 4: what is done?", "stir", videos=(videos[4],), num_frames=4, choices=LABELS),
        Example("g", "Clip 0 again: what is done?", "stir", videos=(videos[0],), num_frames=4),
    ]
    ranked, generated = answer(vl, memory, vl.renderer(INSTR), queries, max_new_tokens=3)
    assert ranked in LABELS and isinstance(generated, str)


def test_lmms_eval_visuals_become_videos():
    from types import SimpleNamespace

    model = pytest.importorskip("emloc.integrations.lmms_eval.model")
    fake = SimpleNamespace(adapter=SimpleNamespace(multimodal=True), source="tiny:qwen2_vl", max_num_frames=None)
    task = SimpleNamespace(config=SimpleNamespace(metadata={"max_num_frames": 6}))
    image = colour_image(0)
    fields = model.EMLoCLMM._images(fake, "t", ["/data/clip.MP4", image], task)
    assert fields == {"images": (image,), "videos": ("/data/clip.MP4",), "num_frames": 6}
    assert model.EMLoCLMM._images(fake, "t", ["/data/clip.mp4"])["num_frames"] == 8
