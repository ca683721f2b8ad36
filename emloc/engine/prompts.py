"""From examples to token rows: chat-template rendering, answer spans, chunking and batching.

The whole many-shot prompt is one multi-turn conversation `system, (user_i, assistant_i) x k, user_query,
assistant:` cut at turn boundaries (docs/method.md §1.2). Instead of slicing rendered strings by magic character
offsets or pairing magic token ids (docs/method.md §6.5), every piece is derived from the model's own chat
template by rendering with sentinel strings and taking differences of renders; a template that is not
prefix-stable is rejected with a clear error. Each piece is tokenized on its own and the pieces are
concatenated, so a demonstration has the same tokens in a chunk, in a probe and in the full context, and
answer spans are exact by construction.

It deliberately does not know models: images and videos are handed to an optional processor (which expands
their placeholders); positions and embeddings are the adapter's job. Video tokens share the IMAGE ("visual")
token kind; only their token id tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from emloc.data.base import Example
from emloc.data.video import load_video
from emloc.utils.errors import ConfigError

TEMPLATE, IMAGE, QUESTION, ANSWER = range(4)
KIND_NAMES = ("template", "image", "question", "answer")
_Q, _A = "\u2983EMLOC_Q\u2984", "\u2983EMLOC_A\u2984"  # sentinels no tokenizer merges with real text


@dataclass
class Row:
    """One token sequence. `targets` marks tokens a demonstration teaches (answer + end of turn).

    `images` (PIL) and `videos` (`emloc.data.video.Clip`) are the visuals whose placeholders the row holds, in order.
    """

    ids: list[int]
    kinds: list[int]
    targets: list[bool]
    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: Row) -> Row:
        return Row(
            self.ids + other.ids,
            self.kinds + other.kinds,
            self.targets + other.targets,
            self.images + other.images,
            self.videos + other.videos,
        )


@dataclass
class Batch:
    """Padded rows. ids/valid/kinds/targets: (bsz, L).

    `vision` holds the processor's tensors of all rows' visuals, in row order: `pixel_values`, `image_grid_thw`
    (images) and `pixel_values_videos`, `video_grid_thw` (num_videos, 3), `second_per_grid_ts` (num_videos,)
    (videos); a key is absent when no row has that kind of visual.
    """

    rows: list[Row]
    ids: torch.Tensor
    valid: torch.Tensor
    kinds: torch.Tensor
    targets: torch.Tensor
    pad_side: str
    vision: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def predict(self) -> torch.Tensor:
        """(bsz, L) bool: positions whose next-token distribution predicts a target token (no shift needed)."""
        out = torch.zeros_like(self.targets)
        out[:, :-1] = self.targets[:, 1:]
        return out

    def decision_rows(self) -> torch.Tensor:
        """(bsz, L) bool: per row, the position that predicts its first target token (the answer's first token:
        where a query's answer is decided)."""
        rows = torch.zeros_like(self.predict)
        first = self.predict.float().argmax(-1)
        has = self.predict.any(-1)
        rows[has.nonzero()[:, 0], first[has]] = True
        return rows

    def probe_rows(self, end_of_turn: bool = False) -> torch.Tensor:
        """(bsz, L) bool: the rows whose next-token distributions a probe compares: those that predict a target
        (answer tokens and the end-of-turn token) and, with `end_of_turn`, also the row AT each row's last target,
        which predicts what follows the end of the turn (the reference's label span, docs/method.md §6.4)."""
        rows = self.predict.clone()
        if end_of_turn:
            positions = torch.arange(self.targets.shape[1])
            last = torch.where(self.targets, positions, -1).max(-1).values
            has = last >= 0
            rows[has.nonzero()[:, 0], last[has]] = True
        return rows


class ChatRenderer:
    """Renders examples with a tokenizer's chat template into `Row`s.

    Parameters
    ----------
    tokenizer : a transformers tokenizer with a `chat_template`.
    processor : optional multimodal processor (called as `processor(text=[...], images=[...], videos=[...])`).
    instruction : optional system message shared by every prompt (e.g. the label set).
    multimodal : whether message content is a list of typed items (VLM templates) or a plain string.
    """

    def __init__(self, tokenizer, processor=None, instruction: str | None = None, multimodal: bool = False,
                 name: str | None = None) -> None:  # fmt: skip
        self.name = name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        if getattr(tokenizer, "chat_template", None) is None:
            raise NotImplementedError(
                f"{type(tokenizer).__name__} has no chat template; EMLoC renders demos as chat turns"
            )
        self.tok, self.processor, self.instruction, self.multimodal = tokenizer, processor, instruction, multimodal
        self._turns: dict[tuple[int, int], tuple[str, str]] = {}
        head = [{"role": "system", "content": instruction}] if instruction else []
        first = self._render(head + [self._user(_Q, 0)], True)
        user_before, user_after = self._user_turn(0)
        turn = user_before + _Q + user_after
        if not first.endswith(turn):
            raise NotImplementedError(
                "chat template is not turn-stable: the first user turn renders differently from later ones"
            )
        self._system = first[: -len(turn)]
        answered = self._render(head + [self._user(_Q, 0), {"role": "assistant", "content": _A}], False)
        if not answered.startswith(first) or _A not in answered[len(first) :]:
            raise NotImplementedError("chat template is not prefix-stable around the assistant turn")
        self._ans_before, self._ans_after = answered[len(first) :].split(_A)
        self.end_of_turn = self._encode(self._ans_after)[0] if self._ans_after else tokenizer.eos_token_id

    # ---------------------------------------------------------------- template probing
    def _user(self, text: str, n_images: int, n_videos: int = 0) -> dict:
        if not self.multimodal:
            return {"role": "user", "content": text}
        visuals = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
        return {"role": "user", "content": visuals + [{"type": "text", "text": text}]}

    def _render(self, messages: list[dict], gen: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def _user_turn(self, n_images: int, n_videos: int = 0) -> tuple[str, str]:
        """Text of a later user turn (incl. the assistant header), split at the question sentinel."""
        key = (n_images, n_videos)
        if key not in self._turns:
            if (n_images or n_videos) and not self.multimodal:
                raise ValueError(f"this model takes no images or videos, but an example carries {n_images + n_videos}")
            ctx = [self._user("x", 0), {"role": "assistant", "content": "y"}]
            base = self._render(ctx, False)
            full = self._render(ctx + [self._user(_Q, n_images, n_videos)], True)
            if not full.startswith(base):
                raise NotImplementedError("chat template is not prefix-stable across turns")
            self._turns[key] = tuple(full[len(base) :].split(_Q))  # type: ignore[assignment]
        return self._turns[key]

    # ---------------------------------------------------------------- tokenization
    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def _piece(self, text: str, kind: int, target: bool = False) -> Row:
        ids = self._encode(text)
        return Row(ids, [kind] * len(ids), [target] * len(ids))

    def _user_row(self, ex: Example) -> Row:
        if (ex.images or ex.videos) and (not self.multimodal or self.processor is None):
            raise ConfigError(
                "model.source", self.name,
                f"a text-only model, but example {ex.uid!r} carries {len(ex.images) + len(ex.videos)} image(s) or "
                "video(s)", "use a vision-language model (model=qwen2_vl_7b, or model=tiny_qwen2_vl to try) or a "
                "text task",
            )  # fmt: skip
        before, after = self._user_turn(len(ex.images), len(ex.videos))
        if ex.images or ex.videos:
            images = [load_image(im) for im in ex.images]
            clips = [load_video(v, ex.num_frames) for v in ex.videos]
            ids = self.processor(text=[before], images=images or None, videos=clips or None, return_tensors="pt")
            ids = ids["input_ids"][0].tolist()
            visual = {self.processor.image_token_id, getattr(self.processor, "video_token_id", None)}
            row = Row(ids, [IMAGE if i in visual else TEMPLATE for i in ids], [False] * len(ids), images, clips)
        else:
            row = self._piece(before, TEMPLATE)
        return row + self._piece(ex.question, QUESTION) + self._piece(after, TEMPLATE)

    def answer_row(self, answer: str) -> Row:
        """Answer tokens plus the end-of-turn token as targets; the rest of the turn closing as template."""
        row = self._piece(self._ans_before, TEMPLATE) + self._piece(answer, ANSWER, target=True)
        rest = self._encode(self._ans_after)
        if rest:
            row = row + Row(rest, [TEMPLATE] * len(rest), [True] + [False] * (len(rest) - 1))
        return row

    def preamble(self) -> Row:
        return self._piece(self._system, TEMPLATE)

    def demo(self, ex: Example) -> Row:
        return self._user_row(ex) + self.answer_row(ex.answer)

    def query(self, ex: Example) -> Row:
        return self._user_row(ex)


def load_image(image: Any):
    """A PIL RGB image from a PIL image or a file path; an unreadable file raises naming the path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise ConfigError(
            None,
            None,
            f"cannot read image {image!s} ({err})",
            "replace or remove the file, or fix the task's data paths (paths.data_dir, EMLOC_DATA)",
        ) from None


def chunks(items: list, chunk_size: int) -> list[list]:
    """Consecutive groups of `chunk_size` (the last may be shorter, even a single demo)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]


def collate(rows: list[Row], pad_id: int, pad_side: str = "right", processor=None) -> Batch:
    """Pad rows into a batch; images (then videos) of all rows are processed together, in row order."""
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    width = max(len(r) for r in rows)
    shape = (len(rows), width)
    ids, kinds = torch.full(shape, pad_id, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    valid, targets = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
    for b, r in enumerate(rows):
        sl = slice(width - len(r), width) if pad_side == "left" else slice(0, len(r))
        ids[b, sl], kinds[b, sl] = torch.tensor(r.ids), torch.tensor(r.kinds)
        valid[b, sl], targets[b, sl] = True, torch.tensor(r.targets)
    vision = {}
    images = [im for r in rows for im in r.images]
    if images:
        out = processor.image_processor(images=images, return_tensors="pt")
        vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    videos = [v for r in rows for v in r.videos]
    if videos:
        out = processor.video_processor(videos, return_tensors="pt")
        vision.update({k: out[k] for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")})
    return Batch(rows, ids, valid, kinds, targets, pad_side, vision)
