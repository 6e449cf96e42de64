"""Records of what the passes and the quantizer decided, so the report can explain every choice.

Each rewrite a pass makes or refuses becomes a :class:`Rewrite`; the quantization plan records a
:class:`NodeDecision` per node. They are plain data: passes append, renderers read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rewrite:
    """One float-graph rewrite, applied or refused.

    Attributes:
        pass_name: The pass that considered it (``fold_batchnorm``).
        nodes: The nodes involved, by name.
        applied: Whether the graph was changed.
        detail: What was done, or the reason it was refused.
    """

    pass_name: str
    nodes: tuple[str, ...]
    applied: bool
    detail: str


class Reason(enum.Enum):
    """Why a node is or is not quantized: stable codes for the JSON report."""

    QUANTIZED = "quantized"
    SHARES_INPUT_SCALE = "quantized-shares-input-scale"
    ACTIVATION_FOLDED = "activation-folded-into-range"
    SCALE_FOLDED = "constant-factor-folded-into-scale"
    OFFSET_FOLDED = "constant-offset-folded-into-zero-point"
    CLAMPED_ON_INTEGERS = "clamped-on-integers"
    EXCLUDED = "excluded-by-user"
    FASTER_IN_FLOAT = "kept-float-faster"
    NO_INTEGER_KERNEL = "op-without-integer-support"
    NOT_FLOAT = "input-not-float"
    NO_QUANTIZED_NEIGHBOUR = "no-quantized-neighbour"
    WEIGHT_NOT_CONSTANT = "weight-not-constant"
    UNSUPPORTED_ATTRIBUTE = "unsupported-attribute"
    SUBGRAPH = "inside-subgraph"
    NO_CALIBRATION = "no-calibration-statistics"
    RANGES_APART = "input-ranges-too-far-apart"
    LARGER_THAN_FLOAT = "int8-model-larger-than-float"

    @property
    def quantized(self) -> bool:
        return self in (
            Reason.QUANTIZED,
            Reason.SHARES_INPUT_SCALE,
            Reason.ACTIVATION_FOLDED,
            Reason.SCALE_FOLDED,
            Reason.OFFSET_FOLDED,
            Reason.CLAMPED_ON_INTEGERS,
        )


@dataclass(frozen=True)
class NodeDecision:
    """What happened to one node of the prepared float graph.

    Attributes:
        node: Node name.
        op_type: Its operator.
        reason: The decision as a stable code.
        detail: A human sentence with the specifics.
    """

    node: str
    op_type: str
    reason: Reason
    detail: str = ""


@dataclass
class DecisionLog:
    """Collects rewrites and notes while the pipeline runs."""

    rewrites: list[Rewrite] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def applied(self, pass_name: str, nodes: tuple[str, ...], detail: str) -> None:
        self.rewrites.append(Rewrite(pass_name, nodes, True, detail))

    def refused(self, pass_name: str, nodes: tuple[str, ...], reason: str) -> None:
        self.rewrites.append(Rewrite(pass_name, nodes, False, reason))

    def note(self, text: str) -> None:
        self.notes.append(text)
