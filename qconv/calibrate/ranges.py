"""Clipping ranges derived from :class:`TensorStats`, one pure function per method.

All methods read the same statistics, so trying another method costs no inference.

- ``minmax``: the exact observed ``[min, max]``.
- ``percentile``: the ``p``-th percentile of the values as the upper end and the ``(100 - p)``-th
  as the lower end, interpolated linearly inside a histogram bin. Example: 1,000 values of which
  one is an outlier at 100 and the rest lie in [0, 1]: p = 99.9 clips at about 1, not 100.
- ``entropy``: TensorRT's KL-divergence search on the histogram of ``|x|`` (exact zeros left
  out, since they quantize exactly whatever the threshold): for each candidate
  threshold ``T`` (a bin edge), the clipped reference distribution ``P`` (outliers added to the
  last bin) is compared with ``Q``, ``P`` quantized to ``levels`` bins and expanded back; the ``T``
  with the smallest ``KL(P || Q)`` wins. On a histogram with separate clusters KL can settle in
  an empty gap and clip nearly every value; when the chosen range's quantization error (as
  ``mse`` measures it) is over ``ENTROPY_GUARD`` times that of the observed range, the observed
  range is used and the method is reported as ``minmax (entropy clipped too much)``.
- ``mse``: the range ``alpha * [min, max]`` (alpha on a grid in (0, 1]) whose quantize/dequantize
  round trip of the histogram bin centres has the smallest count-weighted squared error.
- ``auto``: per tensor, the candidate among minmax, percentiles 99.9/99.99/99.999, entropy and
  mse whose range gives the smallest quantization error measured on the histogram (the same
  error ``mse`` minimizes); the report names the winner for each tensor.
"""

from __future__ import annotations

import numpy as np

from qconv.calibrate.histogram import TensorStats
from qconv.config import CalibrationMethod, QuantType
from qconv.qparams import compute_qparams

Range = tuple[float, float]
# The KL search works on at most this many |x| bins (coarsened exactly from the histogram).
ENTROPY_BINS = 4096
ENTROPY_CANDIDATES = 512
MSE_GRID = 100
# QA: outputs clustered at +-1.5 got +-0.975 from KL (SQNR 8.8 dB, mse's range 34.6 dB); a
# bimodal output observed in [-1.95, 1.64] got +-0.25, 2.1 dB. 10x is 10 dB worse than no
# clipping at all: past it, KL's pick is not a trade-off but a failure.
ENTROPY_GUARD = 10.0


def minmax(stats: TensorStats) -> Range:
    """The observed range."""
    return stats.minimum, stats.maximum


def percentile(stats: TensorStats, p: float) -> Range:
    """``[(100 - p)th, p-th]`` percentile of the observed values."""
    cdf = np.cumsum(stats.counts) / max(stats.count, 1)
    edges = stats.bin_edges()
    lo = _quantile(cdf, edges, 1.0 - p / 100.0)
    hi = _quantile(cdf, edges, p / 100.0)
    return max(lo, stats.minimum), min(hi, stats.maximum)


def _quantile(cdf: np.ndarray, edges: np.ndarray, q: float) -> float:
    index = int(np.searchsorted(cdf, q, side="left"))
    index = min(index, len(cdf) - 1)
    below = cdf[index - 1] if index > 0 else 0.0
    inside = cdf[index] - below
    fraction = (q - below) / inside if inside > 0 else 0.0
    return float(edges[index] + fraction * (edges[index + 1] - edges[index]))


def entropy(stats: TensorStats, levels: int = 128) -> Range:
    """TensorRT-style KL-divergence threshold on ``|x|``, applied to both ends of the range."""
    hist, width = _folded_abs_histogram(stats)
    if hist.size <= levels:
        return minmax(stats)
    threshold = _best_kl_threshold(hist, levels) * width
    return max(stats.minimum, -threshold), min(stats.maximum, threshold)


def _folded_abs_histogram(stats: TensorStats) -> tuple[np.ndarray, float]:
    b = stats.bins_per_side
    folded = stats.counts[b:] + stats.counts[:b][::-1]  # bin k covers [k*w, (k+1)*w) of |x|
    # Exact zeros (Relu outputs, padding) quantize exactly under any threshold; left in, their
    # spike in bin 0 dominates the divergence of every merged candidate and drives the search
    # to the smallest threshold.
    folded[0] -= stats.zeros
    used = int(np.flatnonzero(folded)[-1]) + 1 if folded.any() else 1
    hist, width = folded[:used].astype(np.float64), stats.bin_width
    while hist.size > ENTROPY_BINS:
        hist = _pairwise_sum(hist)
        width *= 2
    return hist, width


def _pairwise_sum(hist: np.ndarray) -> np.ndarray:
    padded = np.append(hist, 0.0) if hist.size % 2 else hist
    return padded.reshape(-1, 2).sum(axis=1)


def _best_kl_threshold(hist: np.ndarray, levels: int) -> int:
    step = max(1, (hist.size - levels) // ENTROPY_CANDIDATES)
    candidates = range(levels, hist.size + 1, step)
    divergences = [_kl_at(hist, i, levels) for i in candidates]
    return list(candidates)[int(np.argmin(divergences))]


def _kl_at(hist: np.ndarray, bins: int, levels: int) -> float:
    reference = hist[:bins].copy()
    reference[-1] += hist[bins:].sum()
    nonzero = hist[:bins] > 0
    # TensorRT merges bins // levels consecutive bins per level; the last level takes the rest.
    group = np.minimum(np.arange(bins) // (bins // levels), levels - 1)
    group_sum = np.bincount(group, weights=hist[:bins], minlength=levels)
    group_nonzero = np.bincount(group, weights=nonzero, minlength=levels)
    expanded = np.where(nonzero, group_sum[group] / np.maximum(group_nonzero[group], 1), 0.0)
    p = reference / reference.sum()
    q = expanded / max(expanded.sum(), 1e-300)
    mask = p > 0
    # A bin that P fills and Q leaves empty would make KL infinite; smooth it as TensorRT does.
    q_safe = np.where(q[mask] > 0, q[mask], 1e-10)
    return float(np.sum(p[mask] * np.log(p[mask] / q_safe)))


def quantization_errors(
    stats: TensorStats, lows: np.ndarray, highs: np.ndarray, qtype: QuantType, symmetric: bool
) -> np.ndarray:
    """Count-weighted squared round-trip error of the histogram for each candidate range."""
    edges = stats.bin_edges()
    used = stats.counts > 0
    centres = np.clip(((edges[:-1] + edges[1:]) / 2)[used], stats.minimum, stats.maximum)
    weights = stats.counts[used].astype(np.float64)
    qp = compute_qparams(lows, highs, qtype, symmetric)
    scale = np.atleast_1d(qp.scale.astype(np.float64))[:, None]
    zero = np.atleast_1d(qp.zero_point.astype(np.float64))[:, None]
    lo_q, hi_q = (-127, 127) if symmetric and qtype is QuantType.INT8 else (qtype.qmin, qtype.qmax)
    q = np.clip(np.rint(centres[None, :] / scale) + zero, lo_q, hi_q)
    return ((q - zero) * scale - centres[None, :]) ** 2 @ weights


def mse(stats: TensorStats, qtype: QuantType, symmetric: bool) -> Range:
    """The scaled-down observed range with the least quantization mean squared error."""
    alphas = np.linspace(1.0 / MSE_GRID, 1.0, MSE_GRID)
    errors = quantization_errors(
        stats, alphas * stats.minimum, alphas * stats.maximum, qtype, symmetric
    )
    best = float(alphas[int(np.argmin(errors))])
    return best * stats.minimum, best * stats.maximum


AUTO_PERCENTILES = (99.9, 99.99, 99.999)


def auto(stats: TensorStats, qtype: QuantType, symmetric: bool) -> tuple[Range, str]:
    """The candidate range with the least histogram-measured quantization error, and its name."""
    candidates = {"minmax": minmax(stats)}
    for p in AUTO_PERCENTILES:
        candidates[f"percentile({p})"] = percentile(stats, p)
    candidates["entropy"] = _entropy_for(stats, symmetric)
    candidates["mse"] = mse(stats, qtype, symmetric)
    names = list(candidates)
    lows = np.array([candidates[n][0] for n in names])
    highs = np.array([candidates[n][1] for n in names])
    best = names[int(np.argmin(quantization_errors(stats, lows, highs, qtype, symmetric)))]
    return candidates[best], best


def _entropy_for(stats: TensorStats, symmetric: bool) -> Range:
    one_sided = stats.minimum >= 0 and not symmetric
    return entropy(stats, levels=256 if one_sided else 128)


def _guarded_entropy(stats: TensorStats, qtype: QuantType, symmetric: bool) -> tuple[Range, str]:
    chosen, observed = _entropy_for(stats, symmetric), minmax(stats)
    lows, highs = np.array([chosen[0], observed[0]]), np.array([chosen[1], observed[1]])
    error, error_observed = quantization_errors(stats, lows, highs, qtype, symmetric)
    if error > ENTROPY_GUARD * error_observed:
        return observed, "minmax (entropy clipped too much)"
    return chosen, "entropy"


def compute_range(
    stats: TensorStats,
    method: CalibrationMethod,
    *,
    qtype: QuantType,
    symmetric: bool,
    percentile_value: float = 99.999,
) -> Range:
    """The range of ``stats`` by ``method``; an empty tensor gets ``(0, 0)``."""
    return choose_range(
        stats, method, qtype=qtype, symmetric=symmetric, percentile_value=percentile_value
    )[0]


def choose_range(
    stats: TensorStats,
    method: CalibrationMethod,
    *,
    qtype: QuantType,
    symmetric: bool,
    percentile_value: float = 99.999,
) -> tuple[Range, str]:
    """The range of ``stats`` by ``method`` and the name of the method that produced it."""
    if stats.empty:
        return (0.0, 0.0), "empty"
    if method is CalibrationMethod.MINMAX:
        return minmax(stats), "minmax"
    if method is CalibrationMethod.PERCENTILE:
        return percentile(stats, percentile_value), f"percentile({percentile_value})"
    if method is CalibrationMethod.ENTROPY:
        return _guarded_entropy(stats, qtype, symmetric)
    if method is CalibrationMethod.MSE:
        return mse(stats, qtype, symmetric), "mse"
    return auto(stats, qtype, symmetric)
