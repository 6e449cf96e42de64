"""Streaming statistics and range methods against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qconv.calibrate import ranges
from qconv.calibrate.histogram import TensorStats
from qconv.config import CalibrationMethod, QuantType
from qconv.qparams import compute_qparams, dequantize, quantize

values = hnp.arrays(
    np.float32,
    st.integers(1, 200),
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
)


def stats_of(*batches: np.ndarray, bins: int = 64) -> TensorStats:
    stats = TensorStats(bins)
    for batch in batches:
        stats.update(batch)
    return stats


@settings(max_examples=200)
@given(values, values, values)
def test_merged_shards_equal_one_pass(a, b, c):
    one_pass = stats_of(a, b, c)
    merged = stats_of(a).merge(stats_of(b, c))
    assert merged.exponent == one_pass.exponent
    assert np.array_equal(merged.counts, one_pass.counts)
    assert (merged.minimum, merged.maximum, merged.count) == (
        one_pass.minimum,
        one_pass.maximum,
        one_pass.count,
    )
    for method in CalibrationMethod:
        assert ranges.compute_range(
            merged, method, qtype=QuantType.UINT8, symmetric=False
        ) == ranges.compute_range(one_pass, method, qtype=QuantType.UINT8, symmetric=False)


@settings(max_examples=100)
@given(values, values)
def test_batch_order_does_not_matter(a, b):
    assert np.array_equal(stats_of(a, b).counts, stats_of(b, a).counts)


@given(values)
def test_every_value_is_counted_in_the_bin_that_holds_it(x):
    stats = stats_of(x)
    assert stats.counts.sum() == x.size
    edges = stats.bin_edges()
    brute, _ = np.histogram(x.astype(np.float64), bins=edges)
    # numpy closes the last bin on the right; ours never needs to (range strictly holds max).
    assert np.array_equal(stats.counts, brute)


def test_memory_does_not_grow_with_samples():
    stats = TensorStats(2048)
    rng = np.random.default_rng(0)
    for _ in range(50):
        stats.update(rng.normal(size=10_000))
    assert stats.counts.shape == (4096,)
    assert stats.count == 500_000


def activation_like(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "relu": np.maximum(rng.normal(0.5, 1.0, 200_000), 0),
        "gaussian": rng.normal(0, 1, 200_000),
        "heavy_tailed": rng.standard_t(3, 200_000),
    }


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_matches_numpy_within_a_bin(p):
    for name, x in activation_like(np.random.default_rng(1)).items():
        stats = stats_of(x, bins=2048)
        lo, hi = ranges.percentile(stats, p)
        ref_lo, ref_hi = np.percentile(x, [100 - p, p])
        width = stats.bin_width
        assert abs(hi - ref_hi) <= 2 * width, name
        assert abs(lo - max(ref_lo, x.min())) <= 2 * width, name


def brute_force_kl_bins(hist: np.ndarray, levels: int) -> int:
    """TensorRT's KL search written as plainly as possible: every candidate, explicit loops."""
    best, best_kl = None, np.inf
    for i in range(levels, len(hist) + 1):
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()
        merged = i // levels
        q = np.zeros(i)
        for level in range(levels):
            start = level * merged
            stop = i if level == levels - 1 else start + merged
            chunk = hist[start:stop]
            nonzero = np.count_nonzero(chunk)
            for k in range(start, stop):
                if hist[k] > 0:
                    q[k] = chunk.sum() / nonzero
        p, q = p / p.sum(), q / q.sum()
        kl = sum(
            pk * np.log(pk / (qk if qk > 0 else 1e-10))
            for pk, qk in zip(p, q, strict=True)
            if pk > 0
        )
        if kl < best_kl:
            best, best_kl = i, kl
    return best


@pytest.mark.parametrize("name", ["relu", "gaussian", "heavy_tailed"])
def test_entropy_agrees_with_brute_force_kl_search(name):
    x = activation_like(np.random.default_rng(2))[name][:20_000]
    stats = stats_of(x, bins=256)
    b = stats.bins_per_side
    folded = stats.counts[b:] + stats.counts[:b][::-1]
    folded[0] -= np.count_nonzero(x == 0)  # exact zeros are left out by definition
    folded = folded[: np.flatnonzero(folded)[-1] + 1]
    levels = 64
    expected = brute_force_kl_bins(folded, levels) * stats.bin_width
    lo, hi = ranges.entropy(stats, levels=levels)
    assert hi == pytest.approx(min(expected, x.max()))
    assert lo == pytest.approx(max(-expected, x.min()))


def test_entropy_clips_a_heavy_tail():
    x = np.random.default_rng(2).standard_t(3, 200_000)
    lo, hi = ranges.entropy(stats_of(x, bins=2048))
    assert hi < x.max() / 2 and lo > x.min() / 2


def quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    qp = compute_qparams(lo, hi, QuantType.UINT8, symmetric=False)
    return float(np.mean((dequantize(quantize(x, qp), qp) - x) ** 2))


def test_mse_range_is_near_the_true_mse_optimum_of_its_grid():
    x = np.random.default_rng(3).laplace(0, 1, 100_000).astype(np.float32)
    stats = stats_of(x, bins=2048)
    chosen = ranges.mse(stats, QuantType.UINT8, symmetric=False)
    assert chosen[1] < x.max(), "a Laplace tail is worth clipping at 8 bits"
    assert quant_mse(x, *chosen) < quant_mse(x, x.min(), x.max())
    grid = [quant_mse(x, a * x.min(), a * x.max()) for a in np.linspace(0.01, 1, 100)]
    assert quant_mse(x, *chosen) <= min(grid) * 1.05


def test_minmax_is_exact_and_empty_stats_give_zero_range():
    x = np.array([-3.25, 7.5, 0.0], np.float32)
    assert ranges.minmax(stats_of(x)) == (-3.25, 7.5)
    empty = TensorStats(64)
    assert ranges.compute_range(
        empty, CalibrationMethod.ENTROPY, qtype=QuantType.UINT8, symmetric=False
    ) == (0.0, 0.0)


def test_nonfinite_values_are_counted_apart():
    stats = stats_of(np.array([1.0, np.inf, np.nan, -2.0]))
    assert stats.nonfinite == 2
    assert (stats.minimum, stats.maximum, stats.count) == (-2.0, 1.0, 2)


def test_entropy_ignores_the_spike_of_exact_zeros_after_a_relu():
    """Half the values of a Relu output are exactly 0; that spike must not pick the threshold."""
    x = np.maximum(np.random.default_rng(4).normal(1.0, 1.5, 200_000), 0.0)
    stats = stats_of(x, bins=2048)
    assert stats.zeros == np.count_nonzero(x == 0)
    lo, hi = ranges.entropy(stats, levels=256)
    assert lo == 0.0
    assert hi > np.percentile(x, 99), "the bulk of a Relu output must stay inside the range"


def test_entropy_that_would_clip_separate_clusters_falls_back_to_the_observed_range():
    rng = np.random.default_rng(5)
    clusters = np.concatenate([rng.normal(-1.5, 0.05, 50_000), rng.normal(1.5, 0.05, 50_000)])
    stats = stats_of(clusters, bins=2048)
    kl = ranges.entropy(stats)
    assert kl[1] < 1.4, "this histogram is the case the guard is for"
    chosen, method = ranges.choose_range(
        stats, CalibrationMethod.ENTROPY, qtype=QuantType.UINT8, symmetric=False
    )
    assert method == "minmax (entropy clipped too much)"
    assert chosen == ranges.minmax(stats)
    assert quant_mse(clusters, *chosen) < quant_mse(clusters, *kl) / 10
    heavy_tail = stats_of(rng.standard_t(3, 200_000), bins=2048)
    _, method = ranges.choose_range(
        heavy_tail, CalibrationMethod.ENTROPY, qtype=QuantType.UINT8, symmetric=False
    )
    assert method == "entropy"
