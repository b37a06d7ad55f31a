"""Draws chart series (bot.domain.charts) as a PNG with matplotlib, the `charts` extra.

matplotlib is imported only when a chart is drawn: it takes a while to load and the bot
serves without it. A bare Figure renders with Agg and touches no global pyplot state,
so drawing from a worker thread is safe.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from functools import cache

from bot.domain.charts import Series

log = logging.getLogger(__name__)

MISSING = ("matplotlib is not installed: pip install 'oncall-bot[charts]'")
_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


class ChartsUnavailable(RuntimeError):
    """matplotlib cannot be imported here."""


@cache
def available() -> bool:
    """Whether charts can be drawn in this process (imports matplotlib once)."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def render_png(series: Sequence[Series], *, title: str) -> bytes:
    """One panel per distinct `Series.panel`, in order, sharing the time axis; bars of a
    panel side by side, lines with a marker per point and gaps where a value is None.
    Raises ChartsUnavailable without matplotlib, ValueError without series."""
    if not series:
        raise ValueError("a chart needs at least one series")
    try:
        from matplotlib.dates import date2num
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartsUnavailable(MISSING) from None

    panels: dict[str, list[Series]] = {}
    for one in series:
        panels.setdefault(one.panel, []).append(one)
    figure = Figure(figsize=(8, 1.2 + 2.2 * len(panels)), dpi=100, layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title)
    colours = iter(_COLOURS * (len(series) // len(_COLOURS) + 1))
    for axis, (panel, members) in zip(axes, panels.items(), strict=True):
        bars = [m for m in members if m.kind == "bar"]
        width = 0.8 / max(len(bars), 1)
        for member in members:
            xs = [date2num(day) for day, _ in member.points]
            ys = [float("nan") if value is None else value for _, value in member.points]
            colour = next(colours)
            if member.kind == "bar":
                offset = (bars.index(member) - (len(bars) - 1) / 2) * width
                axis.bar([x + offset for x in xs], ys, width=width, color=colour,
                         label=member.name)
            else:
                axis.plot(xs, ys, marker="o", color=colour, label=member.name)
        axis.set_title(panel, fontsize="medium")
        axis.set_ylim(bottom=0)
        if all(m.kind == "bar" for m in members):
            axis.yaxis.get_major_locator().set_params(integer=True)
        if len(members) > 1:
            axis.legend(loc="upper left", fontsize="small")
        axis.xaxis_date()
    figure.autofmt_xdate()
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
