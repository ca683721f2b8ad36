"""Per-query scoring rules and their aggregation.

`score(metric, prediction, example)` turns one model output into a number in [0, 1]; `aggregate` turns the
per-query rows of a run into summary numbers. This module is pure standard library: it deliberately does not
run models, parse chat templates or read files, and it knows about `Example` only through duck typing
(`.answer`, `.references`, `.choices`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

_TRAILING_PUNCT = ".,!?;:"


def _norm_basic(text: str) -> str:
    return " ".join(str(text).lower().split()).rstrip(_TRAILING_PUNCT).strip()


def exact_match(prediction: str, example: Any) -> float:
    """Equality after lowercasing, collapsing whitespace and dropping trailing punctuation."""
    return float(_norm_basic(prediction) == _norm_basic(example.answer))


def substring(prediction: str, example: Any) -> float:
    """The paper's ImageNet rule: the lowercased reference, trimmed of '.' and spaces, occurs in the prediction."""
    ref = example.answer.lower().strip().strip(".").strip()
    return float(bool(ref) and ref in str(prediction).lower())


_LETTER_PATTERNS = (
    re.compile(r"(?i:answer)\s*(?:(?i:is)|:)?\s*[(\[]?\s*([A-E])(?![A-Za-z])"),  # "The answer is (B)"
    re.compile(r"[(\[]\s*([A-E])\s*[)\]]"),  # "(B)" / "[B]"
    re.compile(r"^\s*([A-E])(?![A-Za-z])"),  # "B", "B. foo", "B) foo"
    re.compile(r"(?<![A-Za-z'])([A-E])(?![A-Za-z'])"),  # any standalone capital A-E
)


def extract_letter(text: str) -> str | None:
    """The first option letter A-E in `text`, trying explicit forms before bare standalone capitals."""
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(str(text))
        if match:
            return match.group(1).upper()
    return None


def mc_letter(prediction: str, example: Any) -> float:
    """Multiple choice: the predicted option letter equals the reference letter."""
    ref = extract_letter(example.answer)
    choices = tuple(getattr(example, "choices", ()) or ())
    if example.answer in choices[:5]:  # answer given as option text: its position gives the letter
        ref = "ABCDE"[choices.index(example.answer)]
    if ref is None:
        raise ValueError(f"mc_letter: no option letter A-E in the reference answer {example.answer!r}")
    return float(extract_letter(prediction) == ref)


# --- VQA soft accuracy (own compact take on the EvalAI normalisation) ---
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't", "wont": "won't",
    "didnt": "didn't", "wasnt": "wasn't", "werent": "weren't", "hasnt": "hasn't", "havent": "haven't",
    "shouldnt": "shouldn't", "couldnt": "couldn't", "wouldnt": "wouldn't", "im": "i'm", "ive": "i've",
    "youre": "you're", "theyre": "they're", "thats": "that's", "whats": "what's", "lets": "let's",
    "its": "it's", "hes": "he's", "shes": "she's", "theres": "there's", "wheres": "where's",
}  # fmt: skip
_PUNCT = "".join(c for c in string.punctuation if c not in "'")
_COMMA_NUMBER = re.compile(r"(?<=\d),(?=\d)")  # 1,000 -> 1000
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")  # keep decimal points


def normalize_vqa(text: str) -> str:
    """Lowercase; drop punctuation (keeping decimals and apostrophes); number words to digits; drop articles."""
    text = _COMMA_NUMBER.sub("", str(text).lower().replace("\n", " ").replace("\t", " "))
    text = _PERIOD.sub("", text)
    text = "".join(" " if c in _PUNCT else c for c in text)
    words = []
    for word in text.split():
        word = _CONTRACTIONS.get(word, _NUMBERS.get(word, word))
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(words)


def vqa(prediction: str, example: Any) -> float:
    """VQA soft accuracy: mean over leave-one-out reference subsets of min(1, matches / 3).

    With fewer than four references the divisor becomes (number of references - 1), and a single reference
    is plain normalised equality; with the usual ten references this is exactly the standard formula.
    """
    refs = [normalize_vqa(r) for r in (tuple(getattr(example, "references", ()) or ()) or (example.answer,))]
    pred = normalize_vqa(prediction)
    if len(refs) == 1:
        return float(pred == refs[0])
    need = min(3, len(refs) - 1)
    total = sum(pred == r for r in refs)
    return sum(min(1.0, (total - (pred == r)) / need) for r in refs) / len(refs)


def substring_nospace(prediction: str, example: Any) -> float:
    """The paper's ImageNet100 rule: lowercase, remove '.' and spaces from both; correct if the truth is in the
    prediction."""

    def squash(text: str) -> str:
        return str(text).lower().replace(".", "").replace(" ", "")

    truth = squash(example.answer)
    return float(bool(truth) and truth in squash(prediction))


def option_letter(prediction: str, example: Any) -> float:
    """The reference's IllusionVQA filter: a leading 'X.' gives the letter, else the whole reply (case and
    punctuation ignored) must equal the reference letter."""
    match = re.match(r"^\s*([A-Z])\.", str(prediction))
    got = match.group(1) if match else str(prediction)
    clean = "".join(c for c in got if c not in string.punctuation).strip().lower()
    return float(clean == example.answer.lower())


def rouge_l(prediction: str, reference: Any, beta: float = 1.2) -> float:
    """ROUGE-L F-measure on lowercased, punctuation-free word tokens (beta 1.2, as in the COCO caption toolkit).
    `reference`: a string, or an example (its answer)."""

    def words(text: str) -> list[str]:
        return "".join(" " if c in string.punctuation else c for c in str(text).lower()).split()

    a, b = words(prediction), words(getattr(reference, "answer", reference))
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


# --- boxes (ScreenSpot REC): (x1, y1, x2, y2) as fractions of the image ---
_BOX = re.compile(
    r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\])]"
)
BOX_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def parse_box(text: str) -> list[float] | None:
    """The first four comma-separated numbers in () or []; values on a 0-1000 grid are rescaled to [0, 1]."""
    match = _BOX.search(str(text))
    if not match:
        return None
    box = [float(v) for v in match.groups()]
    return [v / 1000 for v in box] if max(box) > 1 else box


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_scores(prediction: str, example: Any) -> dict[str, float]:
    """IoU, centre accuracy (the predicted box's centre inside the target) and ACC@t (IoU >= t) of one prediction;
    the target is `example.meta["bbox"]`, else the box in the reference answer."""
    meta = getattr(example, "meta", None) or {}
    target, pred = meta.get("bbox") or parse_box(example.answer), parse_box(prediction)
    if pred is None or target is None:
        return {"iou": 0.0, "center_acc": 0.0, **{f"acc@{t}": 0.0 for t in BOX_THRESHOLDS}}
    iou = box_iou(pred, target)
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    center = float(target[0] <= cx <= target[2] and target[1] <= cy <= target[3])
    return {"iou": iou, "center_acc": center, **{f"acc@{t}": float(iou >= t) for t in BOX_THRESHOLDS}}


METRICS: dict[str, Callable[[str, Any], float]] = {
    "exact_match": exact_match,
    "substring": substring,
    "mc_letter": mc_letter,
    "vqa": vqa,
    "substring_nospace": substring_nospace,
    "option_letter": option_letter,
    "rouge_l": rouge_l,
    **{
        f"box_{k}": (lambda p, e, k=k: box_scores(p, e)[k])
        for k in ("iou", "center_acc", *(f"acc@{t}" for t in BOX_THRESHOLDS))
    },
}


def score(metric: str, prediction: str, example: Any) -> float:
    """Score one prediction against `example` with the named metric (a float in [0, 1])."""
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(sorted(METRICS))}") from None
    return float(fn(prediction, example))


def aggregate(rows: list[dict]) -> dict:
    """Summary of per-query rows (each with a numeric or boolean `correct`): accuracy and num_queries."""
    if not rows:
        raise ValueError("aggregate() needs at least one row, got an empty list")
    values = []
    for i, row in enumerate(rows):
        if "correct" not in row:
            raise ValueError(f"row {i} has no 'correct' field (keys: {sorted(row)})")
        values.append(float(row["correct"]))
    return {"accuracy": sum(values) / len(values), "num_queries": len(values)}
