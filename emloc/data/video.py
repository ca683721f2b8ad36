"""Video input: uniform frame sampling from files with PyAV, a cheap decodability probe, and media validation.

A video reaches the model as a `Clip`: `num_frames` frames sampled uniformly over the stream (the indices of
`linspace(0, total - 1, num_frames)` rounded, as qwen-vl-utils samples a video for Qwen2-VL) and the rate they
were sampled at, which Qwen2.5-VL's temporal M-RoPE needs. `validate_media` checks every image file and video of a
set of examples before a model is loaded, so a missing or corrupt file fails a run in seconds, naming the file.

This module decodes only: resizing, normalisation and patches are the processor's job (`emloc.models.processor`).
It does not cache frames on disk, read audio, or sample by frames per second. PyAV (`pip install 'emloc[video]'`)
is imported lazily, so everything else works without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Sampling rate assumed for frames handed over without timing: qwen-vl-utils' default for frame-list videos.
DEFAULT_FPS = 2.0


@dataclass(frozen=True)
class Clip:
    """The sampled frames of one video.

    Attributes
    ----------
    frames : RGB PIL images, in time order (T of them).
    fps : frames per second of video time at which they were sampled (num_frames / duration for a file).
    """

    frames: tuple[Image.Image, ...]
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("a video clip needs at least one frame")
        if not self.fps > 0:
            raise ValueError(f"a video clip's fps must be > 0, got {self.fps!r}")


def is_video_file(value: Any) -> bool:
    """Whether `value` is a path (str or PathLike) with a video suffix."""
    return isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(VIDEO_SUFFIXES)


def _av():
    try:
        import av
    except ImportError as err:
        raise RuntimeError(f"decoding videos needs PyAV: pip install 'emloc[video]' (or av): {err}") from err
    return av


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def sample_indices(total: int, num_frames: int) -> list[int]:
    """Frame indices `round(linspace(0, total - 1, num_frames))`; repeats frames when the video is shorter."""
    if total < 1 or num_frames < 1:
        raise ValueError(f"cannot sample {num_frames} frames from {total}")
    return np.linspace(0, total - 1, num_frames).round().astype(int).tolist()


def probe(path: str | os.PathLike) -> None:
    """Open the container, check it has a video stream and decode its first frame.

    Raises
    ------
    ValueError
        One line naming the file when it is missing or cannot be decoded.
    """
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            next(container.decode(container.streams.video[0]))
    except StopIteration:
        raise ValueError(f"cannot decode video {path}: no frames") from None
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise ValueError(f"cannot decode video {path}: {_one_line(err)}") from None


def _decode(av, path: str, picks: Sequence[int]) -> tuple[dict[int, Image.Image], int]:
    """One decoding pass: the frames at `picks` (as RGB PIL images) and the number of frames decoded."""
    wanted, got, count = set(picks), {}, 0
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: same frames, faster on long clips
        for frame in container.decode(stream):
            if count in wanted:
                got[count] = frame.to_image().convert("RGB")
            count += 1
    return got, count


def read_clip(path: str | os.PathLike, num_frames: int) -> Clip:
    """`num_frames` frames sampled uniformly from a video file, and their sampling rate.

    The frame count is the number of frames actually decoded (the container's own count is only a first guess:
    when it is missing or wrong, the file is decoded a second time). The rate is num_frames / total * the
    stream's average fps, as qwen-vl-utils computes it; `DEFAULT_FPS` when the stream declares no rate.

    Raises
    ------
    ValueError
        One line naming the file when it is missing, undecodable or has no frames.
    """
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    av, path = _av(), str(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            guess, rate = int(stream.frames or 0), stream.average_rate
        picks = sample_indices(guess, num_frames) if guess > 0 else []
        got, total = _decode(av, path, picks)
        if total and total != guess:  # the container's count was missing or wrong: pick from the true count
            picks = sample_indices(total, num_frames)
            got, total = _decode(av, path, picks)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise ValueError(f"cannot decode video {path}: {_one_line(err)}") from None
    if not total:
        raise ValueError(f"cannot decode video {path}: no frames")
    fps = num_frames / total * float(rate) if rate else DEFAULT_FPS
    return Clip(tuple(got[i] for i in picks), fps)


def read_frames(path: str | os.PathLike, num_frames: int) -> list[Image.Image]:
    """`num_frames` uniformly spaced RGB frames of a video file (see `read_clip`)."""
    return list(read_clip(path, num_frames).frames)


def load_video(video: Any, num_frames: int) -> Clip:
    """A `Clip` from a video file path (sampled to `num_frames`), a `Clip`, or a sequence of frames.

    Frames (PIL images or (H, W, 3) uint8 arrays, or one (T, H, W, 3) array) are used as given, all of them, at
    `DEFAULT_FPS`.
    """
    if isinstance(video, Clip):
        return video
    if isinstance(video, (str, os.PathLike)):
        return read_clip(video, num_frames)
    if isinstance(video, np.ndarray) and video.ndim == 4:
        video = list(video)
    if isinstance(video, (list, tuple)) and video:
        return Clip(tuple(f.convert("RGB") if isinstance(f, Image.Image) else Image.fromarray(f) for f in video))
    raise ValueError(
        f"a video must be a file path, a Clip or a non-empty sequence of frames, got {type(video).__name__}"
    )


def validate_media(examples: Iterable[Any]) -> None:
    """Check every image file exists and every video file decodes (`probe`), each file once.

    Images and videos given in memory (PIL images, frame lists) are not checked.

    Raises
    ------
    ValueError
        One line naming the example and the file.
    """
    seen: set[str] = set()
    for ex in examples:
        for image in ex.images:
            if isinstance(image, (str, os.PathLike)) and str(image) not in seen:
                if not Path(image).is_file():
                    raise ValueError(f"example {ex.uid!r}: image file {image} not found")
                try:  # the header only: cheap, and a damaged or non-image file fails here, before any model loads
                    with Image.open(image) as im:
                        im.verify()
                except Exception as err:
                    raise ValueError(f"example {ex.uid!r}: cannot read image {image} ({_one_line(err)})") from None
                seen.add(str(image))
        for video in getattr(ex, "videos", ()):
            if isinstance(video, (str, os.PathLike)) and str(video) not in seen:
                try:
                    probe(video)
                except ValueError as err:
                    raise ValueError(f"example {ex.uid!r}: {err}") from None
                seen.add(str(video))
