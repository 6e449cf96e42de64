"""The passes and the one place where their order is written.

Preparation runs on the float graph before calibration: initializers that an older exporter also
listed as graph inputs taken as constants, inlining of the model's local functions,
conversion to opset 13 when per-channel
weights are wanted and the model is older, Identity/Dropout removal, constant folding (so
weights behind Constant/Cast/Transpose chains become initializers), inlining of If nodes whose
condition is constant, folding of per-channel Mul/Div/Add/Sub
constants and of BatchNormalization into the Conv or ConvTranspose before them (in graph order,
so a BN after a bias Add folds too), BatchNormalization folding into Gemm/MatMul, marking of the
first convolutions that run faster in float (a light first layer, then light Conv+HardSwish
layers), HardSigmoid and HardSwish (elsewhere) written out in ops with integer forms, a
topological sort and shape inference (the plan needs dtypes), means over every spatial axis
written as GlobalAveragePool (it needs the ranks), then padding of depthwise
convolutions to channel counts onnxruntime's int8 kernel runs fast (it needs the inferred
shapes). Rewriting runs after calibration: Q/DQ insertion, average pools that would run on
integers turned into depthwise convolutions (onnxruntime's integer pool is slow), then optionally
conversion to QOperator form.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass, TopologicalSortPass

from qconv.config import PerTensor, QuantizeConfig, QuantType
from qconv.decisions import DecisionLog
from qconv.passes.decompose_hard_activations import DecomposeHardActivationsPass
from qconv.passes.float_stem import MarkFloatStemPass
from qconv.passes.fold_affine import FoldAffinePass
from qconv.passes.fold_batchnorm import FoldBatchNormPass
from qconv.passes.fold_constants import FoldConstantsPass
from qconv.passes.initializer_inputs import InitializerInputsPass
from qconv.passes.inline_constant_if import InlineConstantIfPass
from qconv.passes.inline_functions import InlineFunctionsPass
from qconv.passes.mean_as_pool import MeanAsPoolPass
from qconv.passes.pad_channels import PadChannelsPass
from qconv.passes.remove_identity import RemoveIdentityPass
from qconv.passes.upgrade_opset import UpgradeOpsetPass

log = logging.getLogger(__name__)


def prepare(
    model: ir.Model, config: QuantizeConfig, decisions: DecisionLog, upgrade_opset: bool = True
) -> ir.Model:
    """Run the float-graph preparation passes and return the prepared model.

    ``upgrade_opset=False`` keeps a model below opset 13 at its opset (weights per tensor).
    """
    # first: the opset conversion does not reach into function bodies
    passes: list[ir.passes.PassBase] = [
        InitializerInputsPass(decisions),
        InlineFunctionsPass(decisions),
    ]
    if upgrade_opset and not isinstance(config.weight_granularity, PerTensor):
        passes.append(UpgradeOpsetPass(decisions))
    passes += [
        RemoveIdentityPass(decisions),
        FoldConstantsPass(decisions),
        InlineConstantIfPass(decisions),
    ]
    if config.fuse:
        passes.append(FoldAffinePass(decisions))  # first: a BN may follow a folded bias Add
        passes.append(FoldBatchNormPass(decisions))
        if config.float_stem:
            passes.append(MarkFloatStemPass(config.exclude, decisions))
        passes.append(DecomposeHardActivationsPass(_quantizable_ops(), config.exclude, decisions))
    passes.append(TopologicalSortPass())
    ir.passes.Sequential(*passes)(model)
    _infer_shapes(model, decisions)
    if config.fuse:  # it needs the inferred ranks
        MeanAsPoolPass(decisions)(model)
    if config.fuse and config.weight_type is QuantType.INT8:
        # onnxruntime's fast depthwise kernel is the one for symmetric int8 weights.
        PadChannelsPass(config.exclude, decisions)(model)
    return model


def _quantizable_ops() -> frozenset[str]:
    from qconv.plan import ROLES  # the plan imports the passes' helpers: import it late

    return frozenset(ROLES)


def _infer_shapes(model: ir.Model, decisions: DecisionLog) -> None:
    try:
        ShapeInferencePass()(model)
    except Exception as exc:  # custom ops can make ONNX shape inference fail; dtypes stay unknown
        log.warning("shape inference failed: %s", exc)
        decisions.note(f"ONNX shape inference failed ({exc}); tensor types were taken as given")
