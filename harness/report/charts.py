"""Every chart of the report, as inline SVG.

Mean score per principle (dot and whisker), a line with a shaded band and optional labelled points,
and horizontal bars.

Only numbers and our own labels go into the SVG; any text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from markupsafe import Markup, escape

from harness.records import Constitution

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, readable on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#999933"]


@dataclass
class Frame:
    """Plot area and data ranges of one chart."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    pad: int = 34

    def x(self, v: float) -> float:
        """Horizontal pixel position of data value ``v``."""
        lo, hi = self.x_range
        return self.pad + (v - lo) / ((hi - lo) or 1) * (self.width - self.pad - 8)

    def y(self, v: float) -> float:
        """Vertical pixel position of data value ``v`` (up is larger)."""
        lo, hi = self.y_range
        return (
            self.height - self.pad + 6 - (v - lo) / ((hi - lo) or 1) * (self.height - self.pad - 6)
        )


def _range(values: Sequence[float], margin: float = 0.05) -> tuple[float, float]:
    """The values' span, widened by ``margin`` of it on each side (by 0.5 when all are equal)."""
    good = [v for v in values if not math.isnan(v)]
    if not good:
        return 0.0, 1.0
    lo, hi = min(good), max(good)
    pad = (hi - lo) * margin if hi > lo else 0.5
    return lo - pad, hi + pad


def _path(f: Frame, xs: Sequence[float], ys: Sequence[float]) -> str:
    pts = [(f.x(x), f.y(y)) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    return " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(pts))


def _band(f: Frame, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> str:
    top = [(f.x(x), f.y(h)) for x, h in zip(xs, hi, strict=True) if not math.isnan(h)]
    bottom = [(f.x(x), f.y(low)) for x, low in zip(xs, lo, strict=True) if not math.isnan(low)][
        ::-1
    ]
    pts = top + bottom
    return "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in pts) + " Z" if pts else ""


def _axes(f: Frame, xlabel: str, ylabel: str) -> str:
    x0, x1 = f.x_range
    y0, y1 = f.y_range
    base = f.height - f.pad + 6
    return (
        f'<line x1="{f.pad}" y1="{base}" x2="{f.width - 8}" y2="{base}" stroke="#8c959f"/>'
        f'<line x1="{f.pad}" y1="6" x2="{f.pad}" y2="{base}" stroke="#8c959f"/>'
        f'<text x="{f.pad}" y="{base + 12}" font-size="10">{x0:.3g}</text>'
        f'<text x="{f.width - 8}" y="{base + 12}" font-size="10" text-anchor="end">{x1:.3g}</text>'
        f'<text x="{f.pad - 3}" y="{base}" font-size="10" text-anchor="end">{y0:.2f}</text>'
        f'<text x="{f.pad - 3}" y="14" font-size="10" text-anchor="end">{y1:.2f}</text>'
        f'<text x="{(f.width + f.pad) / 2:.0f}" y="{f.height - 2}" font-size="10" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
        f'<text x="10" y="{f.height / 2:.0f}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 10 {f.height / 2:.0f})">{escape(ylabel)}</text>'
    )


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float],
    lo: Sequence[float],
    hi: Sequence[float],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    points: Sequence[tuple[float, float, str]] = (),
    width: int = 460,
    height: int = 220,
) -> Markup:
    """A line with a shaded interval band, optional labelled points, axes with end labels."""
    y_all = [*ys, *lo, *hi, *(p[1] for p in points)]
    # the x axis spans the data exactly: its end labels are the first and last x (1 and n verdicts)
    f = Frame(width, height, _range([*xs, *(p[0] for p in points)], margin=0.0), _range(y_all))
    dots = "".join(_labelled_dot(f, px, py, label) for px, py, label in points)
    svg = (
        f'<svg class="mini" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{escape(title)}</title>"
        f'<path d="{_band(f, xs, lo, hi)}" fill="#0072B2" fill-opacity="0.15" stroke="none"/>'
        f'<path d="{_path(f, xs, ys)}" fill="none" stroke="#0072B2" stroke-width="1.5"/>'
        f"{dots}{_axes(f, xlabel, ylabel)}</svg>"
    )
    return Markup(svg)


def _labelled_dot(f: Frame, px: float, py: float, label: str) -> str:
    """A point with its label, written leftwards in the right half so it stays inside the chart."""
    x, y = f.x(px), f.y(py)
    right = x > (f.pad + f.width) / 2
    tx, anchor = (x - 4, "end") if right else (x + 4, "start")
    return (
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#0072B2"/>'
        f'<text x="{tx:.1f}" y="{y - 4:.1f}" font-size="9" text-anchor="{anchor}">'
        f"{escape(label)}</text>"
    )


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    lo: Sequence[float] | None = None,
    hi: Sequence[float] | None = None,
    log: bool = False,
    reference: float | None = None,
    fmt: str | Callable[[float], str] = "{:.3g}",
    width: int = 300,
) -> Markup:
    """Horizontal bars, one per label; NaN bars are left empty and say "n/a".

    Optional: interval whiskers, a dashed reference line, and a log10 axis (for sizes and rates
    spanning decades).
    """
    show = fmt if callable(fmt) else fmt.format

    def t(v: float) -> float:
        return math.log10(v) if log and v > 0 else (math.nan if log else v)

    shown = [t(v) for v in values]
    ends = [*shown, *(t(v) for v in (hi or [])), 0.0 if reference is None else t(reference)]
    top = max((v for v in ends if not math.isnan(v)), default=0.0)
    left = min(
        [0.0, *(v for v in shown if not math.isnan(v))]
    )  # below 0 only on a log axis (values < 1)
    label_w, row_h = min(150, max(40, 6 * max((len(x) for x in labels), default=0) + 8)), 22
    height = row_h * len(labels) + 30
    f = Frame(
        width - 40, height, (left, top * 1.02 or 1.0), (0.0, 1.0), pad=label_w
    )  # 40 px for the values
    parts = []
    for i, (label, v) in enumerate(zip(labels, shown, strict=True)):
        y = 8 + i * row_h
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 12}" font-size="10" text-anchor="end">{escape(label)}</text>'
        )
        if math.isnan(v):  # unknown, or 0 on a log axis
            text = "n/a" if math.isnan(values[i]) else show(values[i])
            parts.append(
                f'<text x="{label_w + 4}" y="{y + 12}" font-size="9" fill="#57606a">{escape(text)}</text>'
            )
            continue
        x1 = f.x(v)
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{max(x1 - label_w, 1):.1f}" height="{row_h - 8}" '
            f'fill="#0072B2" fill-opacity="0.75"/>'
        )
        if (
            lo is not None
            and hi is not None
            and not math.isnan(t(lo[i]))
            and not math.isnan(t(hi[i]))
        ):
            parts.append(
                f'<line x1="{f.x(t(lo[i])):.1f}" y1="{y + 9}" x2="{f.x(t(hi[i])):.1f}" y2="{y + 9}" '
                'stroke="#24292f" stroke-width="1.2"/>'
            )
        parts.append(
            f'<text x="{x1 + 3:.1f}" y="{y + 12}" font-size="9">{escape(show(values[i]))}</text>'
        )
    base = height - 22
    if reference is not None:
        xr = f.x(t(reference))
        parts.append(
            f'<line x1="{xr:.1f}" y1="4" x2="{xr:.1f}" y2="{base}" stroke="#D55E00" stroke-dasharray="3,2"/>'
        )
    parts.append(
        f'<line x1="{label_w}" y1="{base}" x2="{width - 8}" y2="{base}" stroke="#8c959f"/>'
        f'<text x="{(width + label_w) / 2:.0f}" y="{height - 6}" font-size="10" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
    )
    return Markup(
        f'<svg class="mini" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
    )


# --------------------------------------------------------------------------- mean score per
# principle


def score_chart(
    table: pd.DataFrame,
    constitution: Constitution,
    judge: str,
    generators: list[str],
    colours: dict[str, str],
) -> Markup:
    """Dot-and-whisker plot of mean score with CI per principle for one judge, as inline SVG."""
    rows = table[table["judge"] == judge]
    principles = [p for p in constitution.principles if p.id in set(rows["principle"].unique())]
    top = max((p.scale_max for p in constitution.principles), default=5)
    band = 12 * len(generators) + 16
    width, left, right, head = 520, 120, 16, 10
    height = head + band * len(principles) + 44
    x = _scale(1, top, left, width - right)
    parts = [_axis(x, top, head, head + band * len(principles))]
    for i, principle in enumerate(principles):
        y0 = head + i * band
        parts.append(
            _principle_band(
                principle.id, principle.pass_threshold, x, y0, band, left, width - right, i
            )
        )
        for j, gen in enumerate(generators):
            hit = rows[(rows["principle"] == principle.id) & (rows["generator"] == gen)]
            if not hit.empty:
                parts.append(_dot(hit.iloc[0].to_dict(), x, y0 + 14 + 12 * j, colours[gen]))
    label = f"Mean score per principle for judge {judge}, with 95% bootstrap confidence intervals"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}">{"".join(parts)}</svg>'
    )


def _scale(lo: float, hi: float, x0: float, x1: float) -> Callable[[float], float]:
    return lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)


def _axis(x: Callable[[float], float], top: int, y0: int, y1: int) -> str:
    """Vertical gridlines at each rubric score, tick labels and the axis title."""
    ticks = "".join(
        f'<line class="grid" x1="{x(k):.1f}" x2="{x(k):.1f}" y1="{y0}" y2="{y1}"/>'
        f'<text class="tick" x="{x(k):.1f}" y="{y1 + 14}" text-anchor="middle">{k}</text>'
        for k in range(1, top + 1)
    )
    mid = (x(1) + x(top)) / 2
    title = f'<text class="axis-title" x="{mid:.1f}" y="{y1 + 34}" text-anchor="middle">Mean score (95% CI)</text>'
    return ticks + title


def _principle_band(
    pid: str,
    threshold: float,
    x: Callable[[float], float],
    y0: int,
    band: int,
    x0: int,
    x1: int,
    i: int,
) -> str:
    """A principle's row: shaded background on alternate rows, its label and its pass threshold."""
    shade = (
        f'<rect class="band" x="{x0}" y="{y0}" width="{x1 - x0}" height="{band}"/>'
        if i % 2 == 0
        else ""
    )
    label = f'<text class="label" x="{x0 - 8}" y="{y0 + band / 2 + 4:.1f}" text-anchor="end">{escape(pid)}</text>'
    tx = x(threshold)
    mark = (
        f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{y0 + 2}" y2="{y0 + band - 2}">'
        f"<title>pass threshold {threshold:g}</title></line>"
    )
    return shade + label + mark


def _dot(r: dict[str, Any], x: Callable[[float], float], y: float, colour: str) -> str:
    """One generator's mean with its whisker, and a tooltip with the numbers."""
    if pd.isna(r["mean"]):
        return ""
    tip = escape(
        f"{r['generator']}: {r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}], n={r['n']}"
    )
    return (
        f"<g><title>{tip}</title>"
        f'<line x1="{x(r["ci_low"]):.1f}" x2="{x(r["ci_high"]):.1f}" y1="{y}" y2="{y}" stroke="{colour}" '
        f'stroke-width="2"/><circle cx="{x(r["mean"]):.1f}" cy="{y}" r="4.5" fill="{colour}"/></g>'
    )


def si(value: float) -> str:
    """A count in short form: 8.06k, 134.5M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.4g}{suffix}"
    return f"{value:.3g}"
