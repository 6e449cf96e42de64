"""The HTML report: self-contained, complete, faithful to the JSON report, usable without charts.

The page is built the way users build it (``qconv quantize ... --report out.html``) and read
back with the standard library's HTML parser, never with string matching on the markup.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from qconv.cli import main
from qconv.report import charts
from qconv.report.html import CHARTS_HINT, to_html
from qconv.report.model import (
    CalibrationSummary,
    EvaluationSummary,
    GateResult,
    HistogramData,
    LatencySummary,
    ModelSummary,
    NodeEntry,
    Report,
    TensorEntry,
)
from tests.conftest import SAMPLES

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
URL_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "poster", "data", "action", "background"}


@dataclass
class Element:
    """A parsed element: enough of a DOM to find things by tag, id and class."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None):
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter(tag)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def by_id(self, key: str) -> Element:
        found = [e for e in self.iter() if e.attrs.get("id") == key]
        assert len(found) == 1, f"{len(found)} elements with id {key!r}"
        return found[0]


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(page: str) -> Element:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def quantize(out: Path, *extra: str):
    """``qconv quantize`` on the sample ResNet writing ``out/r.html`` and ``out/r.json``."""
    return invoke(
        "quantize",
        str(SAMPLES / "digits_resnet.onnx"),
        "-o",
        str(out / "model.int8.onnx"),
        "--calib",
        str(SAMPLES / "digits_resnet_calib.npz"),
        "--eval",
        str(SAMPLES / "digits_resnet_eval.npz"),
        "--labels",
        "label",
        "--latency-runs",
        "5",
        "--report",
        str(out / "r.html"),
        "--report",
        str(out / "r.json"),
        *extra,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Element, dict, str]:
    """The parsed page, the JSON report of the same run, and the page's text."""
    out = tmp_path_factory.mktemp("html")
    result = quantize(out)
    assert result.exit_code == 0, result.output
    page = (out / "r.html").read_text()
    return parse(page), json.loads((out / "r.json").read_text()), page


def test_page_fetches_nothing(built):
    root, _, page = built
    for element in root.iter():
        for name, value in element.attrs.items():
            if name in URL_ATTRIBUTES:
                assert value.startswith("#"), f"<{element.tag} {name}={value!r}> leaves the page"
        if element.tag == "link":
            assert "stylesheet" not in element.attrs.get("rel", ""), "external style sheet"
    assert not list(root.iter("script")), "the page needs no script"
    assert not list(root.iter("img")), "images are inline SVG, not <img>"
    style = "".join(s.text() for s in root.iter("style"))
    assert "@import" not in style and "url(" not in style
    assert not re.search(r"(?i)\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", page)
    # The sample run holds no address, so none may appear at all (SVG namespaces included).
    assert "http://" not in page and "https://" not in page


@pytest.mark.skipif(not charts.available(), reason="matplotlib is not installed")
def test_charts_are_inline_svg_sqnr_and_histograms(built):
    root, report, _ = built
    assert len(list(root.iter("svg"))) >= 2
    assert len(list(root.by_id("sqnr").iter("svg"))) == 1
    histograms = list(root.by_id("histograms").iter("svg"))
    kept = [t for t in report["tensors"] if t["histogram"]]
    assert 1 <= len(histograms) <= len(kept)
    ids = [e.attrs["id"] for e in root.iter() if "id" in e.attrs]
    assert len(ids) == len(set(ids)), "charts share a page: their ids must not clash"
    assert not list(root.iter("text")), "SVG text must be drawn as paths (no fonts needed)"


def test_nodes_table_has_one_row_per_node(built):
    root, report, _ = built
    table = root.by_id("nodes-table")
    rows = list(next(table.iter("tbody")).iter("tr"))
    assert len(rows) == len(report["nodes"])
    shown = [next(row.iter("td")).text() for row in rows]
    assert shown == [n["node"] for n in report["nodes"]]


def shown_accuracy(root: Element) -> dict[str, float]:
    """The accuracies the summary card shows, as fractions."""
    metrics = {e.attrs["data-metric"]: e.text() for e in root.iter() if "data-metric" in e.attrs}
    return {
        name: float(metrics[key].rstrip("%")) / 100
        for key, name in (("float-accuracy", "float_accuracy"), ("int8-accuracy", "int8_accuracy"))
    }


def test_accuracy_shown_matches_the_json(built):
    root, report, _ = built
    for name, shown in shown_accuracy(root).items():
        assert shown == pytest.approx(report["evaluation"][name], abs=5e-5)


def test_accuracy_shown_keeps_float_and_int8_apart():
    # The sample model scores the same in float and int8, so a swap would go unseen above.
    evaluation = EvaluationSummary("eval.npz", 100, [], 0.97, 0.9123, 0.8765)
    shown = shown_accuracy(parse(to_html(tiny_report(evaluation=evaluation))))
    assert shown == pytest.approx({"float_accuracy": 0.9123, "int8_accuracy": 0.8765}, abs=5e-5)


def test_failing_gate_renders_a_fail_marker_naming_it(tmp_path):
    result = quantize(tmp_path, "--min-sqnr", "200")
    assert result.exit_code == 3, result.output
    root = parse((tmp_path / "r.html").read_text())
    failing = [e for e in root.iter() if "fail" in e.classes() and "min-sqnr" in e.text()]
    assert any("FAIL" in e.text() for e in failing)
    banners = [e.text() for e in root.iter("div") if "banner" in e.classes()]
    assert any("FAIL" in b and "min-sqnr" in b for b in banners)


def test_without_matplotlib_tables_render_with_the_install_hint(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert not charts.available()
    result = quantize(tmp_path)
    assert result.exit_code == 0, result.output
    root = parse((tmp_path / "r.html").read_text())
    report = json.loads((tmp_path / "r.json").read_text())
    assert not list(root.iter("svg"))
    hints = [e for e in root.iter("p") if "no-charts" in e.classes()]
    assert hints and all(CHARTS_HINT in e.text() for e in hints)
    assert CHARTS_HINT in root.by_id("sqnr").text()
    rows = list(next(root.by_id("nodes-table").iter("tbody")).iter("tr"))
    assert len(rows) == len(report["nodes"])
    assert len(list(next(root.by_id("worst-tensors-table").iter("tbody")).iter("tr"))) == 5


def tiny_report(**changes) -> Report:
    """A hand-made report with hostile strings and no evaluation, latency or environment."""
    hostile = '<script>alert("x")</script> & "quotes"'
    fields = {
        "qconv_version": "0",
        "onnx_version": "0",
        "onnxruntime_version": "0",
        "options": {"exclude": [hostile]},
        "model": ModelSummary(hostile, None, 1000, 300, 17, {"Conv": 1}, {"QLinearConv": 1}),
        "calibration": None,
        "nodes": [NodeEntry(hostile, "Conv", False, "excluded", hostile)],
        "tensors": [
            TensorEntry(
                hostile,
                (-1.0, 2.0),
                (-0.5, 1.5),
                0.01,
                128,
                "percentile",
                sqnr_db=12.0,
                histogram=HistogramData([-1.0, 0.0, 1.0, 2.0], [3, 0, 7]),
            )
        ],
        "notes": [hostile],
        "gates": [GateResult("min-sqnr", 20.0, 12.0, False, "short by 8")],
    }
    return Report(**{**fields, **changes})


def test_report_strings_are_escaped_and_missing_parts_are_skipped():
    page = to_html(tiny_report())
    root = parse(page)
    assert not list(root.iter("script"))
    assert '<script>alert("x")</script>' in root.by_id("notes").text()
    for missing in ("fidelity", "latency"):
        assert not [e for e in root.iter("section") if e.attrs.get("id") == missing]
    rows = list(next(root.by_id("nodes-table").iter("tbody")).iter("tr"))
    assert [td.text() for td in rows[0].iter("td")][2:4] == ["no", "excluded"]


def test_synthetic_calibration_raises_a_red_banner():
    synthetic = CalibrationSummary("minmax", 8, 0.1, "random", 1, synthetic=True)
    banners = [
        e.text()
        for e in parse(to_html(tiny_report(calibration=synthetic))).iter("div")
        if "banner" in e.classes()
    ]
    assert any("RANDOM" in b for b in banners)
    assert not any("RANDOM" in e.text() for e in parse(to_html(tiny_report())).iter("div"))


@pytest.mark.parametrize("int8_ms, phrase", [(2.0, "2.00× faster"), (5.0, "1.25× slower")])
def test_latency_says_faster_or_slower_not_a_fraction_faster(int8_ms, phrase):
    latency = LatencySummary(1, 50, 4.0, 4.4, int8_ms, int8_ms * 1.1)
    latency.inputs = {"x": [1, 3, 48, 192], "sr": []}
    root = parse(to_html(tiny_report(latency=latency)))
    (card,) = [e for e in root.iter("div") if e.attrs.get("data-card") == "latency"]
    assert phrase in card.text()
    assert "0.80" not in card.text()
    assert "batch 1: x 1x3x48x192, sr scalar" in card.text()  # samples may differ in size


def test_same_report_gives_the_same_page():
    report = tiny_report()
    first = to_html(report)
    assert to_html(report) == first
    if charts.available():
        assert "<svg" in first
        assert "<dc:date>" not in first and "<metadata>" not in first


@pytest.mark.parametrize(
    "targets",
    [[0.5, 0.5], [0.9, 0.92, 0.95, 0.97, 0.99], [0.0, 0.01], [0.1, 0.5, 0.9], [0.3] * 10],
)
def test_chart_labels_are_spread_without_overlap_inside_the_axes(targets):
    width = 0.19
    centres = charts.spread(targets, width)
    used = min(width, 1 / len(targets))
    assert all(b - a >= used - 1e-9 for a, b in itertools.pairwise(centres))
    assert used / 2 - 1e-9 <= centres[0] and centres[-1] <= 1 - used / 2 + 1e-9


def test_short_names_keep_the_specific_end():
    name = "/features/features.3/body/body.1/body.1.0/Conv_output_0"
    assert charts.short_name(name) == "body.1.0/Conv"
    assert charts.short_name("x" * 50, limit=10) == "…" + "x" * 9


def test_markdown_quotes_node_names_so_they_cannot_break_a_job_summary():
    from qconv.report.markdown import _code, _table, _text

    rows = _table(["node", "detail"], [[_code("two\nlines|x"), "a\nb"]]).splitlines()
    assert rows[2] == "| `two lines\\|x` | a b |"  # a name's line break would end the row
    assert _code("conv") == "`conv`"
    assert _code("flat`ten") == "``flat`ten``"
    assert _code("`edge") == "`` `edge ``"
    assert _text("kept float with a</td><b>x</b> & y") == (
        "kept float with a&lt;/td&gt;&lt;b&gt;x&lt;/b&gt; &amp; y"
    )


def test_an_output_the_int8_model_no_longer_tracks_gets_a_warning():
    from qconv.evaluate import Evaluation, OutputFidelity
    from qconv.report.build import _fidelity_notes

    evaluation = Evaluation(
        samples=10,
        outputs=[
            OutputFidelity("logits", 0.546, 0.7, 3.0),
            OutputFidelity("aux", 0.99, 20, 0.1),
            OutputFidelity("label", None, None, 4.0, exact_match=0.85),
            OutputFidelity("mask", None, None, 1.0, exact_match=0.95),
        ],
        top1_agreement=None,
        float_accuracy=None,
        int8_accuracy=None,
    )
    notes = _fidelity_notes(evaluation)
    assert len(notes) == 2
    assert notes[0].startswith("LOW FIDELITY: output 'logits' has cosine 0.546")
    assert notes[1].startswith("LOW FIDELITY: output 'label' equals float in 85.0% of its")


def test_an_int8_model_measured_slower_than_float_gets_a_warning():
    from qconv.report.build import _speed_notes
    from qconv.report.model import LatencySummary

    ops = {"Transpose": 3.66, "QLinearConv": 2.34, "QLinearAveragePool": 0.58, "Add": 0.01}
    slower = LatencySummary(1, 50, 4.53, 4.9, 7.37, 7.6, int8_ops_ms=ops)
    (note,) = _speed_notes(slower)
    assert note.startswith("SLOWER THAN FLOAT: int8 7.37 ms against float 4.53 ms")
    assert "Transpose 3.66 ms, QLinearConv 2.34 ms, QLinearAveragePool 0.58 ms" in note
    assert _speed_notes(LatencySummary(1, 50, 4.53, 4.9, 4.6, 4.9)) == []  # within noise
    assert _speed_notes(None) == []


def test_a_chart_histogram_that_reaches_the_last_bin_has_one_more_edge_than_bars():
    import numpy as np

    from qconv.calibrate.histogram import TensorStats
    from qconv.report.build import chart_histogram

    # The captcha CRNN's LSTM cell products filled bins up to the histogram's last one; with
    # 96-bar grouping the last group overran the end (96 edges for 96 bars: the chart crashed).
    stats = TensorStats(256)
    stats.update(np.linspace(-1, 1, 1001, dtype=np.float32))
    for first in (0, 100, 311):
        stats.counts[:] = 0
        stats.counts[first:] = 1  # every bin from ``first`` to the very last one
        chart = chart_histogram(stats)
        assert len(chart.edges) == len(chart.counts) + 1
        assert sum(chart.counts) == len(stats.counts) - first
        assert chart.edges[0] == stats.bin_edges()[first]
        assert chart.edges[-1] >= stats.bin_edges()[-1]
