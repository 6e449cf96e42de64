"""Properties of the quantization numerics, checked with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qconv.config import QuantType
from qconv.qparams import (
    compute_qparams,
    dequantize,
    quantize,
    quantize_bias,
    sqnr_db,
    weight_qparams,
)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
qtypes = st.sampled_from(list(QuantType))


@st.composite
def ranges(draw: st.DrawFn) -> tuple[float, float]:
    a, b = draw(finite), draw(finite)
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 1e-3:
        hi = lo + 1e-3
    return float(np.float32(lo)), float(np.nextafter(np.float32(hi), np.float32(np.inf)))


@given(ranges(), qtypes, st.booleans(), st.data())
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(rng, qtype, symmetric, data):
    lo, hi = rng
    qp = compute_qparams(lo, hi, qtype, symmetric)
    x = np.asarray(
        data.draw(st.lists(st.floats(lo, hi, width=32), min_size=1, max_size=50)), np.float32
    )
    err = np.abs(dequantize(quantize(x, qp), qp) - x)
    # float32 arithmetic adds a relative error of a few ulps on top of the half step.
    tolerance = float(qp.scale) / 2 * (1 + 1e-5) + 1e-6 * float(np.abs(x).max())
    assert float(err.max()) <= tolerance


@given(ranges(), qtypes, st.booleans())
def test_zero_is_exactly_representable(rng, qtype, symmetric):
    qp = compute_qparams(*rng, qtype, symmetric)
    zero = np.zeros(3, np.float32)
    assert np.array_equal(dequantize(quantize(zero, qp), qp), zero)


@given(ranges(), st.booleans())
def test_symmetric_int8_has_zero_point_zero(rng, _):
    qp = compute_qparams(*rng, QuantType.INT8, symmetric=True)
    assert int(qp.zero_point) == 0


@given(ranges(), qtypes, st.booleans(), hnp.arrays(np.float32, 20, elements=finite))
def test_quantized_values_stay_inside_the_type(rng, qtype, symmetric, x):
    qp = compute_qparams(*rng, qtype, symmetric)
    q = quantize(x, qp)
    assert q.dtype == (np.int8 if qtype is QuantType.INT8 else np.uint8)
    assert int(q.min()) >= qtype.qmin
    assert int(q.max()) <= qtype.qmax


@settings(max_examples=50)
@given(hnp.arrays(np.float32, (4, 3, 2, 2), elements=st.floats(-5, 5, width=32)))
def test_per_channel_weights_round_trip_within_each_channel_step(w):
    qp = weight_qparams(w, QuantType.INT8, axis=0)
    assert qp.scale.shape == (4,)
    assert np.all(qp.zero_point == 0)
    err = np.abs(dequantize(quantize(w, qp), qp) - w).reshape(4, -1).max(axis=1)
    assert np.all(err <= qp.scale / 2 * (1 + 1e-5) + 1e-6)


def test_worked_example_from_the_module_docstring():
    qp = compute_qparams(-1.0, 3.0, QuantType.UINT8, symmetric=False)
    assert int(qp.zero_point) == 64
    assert int(quantize(np.float32([1.0]), qp)[0]) == 128


def test_bias_scale_is_input_times_weight_scale():
    qb = quantize_bias(np.float32([0.5, -0.25]), np.float32(0.02), np.float32([0.01, 0.05]))
    np.testing.assert_allclose(qb.scale, [0.0002, 0.001], rtol=1e-6)
    assert qb.values.tolist() == [2500, -250]
    assert qb.saturated == 0


def test_bias_that_overflows_int32_is_clamped_and_counted():
    qb = quantize_bias(np.float32([1e6]), np.float32(1e-6), np.float32([1e-6]))
    assert qb.values[0] == np.iinfo(np.int32).max
    assert qb.saturated == 1


@pytest.mark.parametrize(("noise", "expected"), [(0.1, 20.0), (0.01, 40.0)])
def test_sqnr_of_known_noise(noise, expected):
    ref = np.ones(1000)
    assert sqnr_db(ref, ref + noise) == pytest.approx(expected)
