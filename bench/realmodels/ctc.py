"""CTC greedy decoding and text metrics (edit distance, character error rate, exact match).

No data is made here; the recogniser modules decode their model outputs with
:func:`greedy_decode` and score the text with :func:`text_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def greedy_decode(scores: np.ndarray, characters: Sequence[str], blank: int) -> str:
    """Best-path CTC decoding: argmax per step, merge repeats, drop blanks.

    Args:
        scores: ``(T, C)`` probabilities or logits of one sample.
        characters: Symbol of each class (the blank's entry is never used).
        blank: Index of the blank class.

    Returns:
        The decoded text.
    """
    best = np.asarray(scores).argmax(axis=-1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != blank
    return "".join(characters[int(i)] for i in best[keep])


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (numpy, one vectorised row at a time).

    Args:
        a: Reference string.
        b: Hypothesis string.

    Returns:
        The least number of insertions, deletions and substitutions turning ``a`` into ``b``.
    """
    if not a or not b:
        return max(len(a), len(b))
    codes_b = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    row = cols.copy()
    for i, code in enumerate(np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32), start=1):
        step = np.empty_like(row)
        step[0] = i
        step[1:] = np.minimum(row[1:] + 1, row[:-1] + (codes_b != code))
        row = np.minimum.accumulate(step - cols) + cols
    return int(row[-1])


def normalise(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def text_metrics(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """Exact match and character error rates of predicted texts.

    Whitespace is normalised first. ``cer`` is the total edit distance over the total number of
    reference characters; ``cer_nospace`` ignores spaces altogether.

    Args:
        predictions: Decoded texts.
        targets: Ground-truth texts.

    Returns:
        ``exact``, ``cer`` and ``cer_nospace``.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    pairs = [(normalise(t), normalise(p)) for p, t in zip(predictions, targets, strict=True)]
    chars = max(1, sum(len(t) for t, _ in pairs))
    chars_ns = max(1, sum(len(t.replace(" ", "")) for t, _ in pairs))
    edits = sum(edit_distance(t, p) for t, p in pairs)
    edits_ns = sum(edit_distance(t.replace(" ", ""), p.replace(" ", "")) for t, p in pairs)
    exact = sum(t == p for t, p in pairs) / max(1, len(pairs))
    return {"exact": exact, "cer": edits / chars, "cer_nospace": edits_ns / chars_ns}
