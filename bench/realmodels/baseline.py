"""Float baseline: every real model's metrics on its evaluation set with plain onnxruntime.

Run from the repository root::

    .venv/bin/python -m bench.realmodels.baseline [--n N] [--models rec,det]

Each model is run by an ``onnxruntime.InferenceSession`` with one intra-op thread on its default
evaluation size (or ``--n``); the table gives every metric, the primary one first, the number
of samples, and the seconds spent making the data and scoring it.
"""

from __future__ import annotations

import argparse
import time

from . import MODELS
from .common import RealModel, make_session, session_runner

DEFAULT_N = {"rec": 200, "det": 20, "cls": 200, "orientation": 200, "captcha": 200}


def evaluate(model: RealModel, n: int) -> tuple[dict[str, float], float, float]:
    """Float metrics of one model.

    Args:
        model: The model.
        n: Evaluation samples.

    Returns:
        The metrics, the seconds to make the data and the seconds to score it.
    """
    start = time.perf_counter()
    data = model.eval_set(n)
    made = time.perf_counter()
    run = session_runner(make_session(model.model_path()))
    metrics = model.score(run, data)
    return metrics, made - start, time.perf_counter() - made


def format_metrics(model: RealModel, metrics: dict[str, float]) -> str:
    """Metrics as ``name=value`` pairs, the primary metric first and marked."""
    arrow = "higher is better" if model.higher_is_better else "lower is better"
    first = f"{model.primary_metric}={metrics[model.primary_metric]:.4f} ({arrow})"
    rest = [f"{k}={v:.4f}" for k, v in metrics.items() if k != model.primary_metric]
    return "  ".join([first, *rest])


def main(argv: list[str] | None = None) -> int:
    """Print the float metrics of the chosen models."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="samples per model (default: per-model sizes)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    total = time.perf_counter()
    for name in names:
        model = MODELS[name]
        n = args.n or DEFAULT_N[name]
        metrics, made, scored = evaluate(model, n)
        print(
            f"{name:<12} n={n:<4} data {made:6.2f}s  score {scored:6.2f}s  "
            f"{format_metrics(model, metrics)}",
            flush=True,
        )
    print(f"total {time.perf_counter() - total:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
