"""Chart geometry for the dashboard's inline SVG: numbers in, coordinates and labels out.

The templates draw the SVG from these (no chart library, nothing fetched at run time); the live
endpoints send the same geometry so the page's script only swaps attributes. Times are RFC 3339
strings as the store keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# viewBox sizes; CSS scales a chart to its box, so a chart as wide as the page gets a wide
# viewBox (text stays about the size of the page's own)
WIDTH, HEIGHT = 640, 160  # a chart in a two-column grid
WIDE = 1280  # a chart across the page
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 56, 20, 8
STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def _t(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _nice_max(value: float) -> float:
    """The smallest of `STEPS` x 10^n at or above `value` (an axis that reads well)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** int(f"{value:e}".split("e")[1])
    for step in STEPS:
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


@dataclass(frozen=True)
class LineChart:
    points: str  # SVG polyline points
    y_max: float
    y_label: str
    x_labels: tuple[str, str]  # first and last sample time (HH:MM:SS)
    empty: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "y_max": self.y_max,
            "y_label": self.y_label,
            "x_labels": list(self.x_labels),
            "empty": self.empty,
        }


def line_chart(
    samples: list[tuple[str, float]], unit: str, floor_max: float = 0.0, scale: float = 1.0
) -> LineChart:
    """(time, value) samples → a polyline over the chart area; values divided by `scale`
    (bytes → GiB), the y axis from 0 to a round number at or above the largest value."""
    if not samples:
        return LineChart("", _nice_max(floor_max), unit, ("", ""), True)
    times = [_t(t) for t, _ in samples]
    values = [v / scale for _, v in samples]
    y_max = _nice_max(max([*values, floor_max / scale]))
    t0, t1 = times[0], times[-1]
    span = (t1 - t0) or 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    pts = []
    for t, v in zip(times, values, strict=True):
        x = PAD_LEFT + (t - t0) / span * inner_w if len(times) > 1 else PAD_LEFT + inner_w
        y = PAD_TOP + inner_h * (1 - min(v, y_max) / y_max)
        pts.append(f"{x:.1f},{y:.1f}")
    return LineChart(
        " ".join(pts), y_max, unit, (samples[0][0][11:19], samples[-1][0][11:19]), False
    )


def usage_charts(usage: list[dict[str, Any]]) -> dict[str, Any]:
    """The task page's CPU (cores busy) and memory (MiB, or GiB from 1 GiB up) charts from
    agents' usage samples."""
    cpu = [(s["time"], float(s["cpu_cores"])) for s in usage if s.get("cpu_cores") is not None]
    mem = [(s["time"], float(s["memory_bytes"])) for s in usage if s.get("memory_bytes")]
    limits = [s.get("memory_limit_bytes") or 0 for s in usage]
    small = max((v for _, v in mem), default=0.0) < 2**30
    unit, scale = ("MiB", 2**20) if small else ("GiB", 2**30)
    return {
        "cpu": line_chart(cpu, "cores"),
        "memory": line_chart(mem, unit, floor_max=0.0, scale=scale),
        "memory_limit_gib": (max(limits) / 2**30) if any(limits) else None,
    }


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    label: str
    title: str


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    y_max: float
    unit: str
    ghosts: list[Bar] = field(default_factory=list)  # e.g. the on-demand equivalent behind
    width: int = WIDE


def bar_chart(
    items: list[tuple[str, float, float]], unit: str = "USD", every_label: int = 5
) -> BarChart:
    """(label, value, ghost value) → bars; the ghost (on-demand equivalent) drawn behind."""
    if not items:
        return BarChart([], 1.0, unit)
    y_max = _nice_max(max(max(v, g) for _, v, g in items))
    inner_w, inner_h = WIDE - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = inner_w / len(items)
    bars: list[Bar] = []
    ghosts: list[Bar] = []
    for i, (label, value, ghost) in enumerate(items):
        x = PAD_LEFT + i * slot + slot * 0.15
        w = slot * 0.7
        shown = label if i % every_label == 0 or i == len(items) - 1 else ""
        for v, into in ((value, bars), (ghost, ghosts)):
            h = inner_h * min(v, y_max) / y_max
            into.append(Bar(x, w, PAD_TOP + inner_h - h, h, shown, f"{label}: {v:.4f} {unit}"))
    return BarChart(bars, y_max, unit, ghosts)


@dataclass(frozen=True)
class Span:
    """One attempt on the timeline: a bar from its start to its end (or now)."""

    x: float
    width: float
    row: int
    label: str
    css: str
    title: str


@dataclass(frozen=True)
class Mark:
    """A moment on the timeline: a checkpoint, a restore, an interruption, a state change."""

    x: float
    row: int
    kind: str
    title: str


@dataclass(frozen=True)
class Timeline:
    spans: list[Span]
    marks: list[Mark]
    rows: int
    start: str
    end: str
    height: int
    width: int = WIDE


TIMELINE_MARKS = {
    "capsule": "checkpoint",
    "checkpoint_failed": "failed",
    "restored": "restore",
    "restart_from_scratch": "failed",
    "capsule_corrupt": "failed",
    "interruption": "interruption",
}


def timeline(
    created: str, attempts: list[dict[str, Any]], events: list[dict[str, Any]], now: str
) -> Timeline:
    """Attempts as bars (one row each), checkpoints, restores and interruptions as marks on
    their attempt's row, from the task's creation to its last event (or now)."""
    times = [created, *[e["time"] for e in events]]
    times += [a[k] for a in attempts for k in ("start", "end") if a.get(k)]
    end = now if any(a.get("start") and not a.get("end") for a in attempts) else max(times)
    t0, t1 = _t(created), _t(end)
    span = (t1 - t0) or 1.0
    inner_w = WIDE - PAD_LEFT - 4

    def x_of(value: str) -> float:
        return PAD_LEFT + max(0.0, min(1.0, (_t(value) - t0) / span)) * inner_w

    rows = {a["id"]: i for i, a in enumerate(attempts)}
    spans = []
    for i, a in enumerate(attempts):
        if not a.get("start"):
            continue
        x0, x1 = x_of(a["start"]), x_of(a.get("end") or end)
        where = a.get("instance_type") or a.get("instance_id") or "?"
        spans.append(
            Span(
                x0,
                max(x1 - x0, 2.0),
                i,
                f"#{a['number']} {where} {a.get('market') or ''}".strip(),
                "spot" if a.get("market") == "spot" else "ondemand",
                f"attempt {a['number']} ({a.get('reason') or 'first'}) on {where}: "
                f"{a['start']} → {a.get('end') or 'running'}",
            )
        )
    marks = []
    for e in events:
        kind = TIMELINE_MARKS.get(e["kind"])
        if kind is None:
            continue
        row = rows.get(e.get("attempt_id") or "", len(attempts) - 1 if attempts else 0)
        marks.append(
            Mark(x_of(e["time"]), max(row, 0), kind, f"{e['time']} {e.get('message') or kind}")
        )
    n = max(len(attempts), 1)
    return Timeline(spans, marks, n, created, end, 24 * n + 24)
