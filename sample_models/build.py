"""Build the sample float ONNX models that qconv's tests, demos and benchmarks quantize.

This is the only code in the project that imports torch. It runs in its own virtualenv
(``.venv-build``, see ``sample_models/README.md``); everything it writes is plain ONNX and NumPy,
so the tests never need torch.

Default mode trains three small classifiers on scikit-learn's bundled digits data set
(1,797 real 8x8 handwritten digits, no network needed) and writes, for each model ``<name>``:

* ``<name>.onnx``       the float model, opset 17, input ``input`` [N,1,H,W] float32 in [0, 1],
                        output ``logits`` [N,10];
* ``<name>_calib.npz``  ``input``: 200 images from the training split, for calibration;
* ``<name>_eval.npz``   ``input`` and ``label``: the whole held-out test split;
* ``<name>.json``       a model card; its ``float_accuracy`` is measured with onnxruntime.

The models are ``digits_cnn`` (plain Conv-BN-ReLU stack on 8x8), ``digits_mobilenet``
(MobileNetV2-style inverted residuals with depthwise convs and ReLU6 on 32x32) and
``digits_resnet`` (basic residual blocks with a strided projection shortcut on 16x16).

``--large`` instead writes seeded random-weight ResNet-18 and MobileNetV2 at [N,3,224,224]
to ``large/`` for latency benchmarks only.

Why BatchNormalization is kept: real-world float ONNX models often still carry BN nodes, and
folding BN into the preceding Conv is one of the graph rewrites a quantizer must get right.
The models are therefore exported with the legacy TorchScript exporter in PRESERVE training
mode without constant folding, which keeps every BN as its own inference-form
``BatchNormalization`` node, and the trained running statistics make the fold non-trivial.
After export the graph is only normalised (deduplicated weights and ``Constant`` nodes become
initializers) and shape-inferred; it is never optimised.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
OPSET = 17
NUM_CLASSES = 10
CALIB_SAMPLES = 200
LARGE_CALIB_SAMPLES = 32
LARGE_SIZE = 224
BATCH_SIZE = 64
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "N"
SCRIPT = "sample_models/build.py"
BUILD_COMMAND = ".venv-build/bin/python sample_models/build.py"
# Fixed zip member timestamp so that rebuilding gives byte-identical .npz files.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# Building blocks shared by the small and the large models
# --------------------------------------------------------------------------------------------


def conv_bn(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm + optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, optional residual."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2: stem, inverted residual stages given as (t, c, n, s), last 1x1 conv, head."""

    def __init__(
        self,
        in_channels: int,
        stem_channels: int,
        settings: Sequence[tuple[int, int, int, int]],
        last_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_channels, stem_channels, 3, 2, act=nn.ReLU6)]
        cin = stem_channels
        for expand_ratio, cout, repeats, stride in settings:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand_ratio))
                cin = cout
        layers.append(conv_bn(cin, last_channels, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1x1 conv + BN projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks: stem, stages given as (channels, blocks, stride), head."""

    def __init__(
        self,
        stem: nn.Module,
        stem_channels: int,
        stages: Sequence[tuple[int, int, int]],
        num_classes: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [stem]
        cin = stem_channels
        for cout, blocks, stride in stages:
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


# --------------------------------------------------------------------------------------------
# The three small digits models
# --------------------------------------------------------------------------------------------


def digits_cnn() -> nn.Module:
    """Plain Conv-BN-ReLU stack on 8x8: 8x8x16, 8x8x32, pool to 4x4, 4x4x32, MLP head."""
    return nn.Sequential(
        conv_bn(1, 16, 3),
        conv_bn(16, 32, 3),
        nn.MaxPool2d(2),
        conv_bn(32, 32, 3),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def digits_mobilenet() -> nn.Module:
    """MobileNetV2 on 32x32: 32-channel stem to 16x16, six expand-6 blocks (two residual).

    Wide enough (about 166k parameters) that the weights dominate the file, as in a real
    MobileNet: blocks 24 (stride 2, to 8x8), 32, 32, 48 (stride 2, to 4x4), 64, 64, then a
    1x1 conv to 256 channels.
    """
    settings = [(6, 24, 1, 2), (6, 32, 2, 1), (6, 48, 1, 2), (6, 64, 2, 1)]
    return MobileNetV2(1, 32, settings, last_channels=256, num_classes=NUM_CLASSES)


def digits_resnet() -> nn.Module:
    """Small ResNet on 16x16: identity block at 16x16, projection blocks down to 8x8 and 4x4."""
    stages = [(16, 1, 1), (32, 1, 2), (64, 1, 2)]
    return ResNet(conv_bn(1, 16, 3), 16, stages, NUM_CLASSES)


@dataclass(frozen=True)
class DigitsSpec:
    """How one digits model is built, fed and trained."""

    name: str
    description: str
    size: int
    factory: Callable[[], nn.Module]
    epochs: int
    lr: float
    expect_clip: bool = False


DIGITS_SPECS = (
    DigitsSpec(
        name="digits_cnn",
        description=(
            "Plain CNN on the 8x8 digits: three Conv3x3-BatchNorm-ReLU blocks with a 2x2 "
            "MaxPool, Flatten, Gemm-ReLU-Gemm head. Input: digits.images / 16."
        ),
        size=8,
        factory=digits_cnn,
        epochs=30,
        lr=3e-3,
    ),
    DigitsSpec(
        name="digits_mobilenet",
        description=(
            "MobileNetV2-style net on the digits bilinearly upsampled to 32x32 (done before "
            "the model): stride-2 Conv-BN-ReLU6 stem to 32 channels at 16x16, six "
            "inverted-residual blocks with expand ratio 6 (1x1 expand, 3x3 depthwise, 1x1 "
            "linear projection, each with BatchNorm; ReLU6 exported as Clip) of widths 24, 32, "
            "32, 48, 64, 64 (stride 2 at 24 and 48, so 8x8 then 4x4; two residual Adds), 1x1 "
            "Conv-BN-ReLU6 to 256 channels, GlobalAveragePool, Flatten, Gemm; about 166k "
            "parameters, so the weights dominate the file. "
            "Input: digits.images / 16 upsampled (align_corners=False), so still in [0, 1]."
        ),
        size=32,
        factory=digits_mobilenet,
        epochs=30,
        lr=3e-3,
        expect_clip=True,
    ),
    DigitsSpec(
        name="digits_resnet",
        description=(
            "Small ResNet on the digits bilinearly upsampled to 16x16 (done before the model): "
            "Conv-BN-ReLU stem and three basic residual blocks (Conv3x3-BN-ReLU-Conv3x3-BN + "
            "shortcut Add + ReLU) at 16x16, 8x8 and 4x4, the two strided ones with 1x1 "
            "stride-2 Conv-BN projection shortcuts, GlobalAveragePool, Flatten, Gemm. "
            "Input: digits.images / 16 upsampled (align_corners=False), so still in [0, 1]."
        ),
        size=16,
        factory=digits_resnet,
        epochs=30,
        lr=3e-3,
    ),
)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSplit:
    """Stratified 70/30 split of sklearn's digits; images are float32 [n,8,8] in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_split() -> DigitsSplit:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.3, random_state=0, stratify=labels
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)


def to_model_input(images: np.ndarray, size: int) -> torch.Tensor:
    """[n,8,8] images -> [n,1,size,size] float32, bilinearly upsampled when size != 8."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()


def random_shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each 8x8 image by -1, 0 or +1 pixel on each axis, filling with zeros."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    dy = rng.integers(0, 3, size=n)
    dx = rng.integers(0, 3, size=n)
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def calib_indices(n_train: int) -> np.ndarray:
    """A fixed, sorted subset of the training split, the same images for every model."""
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(n_train, size=CALIB_SAMPLES, replace=False))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def configure_determinism() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def train(model: nn.Module, spec: DigitsSpec, split: DigitsSplit, rng: np.random.Generator) -> None:
    """Adam with a cosine learning-rate schedule and random-shift augmentation."""
    labels = torch.from_numpy(split.y_train)
    n = len(labels)
    steps_per_epoch = (n + BATCH_SIZE - 1) // BATCH_SIZE
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.epochs * steps_per_epoch)
    model.train()
    for _ in range(spec.epochs):
        inputs = to_model_input(random_shift(split.x_train, rng), spec.size)
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def assert_bn_stats_trained(model: nn.Module) -> None:
    """The running statistics must differ from their (0, 1) defaults so folding BN matters."""
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            mean, var = module.running_mean, module.running_var
            mean_trivial = torch.allclose(mean, torch.zeros_like(mean))
            var_trivial = torch.allclose(var, torch.ones_like(var))
            assert not (mean_trivial or var_trivial), f"BN {name} has default running stats"


@torch.no_grad()
def torch_logits(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(inputs).numpy()


# --------------------------------------------------------------------------------------------
# ONNX export, normalisation and checks
# --------------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """Export with BN kept as BatchNormalization nodes, then normalise and check the graph."""
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            # The legacy exporter warns that it is deprecated; it is chosen on purpose, since
            # it is the exporter that keeps BatchNormalization unfused (see module docstring).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                training=torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=False,
                export_params=True,
                keep_initializers_as_inputs=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            )
        proto = onnx.load(str(path))
    inline_initializer_identities(proto.graph)
    constants_to_initializers(proto.graph)
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def inline_initializer_identities(graph: onnx.GraphProto) -> None:
    """Undo the exporter's weight deduplication: `y = Identity(w)` becomes initializer `y`.

    The legacy exporter shares byte-identical parameters (e.g. a BN scale that equals a BN
    variance) through Identity nodes; each BN should own its own initializers instead.
    """
    inits = {init.name: init for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        source = node.input[0] if node.input else ""
        if node.op_type == "Identity" and source in inits and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[source])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn tensor-valued Constant nodes (e.g. Clip's min and max) into initializers."""
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = {attr.name: attr for attr in node.attribute}
        if node.op_type == "Constant" and set(attrs) == {"value"}:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def check_graph(
    proto: onnx.ModelProto, input_shape: Sequence[int | str], expect_clip: bool
) -> None:
    """Assert the properties the qconv tests rely on."""
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == OPSET, f"opset is {opsets}"
    assert [v.name for v in graph.input] == [INPUT_NAME], "unexpected graph inputs"
    assert [v.name for v in graph.output] == [OUTPUT_NAME], "unexpected graph outputs"
    assert dims(graph.input[0]) == list(input_shape), dims(graph.input[0])
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(graph.output[0])[0] == BATCH_DIM
    histogram = op_histogram(proto)
    assert histogram.get("BatchNormalization", 0) > 0, "BatchNormalization was folded away"
    assert "Constant" not in histogram and "Identity" not in histogram, histogram
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            check_batchnorm(node, inits)
        if node.op_type == "Clip":
            check_relu6(node, inits)
    assert ("Clip" in histogram) == expect_clip, histogram


def check_batchnorm(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> None:
    training = [a.i for a in node.attribute if a.name == "training_mode"]
    assert len(node.output) == 1 and training in ([], [0]), f"{node.name} is not inference BN"
    assert all(name in inits for name in node.input[1:]), f"{node.name} params not initializers"


def check_relu6(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> None:
    bounds = [float(inits[name]) for name in node.input[1:]]
    assert bounds == [0.0, 6.0], f"{node.name} is not ReLU6: {bounds}"


def ort_logits(proto: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    return np.asarray(logits)


# --------------------------------------------------------------------------------------------
# Writing outputs
# --------------------------------------------------------------------------------------------


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Same layout as np.savez_compressed, but with fixed timestamps so rebuilds are identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            assert array.dtype != object, f"{key} would need pickle"
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def save_json(path: Path, payload: dict[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def model_card(
    spec: DigitsSpec, proto: onnx.ModelProto, accuracy: float, split: DigitsSplit
) -> dict[str, object]:
    return {
        "name": spec.name,
        "description": spec.description,
        "input": {
            "name": INPUT_NAME,
            "shape": [BATCH_DIM, 1, spec.size, spec.size],
            "dtype": "float32",
            "range": [0.0, 1.0],
        },
        "output": {"name": OUTPUT_NAME, "shape": [BATCH_DIM, NUM_CLASSES]},
        "float_accuracy": round(accuracy, 6),
        "eval_samples": len(split.y_test),
        "calib_samples": CALIB_SAMPLES,
        "opset": OPSET,
        "op_histogram": op_histogram(proto),
        "build": {
            "script": SCRIPT,
            "torch": torch.__version__,
            "seed": SEED,
            "epochs": spec.epochs,
            "command": BUILD_COMMAND,
        },
    }


# --------------------------------------------------------------------------------------------
# Default mode: the three trained digits models
# --------------------------------------------------------------------------------------------


def build_digits_model(spec: DigitsSpec, split: DigitsSplit, out_dir: Path) -> dict[str, object]:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = spec.factory()
    started = time.perf_counter()
    train(model, spec, split, rng)
    assert_bn_stats_trained(model)
    train_seconds = time.perf_counter() - started

    test_inputs = to_model_input(split.x_test, spec.size)
    calib = to_model_input(split.x_train[calib_indices(len(split.y_train))], spec.size)
    proto = export_onnx(model, test_inputs[:1])
    check_graph(proto, [BATCH_DIM, 1, spec.size, spec.size], spec.expect_clip)

    eval_x = test_inputs.numpy()
    logits = ort_logits(proto, eval_x)
    reference = torch_logits(model, test_inputs)
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
    accuracy = float(np.mean(logits.argmax(axis=1) == split.y_test))
    assert accuracy >= 0.95, f"{spec.name}: held-out accuracy {accuracy:.4f} < 0.95"

    onnx.save(proto, str(out_dir / f"{spec.name}.onnx"))
    save_npz(out_dir / f"{spec.name}_calib.npz", {"input": calib.numpy()})
    save_npz(out_dir / f"{spec.name}_eval.npz", {"input": eval_x, "label": split.y_test})
    card = model_card(spec, proto, accuracy, split)
    save_json(out_dir / f"{spec.name}.json", card)
    print(f"{spec.name}: accuracy {accuracy:.4f} (onnxruntime), trained in {train_seconds:.1f}s")
    return card


def build_digits(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    split = load_split()
    for spec in DIGITS_SPECS:
        build_digits_model(spec, split, out_dir)


# --------------------------------------------------------------------------------------------
# --large: random-weight ResNet-18 and MobileNetV2 for latency benchmarks
# --------------------------------------------------------------------------------------------


def resnet18() -> nn.Module:
    stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    stages = [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]
    return ResNet(stem, 64, stages, num_classes=1000)


def mobilenetv2() -> nn.Module:
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    return MobileNetV2(3, 32, settings, last_channels=1280, num_classes=1000)


@torch.no_grad()
def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Seeded random weights (He init) and plausible, non-default BN parameters and stats."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.01, generator=generator)
            module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.weight.uniform_(0.5, 1.0, generator=generator)
            module.bias.normal_(0.0, 0.1, generator=generator)
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)


def build_large_model(name: str, factory: Callable[[], nn.Module], out_dir: Path) -> None:
    generator = torch.Generator().manual_seed(SEED)
    model = factory()
    randomize(model, generator)
    model.eval()
    calib = torch.randn(LARGE_CALIB_SAMPLES, 3, LARGE_SIZE, LARGE_SIZE, generator=generator)
    proto = export_onnx(model, calib[:1])
    check_graph(proto, [BATCH_DIM, 3, LARGE_SIZE, LARGE_SIZE], expect_clip=name == "mobilenetv2")

    logits = ort_logits(proto, calib[:4].numpy())
    reference = torch_logits(model, calib[:4])
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(logits, reference, rtol=1e-3, atol=1e-3 * scale)
    std = float(logits.std())
    assert np.isfinite(logits).all() and 1e-3 < std < 1e3, f"{name}: degenerate output std {std}"

    onnx.save(proto, str(out_dir / f"{name}.onnx"))
    save_npz(out_dir / f"{name}_calib.npz", {"input": calib.numpy()})
    print(f"{name}: output std {std:.4f}, ops {op_histogram(proto)}")


def build_large(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    build_large_model("resnet18", resnet18, out_dir)
    build_large_model("mobilenetv2", mobilenetv2, out_dir)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--large",
        action="store_true",
        help="build random-weight ResNet-18 and MobileNetV2 (224x224) into OUT/large instead",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: the folder of this script)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_determinism()
    started = time.perf_counter()
    out_dir: Path = args.out.resolve()
    if args.large:
        build_large(out_dir / "large")
    else:
        build_digits(out_dir)
    print(f"done in {time.perf_counter() - started:.1f}s -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
