"""Take weights that an exporter also listed as graph inputs for the constants they are.

Older exporters (torch's ``keep_initializers_as_inputs=True``, the default before opset 9, and
many model-zoo files) declare every initializer as a graph input too. ONNX then lets a caller
replace each weight at run time, so no weight is a constant: nothing could be quantized, and
BatchNormalization could not be folded.

A graph that lists *every* initializer among its inputs is taken to follow that habit: the
initializers leave the input list, and the note says so. A graph that lists only some of them
is taken at its word (an overridable default, a threshold a caller may set): those stay inputs,
and the nodes reading them stay float.

Guarantees: with the feeds the model was meant for (the non-initializer inputs), it computes the
same outputs; only the main graph's input list changes.
"""

from __future__ import annotations

import onnx_ir as ir

from qconv.decisions import DecisionLog

PASS = "initializer_inputs"


class InitializerInputsPass(ir.passes.InPlacePass):
    """Drop initializers from the graph inputs when all of them are listed there."""

    def __init__(self, decisions: DecisionLog | None = None) -> None:
        super().__init__()
        self.decisions = decisions or DecisionLog()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        initializers = set(graph.initializers.values())
        listed = [value for value in graph.inputs if value in initializers]
        if not listed or len(listed) < len(initializers):
            return ir.passes.PassResult(model, False)
        kept = [value for value in graph.inputs if value not in initializers]
        graph.inputs.clear()
        graph.inputs.extend(kept)
        self.decisions.note(
            f"all {len(listed)} initializers were also graph inputs (an older exporter's habit, "
            "torch's keep_initializers_as_inputs=True): they are taken as the constants they "
            "hold, and the int8 model does not take them as inputs"
        )
        return ir.passes.PassResult(model, True)
