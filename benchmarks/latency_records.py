"""What a latency sweep records, and the views of its records: speed-ups over dense,
CSV, the end-of-run table and where the tiled body breaks even with dense."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields


@dataclass
class BenchRecord:
    backend: str
    #: dense, portable or plugin; the torch backend's pruned forward is "pruned"
    variant: str
    precision: str
    #: requested blur ratio (percent) and the fraction the mask really covers (percent)
    blur: float
    blur_measured: float
    #: share of scale-0 tiles holding a masked pixel (what the tiled body's cost follows), percent
    occupancy: float
    height: int
    width: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float
    #: counted on the fp32 graph of the variant (precision does not change the shapes counted)
    macs: int
    #: timed runs behind the percentiles: iters per round x rounds
    iters: int
    warmup: int
    #: CPU threads (None on a GPU, or the library's default)
    threads: int | None
    device: str
    timer: str
    power_mw: float | None = None
    #: dense p50 / this p50 at the same backend, precision, size and blur
    speedup_vs_dense: float | None = None


RECORD_FIELDS = tuple(f.name for f in fields(BenchRecord))


def add_speedups(records: list[BenchRecord]) -> None:
    """Fill ``speedup_vs_dense`` from the dense record of the same backend/precision/size/blur."""
    dense = {(r.backend, r.precision, r.height, r.width, r.blur): r.p50_ms for r in records if r.variant == "dense"}
    for record in records:
        base = dense.get((record.backend, record.precision, record.height, record.width, record.blur))
        record.speedup_vs_dense = base / record.p50_ms if base is not None and record.p50_ms > 0 else None


def records_csv(records: list[BenchRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(asdict(record))
    return buffer.getvalue()


def break_even_lines(records: list[BenchRecord], dense_above: float) -> list[str]:
    """Per pruned series: the tile occupancy where its latency meets dense (linear between
    the two measured points around the crossing), the value ``--dense-above`` should take.

    Only points where the tiled body ran count (occupancy up to ``dense_above``, the
    switch the models were exported with); a sweep with ``--dense-above 1`` whose blur
    ratios bracket the crossing measures it.
    """
    series: dict[tuple[str, str, str, int, int], list[BenchRecord]] = {}
    for r in records:
        tiled = 0 < r.occupancy <= dense_above * 100.0
        if r.variant != "dense" and r.speedup_vs_dense is not None and tiled:
            series.setdefault((r.backend, r.variant, r.precision, r.height, r.width), []).append(r)
    lines = []
    if dense_above < 1.0 and any(r.variant != "dense" and r.occupancy > dense_above * 100.0 for r in records):
        lines.append(f"points above {dense_above * 100:.0f}% tile occupancy ran the dense body (--dense-above "
                     f"{dense_above}); `--dense-above 1` times the tiled body there too")
    for (backend, variant, precision, height, width), points in series.items():
        points.sort(key=lambda r: r.occupancy)
        name = f"{backend}/{variant}/{precision} {height}x{width}"
        # Latency over dense grows about linearly with occupancy: interpolate that ratio.
        ratios = [1.0 / r.speedup_vs_dense for r in points]  # type: ignore[operator]
        for (low, high), (below, above) in zip(zip(points, points[1:]), zip(ratios, ratios[1:])):
            if below < 1.0 <= above:
                t = (1.0 - below) / (above - below)
                crossing = low.occupancy + t * (high.occupancy - low.occupancy)
                lines.append(f"{name}: the tiled body meets dense at {crossing:.0f}% tile occupancy "
                             f"(--dense-above {crossing / 100:.2f})")
                break
        else:
            faster = all(ratio < 1.0 for ratio in ratios)
            lines.append(f"{name}: {'faster' if faster else 'not faster'} than dense at every measured occupancy "
                         f"({points[0].occupancy:.0f}-{points[-1].occupancy:.0f}%)")
    return lines


def format_table(records: list[BenchRecord]) -> str:
    """The compact end-of-run table: one row per record."""
    header = ("backend", "variant", "precision", "size", "blur%", "tiles%", "p50 ms", "vs dense", "GMACs")
    rows = [header]
    for r in records:
        ratio = f"{1 / r.speedup_vs_dense:.3f}" if r.speedup_vs_dense else "-"
        rows.append((r.backend, r.variant, r.precision, f"{r.height}x{r.width}", f"{r.blur:g}",
                     f"{r.occupancy:.1f}", f"{r.p50_ms:.2f}", ratio, f"{r.macs / 1e9:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)
