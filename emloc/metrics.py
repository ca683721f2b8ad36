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


METRICS: dict[str, Callable[[str, Any], float]] = {
    "exact_match": exact_match,
    "substring": substring,
    "mc_letter": mc_letter,
    "vqa": vqa,
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
