"""How long the per-layer sensitivity analysis takes on large graphs (a benchmark, not a test).

Models: the random-weight 224x224 MobileNetV2 from ``sample_models/build.py --large`` and a
generated chain of 200 quantizable layers (3x3 Conv + Relu, 32 channels, 28x28), both fed
seeded random data; the numbers are about speed only. Prints a table and writes
``bench/analyze.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qconv.analyze import analyze
from qconv.config import QuantizeConfig
from qconv.data import input_specs, open_reader
from qconv.quantize import quantize_model

ROOT = Path(__file__).resolve().parent.parent


def conv_chain(layers: int, channels: int = 32, size: int = 28) -> onnx.ModelProto:
    """``layers`` 3x3 Conv+Relu blocks in a row, seeded random weights."""
    rng = np.random.default_rng(0)
    nodes, initializers, previous = [], [], "input"
    for i in range(layers):
        cin = 3 if i == 0 else channels
        weight = rng.normal(0, (2 / (9 * cin)) ** 0.5, (channels, cin, 3, 3)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(
            helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1] * 4, name=f"conv{i}")
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(previous, onnx.TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def measure(name: str, model: onnx.ModelProto, samples: int, shape: tuple[int, ...]) -> dict:
    specs = input_specs(model)
    shapes = {specs[0].name: shape}
    calib = open_reader("random", specs, batch_size=8, samples=32, shapes=shapes)
    started = time.perf_counter()
    result = quantize_model(model, calib, QuantizeConfig())
    quantize_s = time.perf_counter() - started
    data = open_reader("random", specs, batch_size=8, samples=samples, shapes=shapes)
    sensitivity = analyze(result.prepared, result, data, max_samples=samples)
    return {
        "model": name,
        "layers": len(sensitivity.layers),
        "samples": sensitivity.samples,
        "quantize_s": round(quantize_s, 2),
        "analysis_s": round(sensitivity.seconds, 2),
        "configurations": 2 * len(sensitivity.layers) + 2,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "analyze.json")
    args = parser.parse_args(argv)
    rows = [measure("conv_chain_200", conv_chain(200), args.samples, (1, 3, 28, 28))]
    large = ROOT / "sample_models" / "large" / "mobilenetv2.onnx"
    if large.is_file():
        rows.append(measure("mobilenetv2_224", onnx.load(large), args.samples, (1, 3, 224, 224)))
    else:
        print(f"skipped: {large} is missing (make large-models)")
    print(
        f"{'model':18} {'layers':>6} {'samples':>7} {'configs':>7} {'quantize s':>10} "
        f"{'analysis s':>10}"
    )
    for row in rows:
        print(
            f"{row['model']:18} {row['layers']:6d} {row['samples']:7d} "
            f"{row['configurations']:7d} {row['quantize_s']:10.2f} {row['analysis_s']:10.2f}"
        )
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
