"""PNG plots of benchmark records, one set per image size.

* ``latency_{H}x{W}.png``: p50 latency vs blur ratio, one line per backend/variant/precision;
* ``speedup_{H}x{W}.png``: dense p50 / pruned p50 (plugin, portable, torch's pruned) vs blur ratio;
* ``macs_{H}x{W}.png``: counted MACs vs blur ratio, one line per variant.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting neither
needs a display nor touches matplotlib's global backend.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from m2ae.atomic import write_with

if TYPE_CHECKING:
    from m2ae.benchmarks.latency_records import BenchRecord

PRUNED = ("plugin", "portable", "pruned")
LINESTYLES = ("-", "--", "-.", ":")


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    return write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def _line_plot(
    series: dict[str, list[tuple[float, float]]], title: str, ylabel: str, path: Path,
    configure: Callable[[object], None] | None = None,
) -> Path:
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for i, (label, points) in enumerate(sorted(series.items())):
        points = sorted(points)
        # Varying dashes keep identical series (plugin and portable MACs) both visible.
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label,
                  linestyle=LINESTYLES[i % len(LINESTYLES)])
    axes.set_xlabel("blur ratio (% of pixels)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if configure is not None:
        configure(axes)
    if series:
        axes.legend(fontsize="small")
    return _save(figure, path)


def write_plots(records: list[BenchRecord], out: Path) -> list[Path]:
    """Write the three plots for every size in ``records``; returns their paths."""
    written = []
    for height, width in sorted({(r.height, r.width) for r in records}):
        at_size = [r for r in records if (r.height, r.width) == (height, width)]
        tag = f"{height}x{width}"

        latency: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in at_size:
            latency[f"{r.backend}/{r.variant}/{r.precision}"].append((r.blur, r.p50_ms))
        written.append(_line_plot(latency, f"p50 latency, {tag}", "latency (ms)", out / f"latency_{tag}.png"))

        speedup: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in at_size:
            if r.variant in PRUNED and r.speedup_vs_dense is not None:
                speedup[f"{r.backend}/{r.variant}/{r.precision}"].append((r.blur, r.speedup_vs_dense))
        written.append(_line_plot(
            speedup, f"speed-up of pruned over dense, {tag}", "dense p50 / pruned p50", out / f"speedup_{tag}.png",
            configure=lambda axes: axes.axhline(1.0, color="grey", linestyle="--", linewidth=1),
        ))

        macs: dict[str, dict[float, float]] = defaultdict(dict)
        for r in at_size:
            macs[r.variant][r.blur] = r.macs / 1e9
        written.append(_line_plot(
            {variant: list(points.items()) for variant, points in macs.items()},
            f"MACs counted from the graph, {tag}", "GMACs", out / f"macs_{tag}.png",
        ))
    return written
