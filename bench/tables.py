"""Plain-text tables for the benchmarks: text columns left, numbers right, rules between groups."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def print_aligned(
    columns: Sequence[str],
    cells: Sequence[Sequence[str]],
    left: Collection[int],
    groups: Sequence[object],
) -> None:
    """Print ``columns`` and ``cells`` aligned, with a rule wherever ``groups`` changes.

    ``left`` holds the indexes of the left-aligned columns; ``groups[i]`` is row i's group.
    """
    widths = [max(len(c) for c in column) for column in zip(columns, *cells, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if i in left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(columns))
    print(line(columns))
    print(rule)
    for index, values in enumerate(cells):
        print(line(values))
        if index + 1 < len(cells) and groups[index + 1] != groups[index]:
            print(rule)
