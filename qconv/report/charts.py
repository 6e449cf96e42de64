"""Charts for the HTML report, drawn with matplotlib as inline SVG; the one module importing it.

Guarantees:
    * matplotlib is optional (the ``report`` extra) and imported only inside the
      functions here; :func:`available` says whether charts can be drawn, and the ``*_chart``
      functions raise :class:`ImportError` when they cannot.
    * Each chart is one ``<svg>`` element, ready to inline in HTML: no XML prolog, no metadata,
      no namespace declarations (HTML supplies them), text drawn as paths (no font files, no
      network), and every ``id`` prefixed with the chart's ``key`` so several charts can share
      one page without clashing ids.
    * The same input gives byte-identical SVG: ids come from a fixed hash salt and no date is
      written. Figures are built with the object-oriented API (no pyplot), so drawing leaves
      no global state behind (no backend switch, no open figures).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from qconv.report.model import TensorEntry

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Colours shared with the page's CSS, so charts and cards speak the same language.
FLOAT_COLOUR = "#8c959f"
INT8_COLOUR = "#0969da"
WORST_COLOUR = "#cf222e"

# Width of one worst-tensor name in the SQNR chart, as a fraction of the axes width.
LABEL_WIDTH = 0.19

_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "qconv",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
}
_ID_REFERENCE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
# Inline SVG in HTML is in the SVG namespace without these (and xlink:href still resolves), and
# without them the page contains no http address a reader might mistake for a fetch.
_NAMESPACES = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def available() -> bool:
    """Whether matplotlib can be imported (charts can be drawn)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def short_name(tensor: str, limit: int = 32) -> str:
    """A tensor name short enough for a chart label, keeping its most specific end.

    ``/features/features.3/body/body.1/body.1.0/Conv_output_0`` becomes ``body.1.0/Conv``:
    the ``_output_0`` suffix goes, then the last two path parts are kept, then the front is cut
    to ``limit`` characters with a leading ellipsis.
    """
    name = re.sub(r"_output_0$", "", tensor)
    parts = [p for p in name.split("/") if p]
    name = "/".join(parts[-2:]) if parts else name
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def sqnr_chart(tensors: Sequence[TensorEntry], highlight: int = 5) -> str:
    """SQNR of each measured tensor in graph order, the ``highlight`` worst in red and named.

    The x axis is the tensor's position in ``tensors`` (its ``#`` in the page's table), so long
    names never crowd the ticks; only the highlighted points carry a (shortened) name.
    """
    points = [
        (i, t.sqnr_db)
        for i, t in enumerate(tensors)
        if t.sqnr_db is not None and math.isfinite(t.sqnr_db)
    ]
    worst = sorted(points, key=lambda p: p[1])[:highlight]
    with _figure(width=11.0, height=3.8) as fig:
        ax = fig.add_subplot()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color=INT8_COLOUR,
            marker="o",
            markersize=3.5,
            linewidth=1.2,
            label="SQNR of the int8 tensor",
        )
        ax.scatter(
            [p[0] for p in worst],
            [p[1] for p in worst],
            color=WORST_COLOUR,
            s=36,
            zorder=3,
            label=f"the {len(worst)} worst",
        )
        _label_worst(ax, tensors, worst)
        ax.set_xlabel("tensor # in graph order")
        ax.set_ylabel("SQNR (dB, higher is better)")
        ax.set_xlim(-0.5, max(len(tensors) - 0.5, 0.5))
        _pad_ylim(ax, [p[1] for p in points])
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper right", frameon=False)
        fig.tight_layout()
        return _svg(fig, "sqnr")


def histogram_chart(tensor: TensorEntry, key: str) -> str:
    """The calibration histogram of ``tensor`` on a log scale, with its ranges.

    Red dashed lines mark the chosen clipping range, grey dotted lines the observed range (the
    two coincide for ``minmax``).
    Raises ValueError when the tensor kept no histogram.
    """
    if tensor.histogram is None:
        raise ValueError(f"tensor {tensor.tensor!r} kept no histogram")
    edges, counts = tensor.histogram.edges, tensor.histogram.counts
    with _figure(width=5.6, height=3.0) as fig:
        ax = fig.add_subplot()
        ax.stairs(counts, edges, fill=True, color=INT8_COLOUR, baseline=0.7)
        for bound in tensor.observed:
            ax.axvline(bound, color=FLOAT_COLOUR, linestyle=":", linewidth=1.6)
        for bound in tensor.chosen:
            ax.axvline(bound, color=WORST_COLOUR, linestyle="--", linewidth=1.2)
        ax.plot([], [], color=FLOAT_COLOUR, linestyle=":", linewidth=1.6, label="observed")
        ax.plot([], [], color=WORST_COLOUR, linestyle="--", label="chosen")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.set_xlim(*_span([*edges, *tensor.observed, *tensor.chosen]))
        sqnr = "" if tensor.sqnr_db is None else f" — {tensor.sqnr_db:.1f} dB"
        ax.set_title(short_name(tensor.tensor, limit=28) + sqnr, loc="left")
        ax.set_xlabel("value")
        ax.set_ylabel("count (log)")
        # Above the axes, right of the title: a legend inside would hide bars.
        ax.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=2,
            frameon=False,
            fontsize=8,
            borderaxespad=0.2,
        )
        fig.tight_layout()
        return _svg(fig, key)


def latency_chart(float_ops_ms: dict[str, float], int8_ops_ms: dict[str, float]) -> str:
    """Milliseconds per run for each op type as onnxruntime ran it, float and int8 side by side.

    Op types are sorted by their total time, the most expensive on top.
    """
    ops = sorted(
        set(float_ops_ms) | set(int8_ops_ms),
        key=lambda op: float_ops_ms.get(op, 0.0) + int8_ops_ms.get(op, 0.0),
    )
    rows = range(len(ops))
    with _figure(width=11.0, height=max(2.2, 0.36 * len(ops) + 1.0)) as fig:
        ax = fig.add_subplot()
        height = 0.4
        for offset, times, colour, label in (
            (height / 2, float_ops_ms, FLOAT_COLOUR, "float"),
            (-height / 2, int8_ops_ms, INT8_COLOUR, "int8"),
        ):
            bars = ax.barh(
                [r + offset for r in rows],
                [times.get(op, 0.0) for op in ops],
                height=height,
                color=colour,
                label=label,
            )
            # Small ops have bars too thin to read: every bar carries its number.
            ax.bar_label(
                bars,
                labels=[f"{times[op]:.3g}" if op in times else "" for op in ops],
                padding=3,
                fontsize=7,
                color="#59636e",
            )
        ax.margins(x=0.08)
        ax.set_yticks(list(rows), ops)
        ax.set_ylim(-0.6, len(ops) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("ms per run (onnxruntime profiler)")
        ax.legend(loc="lower right", frameon=False)
        fig.tight_layout()
        return _svg(fig, "latency")


def _label_worst(ax: Axes, tensors: Sequence[TensorEntry], worst: list[tuple[int, float]]) -> None:
    """Name the worst points along the bottom of the axes, each name as close under its point as
    the names' widths allow (see :func:`spread`); leader lines join name and point.

    Names alternate between two rows, so neighbours may sit half a name apart without touching.
    """
    if not worst:
        return
    worst = sorted(worst)
    low, high = ax.get_xlim()
    targets = [(index - low) / (high - low) for index, _ in worst]
    centres = spread(targets, LABEL_WIDTH / 2)
    for row, (x, (index, sqnr)) in enumerate(zip(centres, worst, strict=True)):
        ax.annotate(
            f"#{index} {short_name(tensors[index].tensor, limit=28)}",
            xy=(index, sqnr),
            xytext=(x, 0.04 if row % 2 else 0.13),
            textcoords="axes fraction",
            ha="center",
            va="bottom",
            color=WORST_COLOUR,
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": WORST_COLOUR, "linewidth": 0.6, "shrinkB": 4},
        )


def spread(targets: Sequence[float], width: float) -> list[float]:
    """Centres in [0, 1] for labels ``width`` wide, each as near its target as no overlap allows.

    ``targets`` must be sorted. Labels are pushed right past their left neighbour, then left
    from the right edge; when they cannot all fit, ``width`` shrinks to share the line evenly.
    Example: ``spread([0.5, 0.5], 0.2)`` is ``[0.5, 0.7]`` (the second moves right of the
    first) and ``spread([0.95, 0.97], 0.2)`` is ``[0.7, 0.9]`` (both pulled in from the edge).
    """
    width = min(width, 1.0 / max(len(targets), 1))
    centres: list[float] = []
    for target in targets:
        floor = centres[-1] + width if centres else width / 2
        centres.append(max(target, floor))
    ceiling = 1.0 - width / 2
    for i in reversed(range(len(centres))):
        centres[i] = min(centres[i], ceiling)
        ceiling = centres[i] - width
    return centres


def _pad_ylim(ax: Axes, values: list[float]) -> None:
    """Room below the lowest point for the labels that hang under it."""
    if not values:
        return
    low, high = min(values), max(values)
    extent = max(high - low, 1.0)
    ax.set_ylim(low - 0.6 * extent, high + 0.15 * extent)


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    margin = 0.06 * (high - low) or 1.0
    return low - margin, high + margin


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    """A pyplot-free figure (inches) under qconv's chart style."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        yield Figure(figsize=(width, height))


def _svg(fig: Figure, key: str) -> str:
    """``fig`` as an inline ``<svg>`` element whose ids are prefixed with ``key``."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    start = text.index("<svg")
    root_end = text.index(">", start)
    text = _NAMESPACES.sub("", text[start:root_end]) + _METADATA.sub("", text[root_end:])
    return _ID_REFERENCE.sub(lambda m: f"{m.group(1)}{key}-{m.group(2)}", text)
