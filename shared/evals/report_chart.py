"""The report's pass-rate chart (shared/evals/report.py): the geometry of an SVG line chart, a point per
run, oldest to newest. Numbers only: the template draws it and escapes the run ids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.evals.records import RunRecord

#: the SVG's width and the plot's height (its viewBox: it scales to the page's width)
WIDTH, PLOT_HEIGHT = 960, 204
LEFT, RIGHT, TOP = 64, 24, 16
#: the room under the plot: for the axis's title, and the run ids written level or slanted
BOTTOM_LEVEL, BOTTOM_SLANTED = 60, 100
#: the first and last points' distance from the plot's edges
PAD = 56
#: the most run ids written under the x axis (the others keep their tooltip)
MAX_X_LABELS = 12
#: a run id's width under the x axis, per character (12px text), and the most characters of a slanted one
CHAR_PX, SLANTED_CHARS = 7.0, 14
#: the tops the y axis may have: the lowest that clears every point (low pass rates still show their changes)
Y_TOPS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class Point:
    run_id: str
    x: float
    y: float
    pass_rate: float
    created_at: datetime | None
    #: the run the report is about
    current: bool
    #: its pass rate is of the cases scored so far (the run has not finished)
    provisional: bool


@dataclass(frozen=True)
class Tick:
    at: float
    text: str
    title: str = ""


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    points: list[Point]
    #: the line's SVG path ("" with fewer than two points)
    path: str
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    #: the run ids under the x axis are slanted (too many to write level)
    slanted: bool
    #: earlier runs with no scores (not finished), not drawn
    left_out: int


def _pass_rate(scores: dict[str, Any] | None) -> float | None:
    v = (scores or {}).get("pass_rate")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 else None


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "…"


def pass_rate_chart(earlier: Sequence[RunRecord], run: RunRecord, rate: float | None) -> Chart:
    """`earlier`: the suite's earlier runs, oldest first; `rate`: the run's pass rate (None: not drawn)."""
    found: list[tuple[RunRecord, float, bool]] = []
    for r in earlier:
        if (p := _pass_rate(r.scores)) is not None:
            found.append((r, p, False))
    if rate is not None:
        found.append((run, rate, run.scores is None))
    inner_w = WIDTH - LEFT - RIGHT
    step = (inner_w - 2 * PAD) / (len(found) - 1) if len(found) > 1 else 0.0
    every = max(1, math.ceil(len(found) / MAX_X_LABELS))
    # the characters that fit level between two labels, and around the first and last (centred on them)
    level = min(int((step * every or inner_w) * 0.9 / CHAR_PX), int(2 * (LEFT + PAD) / CHAR_PX) - 2)
    slanted = level < 10
    bottom = BOTTOM_SLANTED if slanted else BOTTOM_LEVEL
    inner_h = PLOT_HEIGHT
    y_top = next(t for t in Y_TOPS if t >= max((p for _, p, _ in found), default=0) + 0.04 or t == 1.0)
    points = [Point(run_id=r.id, x=round(LEFT + (PAD + i * step if len(found) > 1 else inner_w / 2), 2),
                    y=round(TOP + (1 - p / y_top) * inner_h, 2), pass_rate=p, created_at=r.created_at,
                    current=r.id == run.id, provisional=provisional)
              for i, (r, p, provisional) in enumerate(found)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{p.x},{p.y}" for i, p in enumerate(points)) if len(points) > 1 else ""
    last = len(points) - 1
    x_ticks = [Tick(at=p.x, text=_short(p.run_id, SLANTED_CHARS if slanted else level), title=p.run_id)
               for i, p in enumerate(points) if i == last or (i % every == 0 and last - i >= every)]
    y_ticks = [Tick(at=round(TOP + (1 - i / 4) * inner_h, 2), text=f"{y_top * i / 4:.0%}") for i in range(5)]
    return Chart(width=WIDTH, height=TOP + PLOT_HEIGHT + bottom, left=LEFT, right=RIGHT, top=TOP, bottom=bottom,
                 points=points, path=path, y_ticks=y_ticks, x_ticks=x_ticks, slanted=slanted,
                 left_out=sum(1 for r in earlier if _pass_rate(r.scores) is None))
