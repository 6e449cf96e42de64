"""The one place that imports rich: output levels, progress bars and the terminal report.

Results go to stdout; progress, warnings and errors go to stderr, so ``--json`` output can be
piped. Progress bars appear only on an interactive terminal outside CI.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qconv.report.model import Report, output_table

# Exit code when stdout is closed early (``qconv ... | head``): what a shell reports for a
# program stopped by SIGPIPE. rich's own handling exits 1, which reads as a bug in qconv.
PIPE_CLOSED = 141


def exit_closed_pipe() -> None:
    """Exit with PIPE_CLOSED, stdout pointed at /dev/null so no later flush fails again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(PIPE_CLOSED)


class Console:
    """Owns both rich consoles and the verbosity level (-1 quiet, 0 normal, 1+ verbose)."""

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity
        self.out = RichConsole(highlight=False, soft_wrap=False)
        self.out.on_broken_pipe = exit_closed_pipe  # type: ignore[method-assign]
        self.err = RichConsole(stderr=True, highlight=False)

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not os.environ.get("CI") and self.verbosity >= 0

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)

    def warn(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            self.err.print(message)

    def print_text(self, text: str) -> None:
        """Raw text to stdout (JSON), untouched by rich markup."""
        self.out.file.write(text)

    @contextlib.contextmanager
    def progress(self) -> Iterator[_Steps]:
        if not self.interactive:
            # CI logs get a plain line now and then: some CI services stop a job that prints
            # nothing for 10 minutes, and --analyze on a large model takes longer than that.
            yield _Steps(None, plain=self.err if self.verbosity >= 0 else None)
            return
        columns = (
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.err, transient=True) as bars:
            yield _Steps(bars)

    # -- report ------------------------------------------------------------------------------

    def report(self, report: Report) -> None:
        if self.verbosity < 0:
            return
        self.out.print(_summary_table(report))
        if report.evaluation and len(report.evaluation.outputs) > 0:
            self.out.print(_outputs_table(report))
        if report.worst_tensors():
            self.out.print(_worst_table(report))
        if report.nodes:
            self.out.print(_nodes_table(report, verbose=self.verbosity >= 1))
        if report.sensitivity:
            self.out.print(_sensitivity_table(report, rows=None if self.verbosity >= 1 else 10))
        if self.verbosity >= 1 and report.rewrites:
            self.out.print(_rewrites_table(report))
        if self.verbosity >= 1:
            self.out.print(_ops_table(report))
            if report.latency and report.latency.int8_ops_ms:
                self.out.print(_profile_table(report))
        for note in report.notes:
            self.out.print(f"note: {note}")

    def inspect(self, info: dict[str, object]) -> None:
        table = Table(title=f"qconv inspect {info['path']}", show_header=False)
        for key in ("bytes", "ir_version", "opsets", "inputs", "outputs"):
            table.add_row(key, str(info[key]))
        table.add_row(
            "int8 candidates",
            f"{info['quantizable_nodes']} of {info['nodes_after_preparation']} nodes after BN "
            "folding and cleanup; quantize decides after calibration, where onnxruntime would "
            "run int8 slower or the file would not shrink",
        )
        table.add_row("reasons", ", ".join(f"{k}: {v}" for k, v in info["reasons"].items()))
        self.out.print(table)
        ops = Table("op", "count", title="ops")
        for op, count in info["ops"].items():
            ops.add_row(op, str(count))
        self.out.print(ops)


# Without bars (not a terminal, or CI), a long step prints a line at most this often.
PLAIN_PROGRESS_SECONDS = 60.0


class _Steps:
    def __init__(
        self,
        bars: Progress | None,
        plain: RichConsole | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bars = bars
        self.plain = plain
        self.clock = clock

    def step(self, description: str, total: int) -> Callable[[int, int], None]:
        if self.bars is None and self.plain is None:
            return lambda done, total: None
        if self.bars is None:
            return self._plain_step(description)
        task = self.bars.add_task(description, total=max(total, 1))

        def advance(done: int, total: int) -> None:
            self.bars.update(task, completed=done, total=max(total, 1))

        return advance

    def _plain_step(self, description: str) -> Callable[[int, int], None]:
        started = last = self.clock()

        def report(done: int, total: int) -> None:
            nonlocal last
            now = self.clock()
            if now - last >= PLAIN_PROGRESS_SECONDS:
                last = now
                self.plain.print(f"{description}: {done} of {total} ({now - started:.0f} s)")

        return report


def _fmt(value: float | None, pattern: str = "{:.2%}") -> str:
    return "-" if value is None else pattern.format(value)


def _summary_table(report: Report) -> Table:
    m = report.model
    title = "qconv compare"
    if report.calibration:
        title = "qconv quantize" if m.output_path else "qconv analyze"
    table = Table(title=title, show_header=False, title_justify="left")
    written = f" -> {m.output_path}" if m.output_path else " (int8 model not written)"
    table.add_row("model", f"{m.input_path}{written}")
    table.add_row("size", f"{m.float_bytes:,} -> {m.int8_bytes:,} bytes ({m.size_ratio:.2f}x)")
    if report.nodes:
        table.add_row("quantized", f"{report.quantized_nodes} of {len(report.nodes)} nodes")
    cal = report.calibration
    if cal is not None:
        passes = "cached statistics" if cal.passes == 0 else f"{cal.passes} pass(es)"
        table.add_row(
            "calibration",
            f"{cal.method}, {cal.samples} samples, {cal.tensors} tensors, {passes}, "
            f"{cal.seconds:.1f} s",
        )
        if cal.synthetic:
            table.add_row("[bold red]WARNING[/]", "[bold red]ranges come from random data[/]")
    ev = report.evaluation
    if ev is not None:
        table.add_row("evaluated on", f"{ev.samples} samples of {ev.data}")
        if ev.float_accuracy is not None:
            change = round(ev.int8_accuracy - ev.float_accuracy, 9) + 0.0  # no "-0.00%"
            table.add_row(
                "accuracy",
                f"float {_fmt(ev.float_accuracy)} -> int8 {_fmt(ev.int8_accuracy)} ({change:+.2%})",
            )
        if ev.top1_agreement is not None:
            table.add_row("top-1 agreement", _fmt(ev.top1_agreement))
    if report.latency:
        lat = report.latency
        table.add_row(
            f"latency ({lat.threads}T, {lat.feed()})",
            f"float {lat.float_median_ms:.3f} ms -> int8 {lat.int8_median_ms:.3f} ms, "
            f"{lat.comparison()} (median of {lat.runs}; p90 {lat.float_p90_ms:.3f} -> "
            f"{lat.int8_p90_ms:.3f})",
        )
    table.add_row("verified", "onnx.checker + onnxruntime load" if report.verified else "NO")
    if report.environment:
        env = report.environment
        isa = ", ".join(env.int8_instructions) or "no int8 dot-product instructions"
        table.add_row("cpu", f"{env.cpu} ({isa})")
    for gate in report.gates:
        verdict = "[green]pass[/]" if gate.passed else f"[bold red]FAIL[/] ({gate.detail})"
        value = "-" if gate.value is None else f"{gate.value:.4g}"
        table.add_row(f"gate {gate.name}", f"{value} vs {gate.threshold:g}: {verdict}")
    return table


def _outputs_table(report: Report) -> Table:
    header, rows = output_table(report.evaluation.outputs)
    table = Table(*header, title="output fidelity", title_justify="left")
    for row in rows:
        table.add_row(*row)
    return table


def _worst_table(report: Report) -> Table:
    table = Table(
        "tensor", "SQNR dB", "range", "method", title="worst tensors", title_justify="left"
    )
    for t in report.worst_tensors():
        table.add_row(
            t.tensor, f"{t.sqnr_db:.1f}", f"[{t.chosen[0]:.4g}, {t.chosen[1]:.4g}]", t.method
        )
    return table


def _nodes_table(report: Report, verbose: bool) -> Table:
    if verbose:
        table = Table(
            "node", "op", "quantized", "reason", "detail", title="nodes", title_justify="left"
        )
        for n in report.nodes:
            table.add_row(n.node, n.op_type, "yes" if n.quantized else "no", n.reason, n.detail)
        return table
    table = Table(
        "reason", "nodes", "ops", title="why nodes were or were not quantized", title_justify="left"
    )
    by_reason: dict[str, list[str]] = {}
    for n in report.nodes:
        by_reason.setdefault(n.reason, []).append(n.op_type)
    for reason, ops in by_reason.items():
        table.add_row(reason, str(len(ops)), ", ".join(sorted(set(ops))))
    return table


def _rewrites_table(report: Report) -> Table:
    table = Table(
        "pass", "nodes", "applied", "detail", title="float-graph rewrites", title_justify="left"
    )
    for r in report.rewrites:
        table.add_row(r.pass_name, ", ".join(r.nodes), "yes" if r.applied else "no", r.detail)
    return table


def _ops_table(report: Report) -> Table:
    m = report.model
    table = Table("op", "float", "int8", title="op histogram", title_justify="left")
    for op in sorted(set(m.float_ops) | set(m.int8_ops)):
        table.add_row(op, str(m.float_ops.get(op, 0)), str(m.int8_ops.get(op, 0)))
    return table


def _profile_table(report: Report) -> Table:
    lat = report.latency
    table = Table(
        "op (as run)",
        "float ms",
        "int8 ms",
        title="time per op type, per run",
        title_justify="left",
    )
    for op in sorted(set(lat.float_ops_ms) | set(lat.int8_ops_ms)):
        f, q = lat.float_ops_ms.get(op), lat.int8_ops_ms.get(op)
        table.add_row(op, "-" if f is None else f"{f:.4f}", "-" if q is None else f"{q:.4f}")
    return table


def _sensitivity_table(report: Report, rows: int | None) -> Table:
    sens = report.sensitivity
    title = (
        f"most sensitive layers (fully quantized output SQNR {sens.full_sqnr_db:.1f} dB; "
        f"{sens.samples} samples, {sens.seconds:.1f} s)"
    )
    table = Table(
        "layer", "op", "SQNR alone", "SQNR without", "gain dB", title=title, title_justify="left"
    )
    for layer in sens.layers[:rows]:
        table.add_row(
            layer.node,
            layer.op_type,
            f"{layer.alone_sqnr_db:.1f}",
            f"{layer.without_sqnr_db:.1f}",
            f"{layer.gain_db:+.2f}",
        )
    return table
