"""Tiny graphs written in ONNX text, and the helpers every pass test uses to run them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import numpy_helper


def make_model(text: str, initializers: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse ONNX text and attach ``initializers``; the result passes the checker."""
    model = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` under onnxruntime with graph optimizations off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, feeds)


def apply(pass_: ir.passes.PassBase, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """Run one pass; return the checked result and whether it changed the model."""
    result = pass_(ir.from_proto(model))
    proto = ir.to_proto(result.model)
    onnx.checker.check_model(proto, full_check=True)
    return proto, result.modified


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def rng() -> np.random.Generator:
    return np.random.default_rng(0)
