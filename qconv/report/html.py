"""HTML rendering of the report: one self-contained page to open in a browser or attach to CI.

Guarantees:
    * The page fetches nothing: the style sheet is inline, there is no script, no font or image
      file, and charts are inline ``<svg>`` (see :mod:`qconv.report.charts`).
    * Every string taken from the report is HTML-escaped; only markup built here is not.
    * Sections render what the report holds: a ``qconv compare`` report (no calibration, no
      nodes) gives a shorter page, never an error.
    * Without matplotlib the page still has every table, and each chart is replaced by a note
      saying how to get it (``pip install 'matplotlib>=3.7'``, the ``report`` extra).
    * The same report gives the same page, byte for byte.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from qconv.report import charts
from qconv.report.model import (
    EvaluationSummary,
    GateResult,
    LatencySummary,
    ModelSummary,
    Report,
    TensorEntry,
    output_table,
)

# Tables longer than this start collapsed inside <details>.
OPEN_ROWS = 25
# Tensors highlighted in the SQNR chart and listed in the worst-tensor table.
WORST_TENSORS = 5
# Most sensitive layers listed before the full (collapsed) list, when it is long.
SENSITIVE_LAYERS = 10
# Histograms drawn, worst tensors first.
HISTOGRAMS = 6
CHARTS_HINT = "pip install 'matplotlib>=3.7'"


class Html(str):
    """Markup built by this module, already safe to put in the page as is."""


def esc(value: object) -> Html:
    """``value`` as text safe to place in HTML (markup built here passes unchanged)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value)))


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    sections = [
        _header(report),
        _banners(report),
        _cards(report),
        _notes(report.notes),
        _fidelity(report.evaluation),
        _sqnr(report.tensors),
        _histograms(report),
        _sensitivity(report),
        _latency(report.latency),
        _ops(report),
        _nodes(report),
        _rewrites(report),
        _environment(report),
    ]
    body = "\n".join(s for s in sections if s)
    title = esc(f"qconv report: {report.model.input_path}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f'<body>\n<main class="page">\n{body}\n</main>\n</body>\n</html>\n'
    )


# ---------------------------------------------------------------------------------------------
# Building blocks


def _tag(name: str, content: object = "", **attrs: object) -> Html:
    """``<name attrs>content</name>``; ``class_`` spells ``class``, None drops an attribute."""
    rendered = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attrs.items()
        if value is not None
    )
    return Html(f"<{name}{rendered}>{esc(content)}</{name}>")


def _join(parts: Sequence[object], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def _section(title: str, *content: object, key: str) -> Html:
    return _tag("section", _join([_tag("h2", title), *content], "\n"), id=key)


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    key: str | None = None,
    numeric: Sequence[int] = (),
    mono: Sequence[int] = (),
    nowrap: Sequence[int] = (),
) -> Html:
    """A table; the sequences are column indices to right-align, set in monospace (long names
    break after ``/``) or keep on one line. An all-empty ``header`` gives no header row."""

    def cell(tag: str, index: int, value: object) -> Html:
        if index in mono and tag == "td":
            return _tag(tag, _breakable(value), class_="mono")
        if index in numeric:
            return _tag(tag, value, class_="num")
        return _tag(tag, value, class_="nowrap" if index in nowrap else None)

    head = _tag("tr", _join([cell("th", i, h) for i, h in enumerate(header)]))
    body = _join([_tag("tr", _join([cell("td", i, v) for i, v in enumerate(row)])) for row in rows])
    parts = [_tag("thead", head) if any(header) else "", _tag("tbody", body)]
    table = _tag("table", _join(parts), id=f"{key}-table" if key else None)
    return _tag("div", table, class_="scroll")


def _collapsible(summary: str, content: Html, opened: bool) -> Html:
    """``content`` inside <details>, shown at first when ``opened``."""
    attribute = " open" if opened else ""
    return Html(f"<details{attribute}><summary>{esc(summary)}</summary>\n{content}\n</details>")


def _badge(text: str, state: str) -> Html:
    return _tag("span", text, class_=f"badge {state}")


def _breakable(name: object) -> Html:
    """``name`` with line-break opportunities after each ``/`` (long tensor and node names)."""
    if isinstance(name, Html):
        return name
    return Html("/<wbr>".join(html.escape(part) for part in str(name).split("/")))


def _chart(draw: Callable[[], str], caption: str = "") -> Html:
    """A chart drawn by ``draw`` (SVG markup), or the install hint when matplotlib is missing."""
    if not charts.available():
        return _charts_hint()
    parts = [Html(draw()), _tag("figcaption", _breakable(caption)) if caption else ""]
    return _tag("figure", _join(parts), class_="chart")


def _charts_hint() -> Html:
    """Where a chart would be when matplotlib is missing: what to install to get it."""
    hint = _tag("code", CHARTS_HINT)
    text = Html(f"Charts are not drawn: matplotlib is not installed. Run {hint} to get them.")
    return _tag("p", text, class_="no-charts")


def _num(value: float | None, spec: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return format(value, spec)


def _size(count: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# Top of the page


def _header(report: Report) -> Html:
    m = report.model
    badges = [
        _badge("verified", "pass") if report.verified else _badge("not verified", "warn"),
        _badge(f"{report.quantized_nodes} of {len(report.nodes)} nodes int8", "neutral")
        if report.nodes
        else "",
        _badge(f"opset {m.opset}", "neutral"),
    ]
    paths = _join(
        [_tag("code", m.input_path), " → ", _tag("code", m.output_path or "(not written)")]
    )
    return _tag(
        "header",
        _join([_tag("h1", "qconv report"), _tag("p", paths, class_="paths"), _join(badges, " ")]),
    )


def _banners(report: Report) -> Html:
    banners = []
    cal = report.calibration
    if cal is not None and cal.synthetic:
        banners.append(
            f"Calibration used RANDOM data ({cal.data}): the ranges are meaningless for accuracy. "
            "Calibrate with real inputs before shipping this model."
        )
    for gate in report.failed_gates:
        banners.append(f"FAIL: gate {gate.name}: {_gate_numbers(gate)} ({gate.detail})")
    return _join([_tag("div", text, class_="banner", role="alert") for text in banners], "\n")


def _cards(report: Report) -> Html:
    cards = [
        *_evaluation_cards(report.evaluation),
        _latency_card(report.latency),
        _size_card(report),
        _nodes_card(report),
        _calibration_card(report),
        *[_gate_card(g) for g in report.gates],
    ]
    return _tag("section", _join([c for c in cards if c], "\n"), class_="cards", id="summary")


def _card(title: str, value: object, detail: object = "", state: str = "", key: str = "") -> Html:
    parts = [
        _tag("div", title, class_="card-title"),
        _tag("div", value, class_="card-value"),
        _tag("div", detail, class_="card-detail") if detail else "",
    ]
    return _tag("div", _join(parts), class_=f"card {state}".strip(), data_card=key or None)


def _metric(text: str, key: str) -> Html:
    """A figure in a card, marked so tools (and tests) can find it."""
    return _tag("span", text, data_metric=key)


def _evaluation_cards(ev: EvaluationSummary | None) -> list[Html]:
    if ev is None:
        return []
    cards = []
    if ev.float_accuracy is not None and ev.int8_accuracy is not None:
        drop = (ev.float_accuracy - ev.int8_accuracy) * 100
        value = _join(
            [
                _metric(f"{ev.float_accuracy:.2%}", "float-accuracy"),
                _tag("span", " → ", class_="arrow"),
                _metric(f"{ev.int8_accuracy:.2%}", "int8-accuracy"),
            ]
        )
        detail = f"float → int8; drop {drop:+.2f} points on {ev.samples} samples"
        cards.append(_card("Label accuracy", value, detail, key="accuracy"))
    if ev.top1_agreement is not None:
        detail = "int8 and float pick the same class"
        value = _metric(f"{ev.top1_agreement:.2%}", "top1-agreement")
        cards.append(_card("Top-1 agreement", value, detail, key="agreement"))
    if worst := ev.worst_float_output():
        detail = f"worst output {worst.name}: cosine {worst.cosine:.5f}"
        value = _metric(f"{_num(worst.sqnr_db, '.1f')} dB", "output-sqnr")
        cards.append(_card("Output SQNR", value, detail, key="fidelity"))
    return cards


def _latency_card(lat: LatencySummary | None) -> Html:
    if lat is None:
        return Html("")
    value = _join(
        [
            _metric(f"{lat.float_median_ms:.3f}", "float-ms"),
            _tag("span", " → ", class_="arrow"),
            _metric(f"{lat.int8_median_ms:.3f} ms", "int8-ms"),
        ]
    )
    detail = (
        f"{lat.comparison('×')}; median of {lat.runs} runs, "
        f"{_plural(lat.threads, 'thread')}, {lat.feed()}"
    )
    state = "pass" if lat.speedup >= 1 else "warn"
    return _card("Latency", value, detail, state=state, key="latency")


def _size_card(report: Report) -> Html:
    m = report.model
    value = f"{_size(m.float_bytes)} → {_size(m.int8_bytes)}"
    detail = f"int8 is {m.size_ratio:.2f}× the float file ({m.int8_bytes:,} bytes)"
    return _card("Model size", value, detail, key="size")


def _nodes_card(report: Report) -> Html:
    if not report.nodes:
        return Html("")
    kept = len(report.nodes) - report.quantized_nodes
    detail = "every node runs in int8" if not kept else f"{kept} left in float (see Nodes)"
    value = f"{report.quantized_nodes} of {len(report.nodes)}"
    return _card("Quantized nodes", value, detail, state="" if report.quantized_nodes else "fail")


def _calibration_card(report: Report) -> Html:
    cal = report.calibration
    if cal is None:
        return Html("")
    value = cal.method
    detail = (
        f"{_plural(cal.samples, 'sample')} from {cal.data}; "
        f"{cal.tensors} tensors in {cal.seconds:.1f} s"
    )
    state = "fail" if cal.synthetic else ""
    return _card("Calibration", value, detail, state=state, key="calibration")


def _gate_numbers(gate: GateResult) -> str:
    return f"measured {_num(gate.value, '.4g')}, limit {gate.threshold:g}"


def _gate_card(gate: GateResult) -> Html:
    verdict = "pass" if gate.passed else "FAIL"
    value = _tag("span", verdict, class_=f"verdict {'pass' if gate.passed else 'fail'}")
    detail = f"{_gate_numbers(gate)}; {gate.detail}"
    state = "pass" if gate.passed else "fail"
    return _card(f"gate {gate.name}", value, detail, state=state, key=f"gate-{gate.name}")


# ---------------------------------------------------------------------------------------------
# Sections


def _fidelity(ev: EvaluationSummary | None) -> Html:
    if ev is None:
        return Html("")
    header, rows = output_table(ev.outputs)
    intro = _tag("p", f"int8 against float on {ev.samples} samples of {ev.data}.")
    table = _table(header, rows, numeric=tuple(range(1, len(header))), mono=(0,))
    return _section("Output fidelity", intro, table, key="fidelity")


def _sqnr(tensors: list[TensorEntry]) -> Html:
    measured = [
        (i, t) for i, t in enumerate(tensors) if t.sqnr_db is not None and math.isfinite(t.sqnr_db)
    ]
    if not measured:
        return Html("")
    intro = _tag(
        "p",
        "SQNR of each calibrated activation, int8 against float, in graph order; the "
        f"{min(WORST_TENSORS, len(measured))} worst are red. Numbers on the x axis are the # "
        "column below.",
    )
    chart = _chart(lambda: charts.sqnr_chart(tensors, WORST_TENSORS))
    worst = sorted(measured, key=lambda pair: pair[1].sqnr_db)[:WORST_TENSORS]
    worst_table = _tensor_table(worst, key="worst-tensors")
    everything = _tensor_table(list(enumerate(tensors)), key="tensors")
    return _section(
        "SQNR along the graph",
        intro,
        chart,
        _tag("h3", "Worst tensors"),
        worst_table,
        _collapsible(f"All {len(tensors)} calibrated tensors", everything, opened=False),
        key="sqnr",
    )


def _tensor_table(rows: list[tuple[int, TensorEntry]], key: str) -> Html:
    header = ["#", "tensor", "SQNR dB", "observed", "chosen", "scale", "zero point", "method"]
    cells = [
        [
            index,
            t.tensor,
            _num(t.sqnr_db, ".1f"),
            _range(t.observed),
            _range(t.chosen),
            _num(t.scale, ".4g"),
            t.zero_point,
            t.method,
        ]
        for index, t in rows
    ]
    return _table(header, cells, key=key, numeric=(0, 2, 5, 6), mono=(1,), nowrap=(3, 4, 7))


def _range(bounds: tuple[float, float]) -> str:
    return f"[{_num(bounds[0], '.4g')}, {_num(bounds[1], '.4g')}]"


def _histograms(report: Report) -> Html:
    ranked = report.worst_tensors(len(report.tensors))
    chosen = [t for t in ranked if t.histogram is not None][:HISTOGRAMS]
    if not chosen:
        return Html("")
    intro = _tag(
        "p",
        "Calibration histograms of the worst tensors (log scale). Dashed red lines: the "
        "chosen clipping range; dotted grey lines: the observed range.",
    )
    if not charts.available():
        return _section("Histograms of the worst tensors", _charts_hint(), key="histograms")
    figures = [
        _chart(lambda t=t, i=i: charts.histogram_chart(t, f"hist{i}"), t.tensor)
        for i, t in enumerate(chosen)
    ]
    grid = _tag("div", _join(figures, "\n"), class_="grid")
    return _section("Histograms of the worst tensors", intro, grid, key="histograms")


def _sensitivity(report: Report) -> Html:
    sens = report.sensitivity
    if sens is None:
        return Html("")
    intro = _tag(
        "p",
        f"Fully quantized output SQNR {sens.full_sqnr_db:.1f} dB on {sens.samples} samples. "
        "Alone: only that layer quantized; without: every layer but that one; gain: what "
        "leaving it in float buys.",
    )
    rows = [
        [
            s.node,
            s.op_type,
            _num(s.alone_sqnr_db, ".1f"),
            _num(s.without_sqnr_db, ".1f"),
            _num(s.gain_db, "+.2f"),
        ]
        for s in sens.layers
    ]
    header = ["layer", "op", "SQNR alone", "SQNR without", "gain dB"]
    top = _table(header, rows[:SENSITIVE_LAYERS], numeric=(2, 3, 4), mono=(0,))
    if len(rows) <= OPEN_ROWS:
        return _section("Layer sensitivity", intro, top, key="sensitivity")
    everything = _table(header, rows, key="sensitivity", numeric=(2, 3, 4), mono=(0,))
    more = _collapsible(f"All {len(rows)} layers", everything, opened=False)
    return _section("Layer sensitivity", intro, top, more, key="sensitivity")


def _latency(lat: LatencySummary | None) -> Html:
    if lat is None:
        return Html("")
    intro = _tag(
        "p",
        f"Batch 1, {_plural(lat.threads, 'thread')}, {lat.runs} interleaved runs per model: "
        f"float median {lat.float_median_ms:.3f} ms (p90 {lat.float_p90_ms:.3f}), int8 median "
        f"{lat.int8_median_ms:.3f} ms (p90 {lat.int8_p90_ms:.3f}).",
    )
    if not (lat.float_ops_ms or lat.int8_ops_ms):
        return _section("Latency", intro, key="latency")
    chart = _chart(lambda: charts.latency_chart(lat.float_ops_ms, lat.int8_ops_ms))
    ops = sorted(
        set(lat.float_ops_ms) | set(lat.int8_ops_ms),
        key=lambda op: -(lat.float_ops_ms.get(op, 0.0) + lat.int8_ops_ms.get(op, 0.0)),
    )
    rows = [
        [op, _num(lat.float_ops_ms.get(op), ".4f"), _num(lat.int8_ops_ms.get(op), ".4f")]
        for op in ops
    ]
    table = _table(["op (as run)", "float ms", "int8 ms"], rows, key="op-latency", numeric=(1, 2))
    return _section("Latency per op type", intro, chart, table, key="latency")


def _ops(report: Report) -> Html:
    m = report.model
    ops = sorted(set(m.float_ops) | set(m.int8_ops))
    rows = [[op, m.float_ops.get(op, 0), m.int8_ops.get(op, 0), _change(m, op)] for op in ops]
    table = _table(["op", "float", "int8", "change"], rows, key="ops", numeric=(1, 2, 3))
    return _section("Op histogram", table, key="ops")


def _change(m: ModelSummary, op: str) -> str:
    delta = m.int8_ops.get(op, 0) - m.float_ops.get(op, 0)
    return f"{delta:+d}" if delta else ""


def _nodes(report: Report) -> Html:
    if not report.nodes:
        return Html("")
    reasons = _join(
        [_badge(f"{reason}: {count}", "neutral") for reason, count in report.reasons().items()],
        " ",
    )
    rows = [
        [
            n.node,
            n.op_type,
            _badge("yes", "pass") if n.quantized else _badge("no", "warn"),
            n.reason,
            n.detail,
        ]
        for n in report.nodes
    ]
    header = ["node", "op", "int8", "reason", "detail"]
    table = _table(header, rows, key="nodes", mono=(0,), nowrap=(1, 2, 3))
    summary = f"All {_plural(len(report.nodes), 'node')}, {report.quantized_nodes} quantized"
    opened = len(rows) <= OPEN_ROWS
    # A collapsed table must not hide what matters most: the nodes left in float.
    float_rows = [row for row, node in zip(rows, report.nodes, strict=True) if not node.quantized]
    left_float = (
        [
            _tag("h3", f"Left in float ({len(float_rows)})"),
            _table(header, float_rows, key="float-nodes", mono=(0,), nowrap=(1, 2, 3)),
        ]
        if float_rows and not opened
        else []
    )
    return _section(
        "Nodes",
        _tag("p", reasons),
        *left_float,
        _collapsible(summary, table, opened=opened),
        key="nodes",
    )


def _rewrites(report: Report) -> Html:
    if not report.rewrites:
        return Html("")
    rows = [
        [
            r.pass_name,
            _join([_tag("div", n) for n in r.nodes]),
            _badge("yes", "pass") if r.applied else _badge("no", "warn"),
            r.detail,
        ]
        for r in report.rewrites
    ]
    table = _table(["pass", "nodes", "applied", "detail"], rows, key="rewrites", mono=(1,))
    applied = sum(r.applied for r in report.rewrites)
    summary = f"{_plural(len(rows), 'rewrite')}, {applied} applied"
    return _section(
        "Float-graph rewrites",
        _collapsible(summary, table, opened=len(rows) <= OPEN_ROWS),
        key="rewrites",
    )


def _notes(notes: list[str]) -> Html:
    if not notes:
        return Html("")
    return _section("Notes", _tag("ul", _join([_tag("li", n) for n in notes])), key="notes")


def _environment(report: Report) -> Html:
    rows: list[list[object]] = []
    env = report.environment
    if env is not None:
        rows += [
            ["cpu", env.cpu],
            ["int8 instructions", ", ".join(env.int8_instructions) or "none"],
            ["timing threads", env.threads],
            ["python", env.python],
        ]
    rows += [
        ["qconv", report.qconv_version],
        ["onnx", report.onnx_version],
        ["onnxruntime", report.onnxruntime_version],
        ["report schema", report.schema_version],
    ]
    if env is not None:
        rows += [["model sha256", env.model_sha256], ["calibration sha256", env.calibration_sha256]]
    table = _table(["", ""], rows, key="environment", mono=(1,), nowrap=(0,))
    if not report.options:
        return _section("Environment", table, key="environment")
    options = [[key, _option(value)] for key, value in report.options.items()]
    options_table = _table(["", ""], options, key="options", mono=(1,), nowrap=(0,))
    return _section("Environment", table, _tag("h3", "Options"), options_table, key="environment")


def _option(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return "(default)" if value is None else str(value)


_STYLE = """
:root {
  --fg: #1f2328; --muted: #59636e; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa;
  --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; --accent: #0969da;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
}
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--soft);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
.page { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.paths { margin: 0 0 10px; color: var(--muted); overflow-wrap: anywhere; }
code, .mono { font-family: var(--mono); font-size: 12.5px; }
td.mono { overflow-wrap: anywhere; min-width: 14em; }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
section { background: var(--bg); border: 1px solid var(--line); border-radius: 8px;
  padding: 18px 20px; margin-top: 18px; }
section > p { margin: 0 0 10px; color: var(--muted); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; border: 1px solid transparent; white-space: nowrap; }
.badge.pass { color: var(--pass); background: var(--pass-bg); border-color: #aceebb; }
.badge.warn { color: var(--warn); background: var(--warn-bg); border-color: #eed888; }
.badge.neutral { color: var(--muted); background: var(--soft); border-color: var(--line); }
.banner { margin-top: 16px; padding: 14px 18px; border-radius: 8px; background: var(--fail);
  color: #fff; font-weight: 700; font-size: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
  gap: 12px; background: none; border: none; padding: 0; }
.card { background: var(--bg); border: 1px solid var(--line); border-left: 5px solid var(--line);
  border-radius: 8px; padding: 12px 14px; }
.card.pass { border-left-color: var(--pass); }
.card.warn { border-left-color: var(--warn); }
.card.fail { border-left-color: var(--fail); background: var(--fail-bg); }
.card-title { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; font-weight: 600; }
.card-value { font-size: 20px; font-weight: 650; margin: 2px 0; }
.card-value .arrow { color: var(--muted); font-weight: 400; }
.card-detail { color: var(--muted); font-size: 12.5px; overflow-wrap: anywhere; }
.verdict { padding: 0 10px; border-radius: 6px; color: #fff; }
.verdict.pass { background: var(--pass); }
.verdict.fail { background: var(--fail); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 5px 10px;
  border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
#environment-table td:first-child, #options-table td:first-child {
  width: 16em; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover { background: #f3f6fa; }
details { margin-top: 8px; }
summary { cursor: pointer; color: var(--accent); font-weight: 600; margin-bottom: 8px; }
figure.chart { margin: 0 0 8px; }
figure.chart svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
.no-charts { padding: 10px 14px; border: 1px dashed var(--warn); background: var(--warn-bg);
  border-radius: 6px; color: var(--fg) !important; }
ul { margin: 0; padding-left: 20px; }
"""
