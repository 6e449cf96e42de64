"""HardSigmoid/HardSwish as Mul/Add/Clip: same outputs, and only after quantizable ops."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnxruntime as ort

from qconv.analyze import SWITCH_INPUT, switchable_model
from qconv.calibrate import params
from qconv.config import QuantizeConfig
from qconv.decisions import DecisionLog, Reason
from qconv.passes.decompose_hard_activations import DecomposeHardActivationsPass
from qconv.plan import ROLES
from qconv.qparams import sqnr_db
from qconv.quantize import quantize_model
from tests.graphs import apply, make_model, op_types, rng, run
from tests.passes.test_quantize_passes import Batches

SE_BLOCK = """
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] s) {
    c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
    h = HardSwish (c)
    g = HardSigmoid <alpha = 0.2, beta = 0.5> (h)
    y = Mul (h, g)
    s = HardSigmoid (x)
}
"""


def se_model():
    r = rng()
    weights = {"W": r.normal(0, 0.6, (4, 4, 3, 3)), "B": r.normal(0, 0.3, 4)}
    return make_model(SE_BLOCK, {k: v.astype(np.float32) for k, v in weights.items()})


def feed(r=None):
    return {"x": (r or rng()).normal(0, 2, (2, 4, 6, 6)).astype(np.float32)}


def test_activations_after_a_conv_are_written_out_and_compute_the_same():
    model = se_model()
    log = DecisionLog()
    rewritten, modified = apply(DecomposeHardActivationsPass(frozenset(ROLES), (), log), model)
    assert modified
    ops = Counter(op_types(rewritten))
    # h: Mul(alpha), Add, Clip, Mul(x); g: Mul, Add, Clip; the output Mul; s stays (reads x)
    assert ops == {"Conv": 1, "Mul": 4, "Add": 2, "Clip": 2, "HardSigmoid": 1}
    assert [o.name for o in rewritten.graph.output] == ["y", "s"]
    data = feed()
    for before, after in zip(run(model, data), run(rewritten, data), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert sum(r.applied for r in log.rewrites) == 2


def test_activation_after_an_excluded_conv_keeps_its_fused_form():
    model = se_model()
    model.graph.node[0].name = "stem"
    rewritten, _ = apply(DecomposeHardActivationsPass(frozenset(ROLES), ("stem",)), model)
    assert Counter(op_types(rewritten))["HardSwish"] == 1


def test_quantized_block_runs_its_activations_on_integers():
    model = se_model()
    calibration = [feed(np.random.default_rng(seed)) for seed in range(8)]
    result = quantize_model(model, Batches(calibration), QuantizeConfig(float_stem=False))
    reasons = {d.node: d.reason for d in result.decisions}
    written = [name for name in reasons if "_hard" in name]
    assert written and all(reasons[name].quantized for name in written)
    data = feed(np.random.default_rng(99))
    for expected, actual in zip(run(model, data), run(result.model, data), strict=True):
        assert sqnr_db(expected, actual) > 25


def test_switched_off_analysis_model_restores_the_float_activations(monkeypatch):
    # The written-out HardSwish runs as a moved zero point and a Clip on integers; the
    # analysis model must still compute the float activation when its switches are off.
    # This block's wide ranges would need a 5% larger scale, above the default limit.
    monkeypatch.setattr(params, "MAX_SCALE_GROWTH", 1.1)
    model = se_model()
    calibration = [feed(np.random.default_rng(seed)) for seed in range(8)]
    result = quantize_model(model, Batches(calibration), QuantizeConfig(float_stem=False))
    assert result.offsets  # the Add of 0.5 moved a zero point
    switchable, switches, _ = switchable_model(result.prepared, result)
    session = ort.InferenceSession(
        switchable.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    data = feed(np.random.default_rng(5))
    off = session.run(None, {**data, SWITCH_INPUT: np.zeros(len(switches), bool)})
    for expected, actual in zip(run(model, data), off, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_a_shift_that_would_grow_the_scale_too_much_stays_an_integer_add():
    # The HardSwish input spans about [-21, 28]: 3 is 15.68 steps of 0.191, so a whole number
    # of steps needs a scale 4.5% larger (15 steps), more than MAX_SCALE_GROWTH allows.
    model = se_model()
    calibration = [feed(np.random.default_rng(seed)) for seed in range(8)]
    result = quantize_model(model, Batches(calibration), QuantizeConfig(float_stem=False))
    reasons = {d.node: d.reason for d in result.decisions}
    assert reasons["HardSwish_hard_add"] is Reason.QUANTIZED
    assert params.MAX_SCALE_GROWTH < 1.045 and not result.offsets
