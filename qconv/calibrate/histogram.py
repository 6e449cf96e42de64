"""Streaming, mergeable statistics of one tensor: exact min/max and a signed histogram.

The histogram has ``2 * B`` bins of width ``2**e`` centred on zero, covering ``[-B * 2**e,
B * 2**e)``. The exponent ``e`` is always the smallest one whose range strictly holds every value
seen so far; when a batch needs more room, bins are summed in groups of ``2**k`` (the grid at
``e + k`` nests exactly in the grid at ``e``). The counts therefore depend only on the multiset of
values seen, not on batch order or sharding: merging two shards' statistics gives the same result
as one pass over both. Memory is ``2 * B`` int64 counts per tensor whatever the sample count.

Example with B = 4 (8 bins): after [0.3, -0.2] the smallest e with 4 * 2**e > 0.3 is e = -3
(width 0.125, range [-0.5, 0.5)); 0.3 falls in bin floor(0.3 / 0.125) + 4 = 6. A later 1.5 needs
e = -1 (width 0.5): bins are summed in groups of 4 and 1.5 lands in bin 3 + 4 = 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Exponent used before any non-zero value is seen: zeros land in bin B at any exponent.
MIN_EXPONENT = -126


@dataclass
class TensorStats:
    """Running statistics of one tensor.

    Attributes:
        bins_per_side: B, the number of bins on each side of zero.
        exponent: Bin width is ``2 ** exponent``.
        counts: int64 histogram of ``2 * B`` bins.
        minimum: Smallest finite value seen (inf before any).
        maximum: Largest finite value seen (-inf before any).
        count: Number of finite values seen.
        nonfinite: Number of NaN/Inf values seen (not in the histogram).
        zeros: Number of values exactly 0 (also counted in the histogram); they quantize
            exactly under any range, so range searches may leave them out.
    """

    bins_per_side: int = 2048
    exponent: int = MIN_EXPONENT
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    minimum: float = math.inf
    maximum: float = -math.inf
    count: int = 0
    nonfinite: int = 0
    zeros: int = 0

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(2 * self.bins_per_side, dtype=np.int64)

    @property
    def bin_width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def empty(self) -> bool:
        return self.count == 0

    def bin_edges(self) -> np.ndarray:
        """The ``2 * B + 1`` edges of the histogram bins."""
        b = self.bins_per_side
        return np.arange(-b, b + 1, dtype=np.float64) * self.bin_width

    def update(self, values: np.ndarray) -> None:
        """Fold a batch of values in; the batch is not kept."""
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            return
        low, high = flat.min(), flat.max()
        if not (np.isfinite(low) and np.isfinite(high)):  # rare: pay for the mask only then
            finite = flat[np.isfinite(flat)]
            self.nonfinite += flat.size - finite.size
            if finite.size == 0:
                return
            flat, low, high = finite, finite.min(), finite.max()
        self.minimum = min(self.minimum, float(low))
        self.maximum = max(self.maximum, float(high))
        self.count += flat.size
        self.zeros += int(np.count_nonzero(flat == 0))
        self._grow_to(_exponent_for(max(-self.minimum, self.maximum), self.bins_per_side))
        self.counts += np.bincount(self._bin_index(flat), minlength=2 * self.bins_per_side)

    def _bin_index(self, flat: np.ndarray) -> np.ndarray:
        # Scaling by a power of two is exact in binary floating point while the result stays
        # in range (|x| < B * 2**e guarantees it here), so float32 data needs no float64 copy.
        if flat.dtype == np.float32 and -100 < self.exponent < 100:
            scaled = flat * np.float32(2.0**-self.exponent)
        else:
            scaled = np.ldexp(flat.astype(np.float64), -self.exponent)
        np.floor(scaled, out=scaled)
        index = scaled.astype(np.int64)
        index += self.bins_per_side
        return index

    def merge(self, other: TensorStats) -> TensorStats:
        """Statistics of both inputs together, as if one pass had seen all their values."""
        if other.bins_per_side != self.bins_per_side:
            raise ValueError("cannot merge histograms with different bin counts")
        merged = self.copy()
        merged._grow_to(max(self.exponent, other.exponent))
        theirs = other.copy()
        theirs._grow_to(merged.exponent)
        merged.counts = merged.counts + theirs.counts
        merged.minimum = min(self.minimum, other.minimum)
        merged.maximum = max(self.maximum, other.maximum)
        merged.count = self.count + other.count
        merged.nonfinite = self.nonfinite + other.nonfinite
        merged.zeros = self.zeros + other.zeros
        return merged

    def copy(self) -> TensorStats:
        return TensorStats(
            self.bins_per_side,
            self.exponent,
            self.counts.copy(),
            self.minimum,
            self.maximum,
            self.count,
            self.nonfinite,
            self.zeros,
        )

    def _grow_to(self, exponent: int) -> None:
        steps = exponent - self.exponent
        if steps <= 0:
            return
        b = self.bins_per_side
        target = ((np.arange(2 * b, dtype=np.int64) - b) >> min(steps, 62)) + b
        self.counts = np.bincount(target, weights=self.counts, minlength=2 * b).astype(np.int64)
        self.exponent = exponent


def _exponent_for(absmax: float, bins_per_side: int) -> int:
    """The smallest e with ``bins_per_side * 2**e > absmax``."""
    if absmax <= 0.0:
        return MIN_EXPONENT
    _, k = math.frexp(absmax / bins_per_side)  # absmax / B = m * 2**k with 0.5 <= m < 1
    return max(k, MIN_EXPONENT)
