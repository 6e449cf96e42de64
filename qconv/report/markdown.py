"""Markdown rendering of the report, sized for a CI job summary."""

from __future__ import annotations

import html
import re

from qconv.report.model import Report, output_table


def to_markdown(report: Report) -> str:
    sections = [
        _summary(report),
        _evaluation(report),
        _worst(report),
        _sensitivity(report),
        _ops(report),
        _profile(report),
        _nodes(report),
        _rewrites(report),
        _notes(report),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A table cell: a line break (legal in ONNX names) would end the row, a pipe the cell."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def _code(name: str) -> str:
    """``name`` as a code span, whatever backticks it holds (its HTML is then inert)."""
    longest = max((len(run) for run in re.findall(r"`+", name)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if name.startswith("`") or name.endswith("`") else ""
    return f"{fence}{pad}{name}{pad}{fence}"


def _text(text: str) -> str:
    """Free text that may quote node names: HTML-significant characters become entities."""
    return html.escape(text, quote=False)


def _summary(report: Report) -> str:
    m = report.model
    rows = [
        ["model", f"`{m.input_path}` -> `{m.output_path}`"],
        ["size", f"{m.float_bytes:,} -> {m.int8_bytes:,} bytes ({m.size_ratio:.2f}x)"],
    ]
    if report.nodes:
        rows.append(["quantized nodes", f"{report.quantized_nodes} of {len(report.nodes)}"])
    cal = report.calibration
    if cal is not None:
        rows.append(["calibration", f"{cal.method}, {cal.samples} samples, {cal.seconds:.1f} s"])
    rows.append(
        ["verified", "onnx.checker and onnxruntime load passed" if report.verified else "no"]
    )
    if report.latency:
        lat = report.latency
        rows.append(
            [
                f"latency ({lat.threads} thread{'s' if lat.threads > 1 else ''}, {lat.feed()})",
                f"float {lat.float_median_ms:.3f} ms (p90 {lat.float_p90_ms:.3f}), "
                f"int8 {lat.int8_median_ms:.3f} ms (p90 {lat.int8_p90_ms:.3f}); "
                f"{lat.comparison()}",
            ]
        )
    if report.environment:
        env = report.environment
        isa = ", ".join(env.int8_instructions) or "none"
        rows.append(["cpu", f"{env.cpu} (int8 instructions: {isa})"])
        rows.append(
            [
                "versions",
                f"qconv {report.qconv_version}, onnx {report.onnx_version}, "
                f"onnxruntime {report.onnxruntime_version}, python {env.python}",
            ]
        )
    for gate in report.gates:
        value = "-" if gate.value is None else f"{gate.value:.4g}"
        verdict = "pass" if gate.passed else f"**FAIL** ({_text(gate.detail)})"
        rows.append([f"gate `{gate.name}`", f"{value} vs {gate.threshold:g}: {verdict}"])
    return "## qconv report\n\n" + _table(["", ""], rows)


def _evaluation(report: Report) -> str:
    ev = report.evaluation
    if ev is None:
        return ""
    lines = [f"### Fidelity on {ev.samples} samples of `{ev.data}`"]
    header, rows = output_table(ev.outputs)
    lines.append(_table(header, [[_code(row[0]), *row[1:]] for row in rows]))
    if ev.top1_agreement is not None:
        lines.append(f"Top-1 agreement: {ev.top1_agreement:.2%}")
    if ev.float_accuracy is not None:
        lines.append(f"Label accuracy: float {ev.float_accuracy:.2%}, int8 {ev.int8_accuracy:.2%}")
    return "\n\n".join(lines)


def _worst(report: Report) -> str:
    worst = report.worst_tensors()
    if not worst:
        return ""
    rows = [
        [_code(t.tensor), f"{t.sqnr_db:.1f}", f"[{t.chosen[0]:.4g}, {t.chosen[1]:.4g}]", t.method]
        for t in worst
    ]
    header = ["tensor", "SQNR dB", "range", "method"]
    return "### Tensors with the worst SQNR\n\n" + _table(header, rows)


def _sensitivity(report: Report) -> str:
    sens = report.sensitivity
    if sens is None:
        return ""
    rows = [
        [
            _code(s.node),
            s.op_type,
            f"{s.alone_sqnr_db:.1f}",
            f"{s.without_sqnr_db:.1f}",
            f"{s.gain_db:+.2f}",
        ]
        for s in sens.layers
    ]
    title = (
        f"### Layer sensitivity\n\nFully quantized output SQNR {sens.full_sqnr_db:.1f} dB on "
        f"{sens.samples} samples. *Alone*: only that layer quantized; *without*: every layer "
        "but that one; *gain*: what leaving it float buys.\n\n"
    )
    return title + _table(["layer", "op", "SQNR alone", "SQNR without", "gain dB"], rows)


def _ops(report: Report) -> str:
    m = report.model
    ops = sorted(set(m.float_ops) | set(m.int8_ops))
    rows = [[op, str(m.float_ops.get(op, 0)), str(m.int8_ops.get(op, 0))] for op in ops]
    return "### Op histogram\n\n" + _table(["op", "float", "int8"], rows)


def _profile(report: Report) -> str:
    lat = report.latency
    if lat is None or not lat.int8_ops_ms:
        return ""
    rows = []
    for op in sorted(set(lat.float_ops_ms) | set(lat.int8_ops_ms)):
        f, q = lat.float_ops_ms.get(op), lat.int8_ops_ms.get(op)
        rows.append([op, "-" if f is None else f"{f:.4f}", "-" if q is None else f"{q:.4f}"])
    title = "### Time per op type (onnxruntime profiler, ms per run)\n\n"
    return title + _table(["op (as run)", "float", "int8"], rows)


def _nodes(report: Report) -> str:
    if not report.nodes:
        return ""
    rows = [
        [_code(n.node), n.op_type, "yes" if n.quantized else "no", n.reason, _text(n.detail)]
        for n in report.nodes
    ]
    return "### Nodes\n\n" + _table(["node", "op", "quantized", "reason", "detail"], rows)


def _rewrites(report: Report) -> str:
    if not report.rewrites:
        return ""
    rows = [
        [
            r.pass_name,
            ", ".join(_code(n) for n in r.nodes),
            "yes" if r.applied else "no",
            _text(r.detail),
        ]
        for r in report.rewrites
    ]
    return "### Float-graph rewrites\n\n" + _table(["pass", "nodes", "applied", "detail"], rows)


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    return "### Notes\n\n" + "\n".join(f"- {_text(n)}" for n in report.notes)
