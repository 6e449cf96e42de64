"""Command line: parse flags into configs, call the library, render. No graph code here.

Exit codes: 0 success; 1 internal error (traceback with --debug); 2 bad usage or bad input.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from qconv.config_file import ConfigKey

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (traceback with --debug); "
    "2 bad usage or bad input (one line naming the file, flag or tensor); "
    "3 a quality gate failed (model and report are still written); 130 interrupted; "
    "141 stdout closed early (outputs written); 143 terminated (SIGTERM, as from a CI "
    "timeout)."
)
GATE_FAILED = 3
TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no ``except
    Exception`` on the way swallows it and staged outputs are removed as the stack unwinds."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _handle_errors(command: Callable) -> Callable:
    """Turn QconvError into one line and its exit code; other exceptions into exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from qconv.console import Console, exit_closed_pipe
        from qconv.errors import QconvError, first_line

        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        console = Console()
        try:
            with _sigterm_unwinds():
                result = command(*args, **kwargs)
                sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return result
        except QconvError as exc:
            console.error(exc.one_line())
            if debug:
                traceback.print_exc()
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.error("interrupted; no model or report was written")
            sys.exit(130)
        except Terminated:
            console.error("terminated; no model or report was written")
            sys.exit(TERMINATED)
        except BrokenPipeError:  # stdout closed early (| head): the files are written
            exit_closed_pipe()
        except Exception as exc:  # a bug: say so, with a traceback on request
            console.error(f"internal error: {type(exc).__name__}: {first_line(exc, 500)}")
            if debug:
                traceback.print_exc()
            else:
                console.err.print("run again as `qconv --debug ...` for a traceback")
            sys.exit(1)

    return wrapper


class _OneLineUsageErrors(click.Group):
    """Usage errors print one line, like every other qconv error, not click's three."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        kwargs.setdefault("prog_name", "qconv")
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `qconv` alone: the help, no "error"
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            where = f" (see `{context.command_path} --help`)" if context else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: interrupted; no model or report was written", err=True)
            sys.exit(130)
        if isinstance(result, int):  # ctx.exit(code), --help, --version
            sys.exit(result)
        return result


@click.group(cls=_OneLineUsageErrors, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="qconv")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """Convert float ONNX models into fast, accurate, verified INT8 models."""


def _load_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """Eager callback: the TOML file becomes the defaults, so explicit flags override it."""
    if value is None:
        return
    from qconv.config_file import read_config
    from qconv.console import Console
    from qconv.errors import ConfigError

    try:
        settings = read_config(value, _config_keys(ctx.command))
    except ConfigError as exc:
        Console().error(exc.one_line())
        ctx.exit(exc.exit_code)
    ctx.default_map = {**(ctx.default_map or {}), **settings}


# Parameters holding files or folders: relative paths in a config file are relative to it.
PATH_PARAMS = ("model", "output", "calib", "eval_data", "calib_cache", "reports", "exclude_from")


def _config_keys(command: click.Command) -> dict[str, ConfigKey]:
    """Every long flag of ``command`` (and its argument) as the TOML key that sets it."""
    from qconv.config_file import ConfigKey

    keys = {}
    for param in command.params:
        if param.name in ("config", "help"):
            continue
        path = param.name in PATH_PARAMS
        if isinstance(param, click.Argument):
            keys[param.name] = ConfigKey(param.name, path=path)
            continue
        kind = _config_kind(param)
        choices = tuple(param.type.choices) if isinstance(param.type, click.Choice) else ()
        spec = ConfigKey(param.name, kind, choices, param.multiple, path=path)
        for flag in param.opts:
            if flag.startswith("--"):
                keys[flag[2:]] = spec
        for flag in param.secondary_opts:  # --per-tensor of --per-channel/--per-tensor
            keys[flag.lstrip("-")] = ConfigKey(param.name, "bool", negated=True)
    return keys


def _config_kind(param: click.Parameter) -> str:
    if getattr(param, "is_flag", False) or isinstance(param.type, click.types.BoolParamType):
        return "bool"
    if isinstance(param.type, click.types.IntParamType):
        return "int"
    if isinstance(param.type, click.types.FloatParamType):
        return "float"
    return "text"


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file with the same keys as these flags; flags given here override it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the int8 model.",
)
@click.option(
    "--calib",
    required=True,
    help="Calibration data: .npz, folder of .npy/.npz, ONNX test-data folder, image folder, "
    "or random[:uniform] (latency smoke runs only).",
)
@click.option(
    "--eval",
    "eval_data",
    help="Held-out data for fidelity/accuracy (default: 64 calibration samples); an image "
    "folder with class sub-folders gives labels.",
)
@click.option(
    "--preprocess",
    help='Image preprocessing, e.g. "resize=256,crop=224,mean=0.485,0.456,0.406,'
    'std=0.229,0.224,0.225,layout=NCHW,scale=1/255,bgr=false".',
)
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    metavar="NAME=D1,D2,...",
    help="Concrete sizes for an input's symbolic dimensions (repeatable).",
)
@click.option("--labels", help="Name of the integer label array in the --eval data.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["qdq", "qoperator"]),
    default="qdq",
    show_default=True,
    help="Q/DQ pairs or QLinear*/integer operators.",
)
@click.option(
    "--per-channel/--per-tensor",
    default=True,
    show_default=True,
    help="Weight scales per output channel or per tensor.",
)
@click.option(
    "--activation-type", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True
)
@click.option(
    "--weight-type", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True
)
@click.option(
    "--symmetric-activations",
    is_flag=True,
    help="Zero point fixed at the middle of the range (Relu is then kept).",
)
@click.option(
    "--calibration",
    type=click.Choice(["minmax", "percentile", "entropy", "mse", "auto"]),
    default="mse",
    show_default=True,
    help="How activation ranges are chosen.",
)
@click.option(
    "--percentile",
    type=float,
    default=99.999,
    show_default=True,
    help="Percentile for --calibration percentile.",
)
@click.option(
    "--calib-cache",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Reuse calibration statistics from FILE (written there when missing or stale).",
)
@click.option(
    "--max-memory",
    help="Memory budget for the exposed tensors, e.g. 2GB (default 512MB): calibrate in several "
    "passes rather than exceed it.",
)
@click.option("--samples", type=int, help="Use at most N calibration samples (seeded subset).")
@click.option(
    "--batch-size",
    type=int,
    default=1,
    show_default=True,
    help="Samples per calibration/evaluation batch.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="NODE_OR_OPTYPE",
    help="Keep these nodes or op types float (repeat, or separate with commas).",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    help="Gate: fail (exit 3) if label accuracy drops by more than X (absolute, e.g. 0.01).",
)
@click.option("--min-agreement", type=float, help="Gate: top-1 agreement at least X (0..1).")
@click.option("--min-sqnr", type=float, help="Gate: every float output's SQNR at least DB.")
@click.option("--min-speedup", type=float, help="Gate: int8 at least X times faster than float.")
@click.option(
    "--strict",
    is_flag=True,
    help="Gate: fail (exit 3) when nothing was quantized (or int8 would not be smaller).",
)
@click.option(
    "--exclude-from",
    "exclude_from",
    multiple=True,
    metavar="REPORT.json[:worst=N]",
    help="Keep float the layers a report's sensitivity analysis names: the N worst, or "
    "without :worst every layer whose float version gains at least 1 dB of output SQNR.",
)
@click.option("--analyze", is_flag=True, help="Add a per-layer sensitivity analysis to the report.")
@click.option(
    "--report",
    "reports",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Write the report to FILE.json, FILE.md or FILE.html (repeatable).",
)
@click.option("--threads", type=int, help="onnxruntime threads (latency defaults to 1).")
@click.option(
    "--latency-runs",
    type=int,
    default=50,
    show_default=True,
    help="Timed runs per model for latency; 0 skips timing.",
)
@click.option(
    "--no-fuse",
    is_flag=True,
    help="Skip the float-graph rewrites (BatchNormalization folding, channel padding, float "
    "stem, ...).",
)
@click.option(
    "--no-float-stem",
    is_flag=True,
    help="Quantize the first convolutions too where onnxruntime's CPU runs them faster in float.",
)
@click.option(
    "--no-runtime-tuning",
    is_flag=True,
    help="Keep the plan even where onnxruntime's CPU would run an op in float anyway "
    "(ConvTranspose) or an 8-bit max-pool in its slow loop: for other int8 runtimes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-v", "--verbose", count=True, help="More detail (per-node table).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@_handle_errors
def quantize(
    model: Path | None,
    output: Path,
    calib: str,
    eval_data: str | None,
    preprocess: str | None,
    shapes: tuple[str, ...],
    labels: str | None,
    fmt: str,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    symmetric_activations: bool,
    calibration: str,
    percentile: float,
    calib_cache: Path | None,
    max_memory: str | None,
    max_accuracy_drop: float | None,
    min_agreement: float | None,
    min_sqnr: float | None,
    min_speedup: float | None,
    strict: bool,
    samples: int | None,
    batch_size: int,
    exclude: tuple[str, ...],
    exclude_from: tuple[str, ...],
    analyze: bool,
    reports: tuple[Path, ...],
    threads: int | None,
    latency_runs: int,
    no_fuse: bool,
    no_float_stem: bool,
    no_runtime_tuning: bool,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Quantize MODEL to int8 with statistics from --calib, verify it, and report."""
    from qconv.config import (
        CalibrationMethod,
        DataConfig,
        PerChannel,
        PerTensor,
        QuantFormat,
        QuantizeConfig,
        QuantType,
        parse_shape,
        parse_size,
    )
    from qconv.console import Console
    from qconv.errors import ConfigError
    from qconv.gates import Gates
    from qconv.job import QuantizeJob, run_quantize

    if model is None:
        raise ConfigError("MODEL is missing", "give the float model path (or `model` in --config)")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is invalid", "give 1 or more")
    if latency_runs < 0:
        raise ConfigError(f"--latency-runs {latency_runs} is invalid", "give 0 or more")
    console = Console(-1 if quiet else verbose)
    config = QuantizeConfig(
        format=QuantFormat(fmt),
        weight_granularity=PerChannel() if per_channel else PerTensor(),
        activation_type=QuantType(activation_type),
        weight_type=QuantType(weight_type),
        symmetric_activations=symmetric_activations,
        calibration=CalibrationMethod(calibration),
        percentile=percentile,
        exclude=_exclusions(exclude, exclude_from),
        fuse=not no_fuse,
        float_stem=not no_float_stem,
        runtime_tuning=not no_runtime_tuning,
    )
    data = DataConfig(
        calib=_data_path(calib),
        eval=_data_path(eval_data),
        labels=labels,
        samples=samples,
        batch_size=batch_size,
        preprocess=preprocess,
        shapes=tuple(parse_shape(s) for s in shapes),
    )
    job = QuantizeJob(
        model,
        output,
        data,
        config,
        calib_cache=calib_cache,
        max_memory=parse_size(max_memory) if max_memory else None,
        gates=Gates(max_accuracy_drop, min_agreement, min_sqnr, min_speedup, strict),
        analyze=analyze,
        threads=threads,
        reports=tuple(reports),
        latency_runs=latency_runs,
    )
    with console.progress() as progress:
        report = run_quantize(job, progress)
    _render(console, report, as_json, _written(report.model.output_path, reports))


def _written(model: str | None, reports: tuple[Path, ...] | list[Path]) -> str:
    """What a run with failed gates still wrote, for the one-line message."""
    files = (["the model"] if model else []) + (["the reports"] if reports else [])
    if not files:
        return "nothing was written"
    return f"{' and '.join(files)} {'were' if len(files) > 1 or reports else 'was'} written"


def _render(console, report, as_json: bool, written: str) -> None:
    """Print the report and turn failed gates into one line and exit code 3."""
    if as_json:
        from qconv.report.json_format import to_json

        console.print_text(to_json(report))
    else:
        console.report(report)
    if report.failed_gates:
        failures = "; ".join(
            f"{gate.name} measured {_fmt_gate(gate.value)}, limit {gate.threshold:g} "
            f"({gate.detail})"
            for gate in report.failed_gates
        )
        console.error(f"gate failed: {failures}; {written}")
        sys.exit(GATE_FAILED)


def _fmt_gate(value: float | None) -> str:
    return "nothing" if value is None else f"{value:.4g}"


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("float_model", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("int8_model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--eval", "eval_data", required=True, help="Evaluation data (any reader format).")
@click.option("--labels", help="Name of the integer label array in the --eval data.")
@click.option("--preprocess", help="Image preprocessing for an image folder (see quantize).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...")
@click.option("--samples", type=int, help="Use at most N samples (seeded subset).")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--threads", type=int, help="onnxruntime threads (latency defaults to 1).")
@click.option("--latency-runs", type=int, default=50, show_default=True)
@click.option("--max-accuracy-drop", type=float, help="Gate (exit 3), as for quantize.")
@click.option("--min-agreement", type=float, help="Gate (exit 3), as for quantize.")
@click.option("--min-sqnr", type=float, help="Gate (exit 3), as for quantize.")
@click.option("--min-speedup", type=float, help="Gate (exit 3), as for quantize.")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-v", "--verbose", count=True, help="More detail.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@_handle_errors
def compare(
    float_model: Path,
    int8_model: Path,
    eval_data: str,
    labels: str | None,
    preprocess: str | None,
    shapes: tuple[str, ...],
    samples: int | None,
    batch_size: int,
    threads: int | None,
    latency_runs: int,
    max_accuracy_drop: float | None,
    min_agreement: float | None,
    min_sqnr: float | None,
    min_speedup: float | None,
    reports: tuple[Path, ...],
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Evaluate any FLOAT_MODEL/INT8_MODEL pair, including int8 models from other tools."""
    from qconv.config import DataConfig, parse_shape
    from qconv.console import Console
    from qconv.gates import Gates
    from qconv.job import CompareJob, run_compare

    data = DataConfig(
        calib=_data_path(eval_data),
        eval=_data_path(eval_data),
        labels=labels,
        samples=samples,
        batch_size=batch_size,
        preprocess=preprocess,
        shapes=tuple(parse_shape(s) for s in shapes),
    )
    job = CompareJob(
        float_model,
        int8_model,
        data,
        threads=threads,
        reports=tuple(reports),
        latency_runs=latency_runs,
        gates=Gates(max_accuracy_drop, min_agreement, min_sqnr, min_speedup),
    )
    console = Console(-1 if quiet else verbose)
    with console.progress() as progress:
        report = run_compare(job, progress)
    _render(console, report, as_json, _written(None, reports))


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--calib", required=True, help="Calibration data (any reader format).")
@click.option("--eval", "eval_data", help="Data for the analysis (default: calibration slice).")
@click.option("--labels", help="Name of the integer label array in the --eval data.")
@click.option("--preprocess", help="Image preprocessing for an image folder (see quantize).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...")
@click.option(
    "--calibration",
    type=click.Choice(["minmax", "percentile", "entropy", "mse", "auto"]),
    default="mse",
    show_default=True,
)
@click.option("--samples", type=int, help="Use at most N calibration samples.")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--exclude", multiple=True, metavar="NODE_OR_OPTYPE")
@click.option("--threads", type=int)
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-v", "--verbose", count=True, help="More detail (every layer, per-node table).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@_handle_errors
def analyze(
    model: Path,
    calib: str,
    eval_data: str | None,
    labels: str | None,
    preprocess: str | None,
    shapes: tuple[str, ...],
    calibration: str,
    samples: int | None,
    batch_size: int,
    exclude: tuple[str, ...],
    threads: int | None,
    reports: tuple[Path, ...],
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Rank MODEL's quantized layers by the output error each one causes (writes no model).

    For each layer: output SQNR with only that layer quantized, and with every layer but that
    one quantized. Feed the report to `quantize --exclude-from REPORT.json:worst=N`.
    """
    from qconv.config import CalibrationMethod, DataConfig, QuantizeConfig, parse_shape
    from qconv.console import Console
    from qconv.job import QuantizeJob, run_quantize

    data = DataConfig(
        calib=_data_path(calib),
        eval=_data_path(eval_data),
        labels=labels,
        samples=samples,
        batch_size=batch_size,
        preprocess=preprocess,
        shapes=tuple(parse_shape(s) for s in shapes),
    )
    config = QuantizeConfig(
        calibration=CalibrationMethod(calibration), exclude=_exclusions(exclude, ())
    )
    job = QuantizeJob(
        model,
        None,
        data,
        config,
        threads=threads,
        reports=tuple(reports),
        latency_runs=0,
        analyze=True,
    )
    console = Console(-1 if quiet else verbose)
    with console.progress() as progress:
        report = run_quantize(job, progress)
    _render(console, report, as_json, _written(report.model.output_path, reports))


def _exclusions(exclude: tuple[str, ...], exclude_from: tuple[str, ...]) -> tuple[str, ...]:
    from qconv.exclusions import exclusions_from_report

    names = [item.strip() for entry in exclude for item in entry.split(",") if item.strip()]
    for spec in exclude_from:
        names += exclusions_from_report(spec)
    return tuple(dict.fromkeys(names))


def _data_path(value: str | None) -> Path | str | None:
    """Data locations are paths, except the ``random`` pseudo-source."""
    if value is None or value.split(":")[0] == "random":
        return value
    return Path(value)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_handle_errors
def inspect(model: Path, as_json: bool) -> None:
    """Show MODEL's inputs, outputs, opsets, op histogram, size and what qconv can quantize."""
    import json

    from qconv.console import Console
    from qconv.job import inspect_model

    info = inspect_model(model)
    console = Console()
    if as_json:
        console.print_text(json.dumps(info, indent=2) + "\n")
    else:
        console.inspect(info)


if __name__ == "__main__":
    main()
