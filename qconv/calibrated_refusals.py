"""Nodes the calibration shows should stay float, decided once the statistics are in.

* **Never reached.** A tensor the calibration data never produced (an If branch that no sample
  takes, as in Silero VAD's 8 kHz branch) has no range; quantizing it with a made-up one turns
  the branch into a constant. Every quantized node reading or writing such a tensor stays float.
* **A Concat of unlike ranges.** A quantized Concat gives its output one scale; when its inputs'
  ranges differ more than ``CONCAT_RANGE_RATIO``-fold the narrowest keeps a few steps of 255.
  YOLOv8 exports end in a Concat of box coordinates (0-326 px) and class scores (0-0.85): one
  scale of 1.26 turned every score into 0 or 1.26 while the whole output's cosine stayed 0.9996.
  Such a Concat stays float, unless a Conv/Gemm/MatMul reads its output (that quantizes the
  joined tensor with one scale anyway).

The refusals go into ``node.meta[REFUSED_AFTER_CALIBRATION]``, which the plan reads, and the
quantizer plans again; tensors already calibrated cover the new plan, which only shrinks.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.calibrate.histogram import TensorStats
from qconv.decisions import Reason
from qconv.plan import REFUSED_AFTER_CALIBRATION, QuantizationPlan, Role, op_role

# Beyond this the narrowest input keeps under ~25 of 255 steps: about 20 dB of its SQNR lost.
CONCAT_RANGE_RATIO = 10.0
UNREACHED = (
    "the calibration data never reached it (an If branch no sample takes?), so its tensors "
    "have no range to quantize with"
)


def refuse_after_calibration(plan: QuantizationPlan, stats: dict[str, TensorStats]) -> bool:
    """Mark the quantized nodes of ``plan`` that ``stats`` show should stay float; True if any."""
    marked = False
    for node in plan.int8_nodes:
        refusal = _refusal(node, stats)
        if refusal is not None and REFUSED_AFTER_CALIBRATION not in node.meta:
            node.meta[REFUSED_AFTER_CALIBRATION] = refusal
            marked = True
    return marked


def _refusal(node: ir.Node, stats: dict[str, TensorStats]) -> tuple[Reason, str] | None:
    values = [v for v in (*node.inputs, *node.outputs) if v is not None and v.name in stats]
    if any(stats[v.name].empty for v in values):
        return Reason.NO_CALIBRATION, UNREACHED
    if node.op_type == "Concat" and not _read_by_weighted_op(node):
        return _concat_refusal(node, stats)
    return None


def _read_by_weighted_op(node: ir.Node) -> bool:
    """Whether a Conv/Gemm/MatMul reads the output: it quantizes that tensor with one scale
    anyway, so keeping the Concat float would only cost time."""
    return any(op_role(reader) is Role.WEIGHTED for reader in node.outputs[0].consumers())


def _concat_refusal(node: ir.Node, stats: dict[str, TensorStats]) -> tuple[Reason, str] | None:
    spans = {
        v.name: (min(stats[v.name].minimum, 0.0), max(stats[v.name].maximum, 0.0))
        for v in node.inputs
        if v is not None and v.name in stats
    }
    widths = {name: hi - lo for name, (lo, hi) in spans.items()}
    if len(widths) < 2 or min(widths.values()) <= 0:
        return None
    wide, narrow = max(widths, key=widths.get), min(widths, key=widths.get)
    ratio = widths[wide] / widths[narrow]
    if ratio <= CONCAT_RANGE_RATIO:
        return None
    return Reason.RANGES_APART, (
        f"joins tensors whose ranges differ {ratio:.0f}-fold ({narrow!r} "
        f"[{spans[narrow][0]:.3g}, {spans[narrow][1]:.3g}], {wide!r} "
        f"[{spans[wide][0]:.3g}, {spans[wide][1]:.3g}]): one output scale would leave the "
        f"narrower {255 / ratio:.0f} of 255 steps"
    )
