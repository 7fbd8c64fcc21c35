"""``run_benchmark``: latency of every backend x variant x precision over blur ratios and sizes.

The mask goes in through the ``mask`` input of the ``*_maskin_*`` exports: a seeded
``blob_mask`` per requested blur ratio (so each ratio costs what the pruned network does
for that much blur, whatever the weights predict), or with ``masks="predicted"`` the
masks the model predicts on held-out synthetic images. Each record also gives the tile
occupancy (share of active scale-0 tiles), what the tiled body's cost follows.

Each measurement is a warm-up followed by a fixed number of timed runs (CUDA events on
a GPU, ``perf_counter`` on the CPU), reported as p50/p90/p99/mean latency and
throughput, beside the MACs of the branch the graph took (``macs.count_macs``, counted
before any timing). Each job's session is closed before the next is timed. Results go
to ``results.json`` (a list of records), ``results.csv``, ``machine.json`` and PNG plots
in the output folder.

Backends: ``onnx`` runs every exported variant and precision in ONNX Runtime; ``torch``
runs the checkpoint (``plugin`` = pruned, ``dense``; fp32 only, no ``portable``);
``trt`` builds engines with ``m2ae.export.trt_builder`` and runs them. A backend or
variant this machine cannot run is skipped with one line saying why.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import torch
from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps, write_text
from m2ae.benchmarks.macs import count_macs
from m2ae.benchmarks.masks import blob_mask
from m2ae.benchmarks.sysinfo import PowerSampler, machine_info
from m2ae.errors import UserError
from m2ae.export.onnx_export import PRECISIONS, VARIANTS, model_filename
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK
from m2ae.model.pruned import PruningConfig, PruningOptions, tile_occupancy

BACKENDS = ("torch", "onnx", "trt")
#: torch runs the checkpoint itself: "plugin" means its pruned forward
TORCH_VARIANTS = ("dense", "plugin")
DEFAULT_BLUR = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0)
MASK_SOURCES = ("blob", "predicted")
Size = tuple[int, int]


def parse_size(text: str) -> Size:
    """``"512"`` (square) or ``"1080x1920"`` (HxW) -> (H, W)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size {text!r}: expected a positive side (512) or HxW (1080x1920)")
    sides = [int(p) for p in parts]
    return (sides[0], sides[-1])


def parse_names(text: str, option: str) -> tuple[str, ...]:
    # Duplicates would measure the same thing twice; order is kept for the table.
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError(f"{option}: empty list")
    return names


def parse_blur(text: str) -> tuple[float, ...]:
    values = []
    for item in parse_names(text, "--blur"):
        try:
            values.append(float(item))
        except ValueError:
            raise UserError(f"--blur {item!r}: not a number (blur ratios are percentages, 0 to 100)") from None
    return tuple(dict.fromkeys(values))


def _check_choices(values: tuple[str, ...], choices: tuple[str, ...], option: str) -> None:
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise UserError(f"{option}: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}")


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    checkpoint: str = "tiny"
    backends: tuple[str, ...] = BACKENDS
    variants: tuple[str, ...] = ("dense", "portable", "plugin")
    precisions: tuple[str, ...] = ("fp32",)
    #: blur ratios in percent of the image's pixels
    blur: tuple[float, ...] = DEFAULT_BLUR
    sizes: tuple[Size, ...] = ((512, 512),)
    iters: int = 20
    warmup: int = 3
    #: passes over all jobs; each record pools its timed runs over the rounds
    rounds: int = 1
    #: CPU threads for ONNX Runtime (intra-op) and torch; None: the library's default
    threads: int | None = None
    #: exported models to reuse or write; default: ``out / "models"``
    models_dir: Path | None = None
    seed: int = 0
    #: "blob": a seeded blob mask per blur ratio over one noise image; "predicted": the
    #: held-out synthetic images with the masks the model predicts for them (``blur`` unused)
    masks: str = "blob"
    #: held-out images per size for ``masks="predicted"``
    predicted_images: int = 4
    #: tiling and dense switch of the pruned exports; ``dense_above=1`` times the tiled
    #: body at every blur ratio, which is how its break-even with dense is measured
    pruning: PruningOptions = PruningOptions()
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        _check_choices(self.backends, BACKENDS, "--backends")
        _check_choices(self.variants, VARIANTS, "--variants")
        _check_choices(self.precisions, PRECISIONS, "--precision")
        bad = [b for b in self.blur if not 0.0 <= b <= 100.0]
        if bad or not self.blur:
            raise UserError(f"--blur: {', '.join(map(str, bad)) or '(none)'}: blur ratios are percentages, 0 to 100")
        if not self.sizes or any(h < 1 or w < 1 for h, w in self.sizes):
            raise UserError(f"--size: sides must be positive, got {self.sizes}")
        if self.iters < 1:
            raise UserError(f"--iters {self.iters}: must be 1 or more")
        if self.warmup < 0:
            raise UserError(f"--warmup {self.warmup}: must be 0 or more")
        if self.rounds < 1:
            raise UserError(f"--rounds {self.rounds}: must be 1 or more")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be 1 or more")
        if self.masks not in MASK_SOURCES:
            raise UserError(f"--masks {self.masks!r}: choose one of {', '.join(MASK_SOURCES)}")
        if self.predicted_images < 1:
            raise UserError(f"--images {self.predicted_images}: must be 1 or more")

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir is not None else Path(self.out) / "models"


@dataclass
class BenchRecord:
    backend: str
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


@dataclass
class BenchReport:
    records: list[BenchRecord]
    #: one line per skipped backend/variant or adjusted option
    notes: list[str]
    machine: dict[str, Any]
    results_json: Path
    results_csv: Path
    machine_json: Path
    #: how the pruned variants were exported (the preset's values under the options)
    pruning: PruningConfig
    plots: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    times_ms: tuple[float, ...]
    timer: str  # "cuda_events" or "wall"

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.times_ms, q))

    @property
    def mean(self) -> float:
        return float(np.mean(self.times_ms))


def time_calls(call: Callable[[], object], iters: int, warmup: int, cuda_events: bool = False) -> Timing:
    """Run ``call`` ``warmup`` times untimed, then ``iters`` timed times.

    With ``cuda_events``, each run is bracketed by CUDA events on torch's current stream
    (the legacy default stream, which orders against the TensorRT runtime's blocking
    stream), so GPU time is measured on the GPU.
    """
    for _ in range(warmup):
        call()
    times = []
    if cuda_events:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(iters):
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        return Timing(tuple(times), "cuda_events")
    for _ in range(iters):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1e3)
    return Timing(tuple(times), "wall")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block, restoring it after."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- models


def _export_key(path: Path) -> tuple[str | None, ...]:
    """(checkpoint sha256, tiles, dense_above, blocks_per_gather) an exported file was made with."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 (a damaged file is simply re-exported)
        return None, None, None, None
    metadata = {p.key: p.value for p in model.metadata_props}
    keys = ("checkpoint_sha256", "tiles", "dense_above", "blocks_per_gather")
    return tuple(metadata.get(f"m2ae.{key}") for key in keys)  # type: ignore[return-value]


def ensure_models(
    checkpoint: str, sha256: str, folder: Path, wanted: set[tuple[str, str]], progress: bool,
    pruning: PruningOptions = PruningOptions(), preset: str = "tiny",
) -> dict[tuple[str, str], Path]:
    """Mask-input ONNX files for every (variant, precision) in ``wanted``.

    Files already in ``folder`` that were exported from the same checkpoint (by sha256)
    with the same tiling and dense switch are reused; the rest are exported there.
    """
    from m2ae.export.onnx_export import ExportConfig, export_models

    paths = {key: folder / model_filename(key[0], key[1], True) for key in wanted}
    resolved = pruning.resolve(preset)

    def current(variant: str, path: Path) -> bool:
        if not path.is_file():
            return False
        found_sha, tiles, dense_above, blocks_per_gather = _export_key(path)
        if variant == "dense":
            return found_sha == sha256
        return (found_sha == sha256 and dense_above == repr(resolved.dense_above) and tiles is not None
                and tiles.split(",") == [str(resolved.tile(s)) for s in range(len(tiles.split(",")))]
                and blocks_per_gather == str(resolved.blocks_per_gather))

    missing = {key for key, path in paths.items() if not current(key[0], path)}
    if missing:
        # Pure functions of the checkpoint: re-exporting a few present ones costs nothing but time.
        variants = tuple(v for v in VARIANTS if any(key[0] == v for key in missing))
        precisions = tuple(p for p in PRECISIONS if any(key[1] == p for key in missing))
        export_models(ExportConfig(checkpoint=checkpoint, out=folder, variants=variants, precisions=precisions,
                                   mask_input=True, pruning=pruning, progress=progress))
    return paths


def trt_unavailable() -> str | None:
    """Why the TensorRT backend cannot run here, or None if it can."""
    from m2ae.platform_info import cuda_binding_line, detect_platform, install_hint

    platform = detect_platform()
    if platform.tensorrt_version is None:
        return f"TensorRT is not installed; install it with: {install_hint(platform)}"
    if not platform.has_gpu:
        return "no CUDA GPU/driver found"
    if platform.cuda_binding is None:
        return cuda_binding_line(platform)
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class _Case:
    """One timed input: an image, its mask, and the blur ratio it stands for (percent)."""

    size: Size
    blur: float
    image: np.ndarray
    mask: np.ndarray


def _cases(config: BenchConfig, sizes: list[Size], model: torch.nn.Module) -> list[_Case]:
    """Blob masks per requested ratio, or the model's own masks on held-out images."""
    if config.masks == "blob":
        rng = np.random.default_rng(config.seed)
        images = {size: rng.random((1, 3, *size), dtype=np.float32) for size in sizes}
        return [_Case(size, b, images[size], blob_mask(*size, b / 100.0, config.seed))
                for size in sizes for b in config.blur]
    from m2ae.model.data.synthetic import heldout_set

    cases = []
    with torch.no_grad():
        for size in sizes:
            for sample in heldout_set(config.predicted_images, size):
                image = sample["blurred"][None]
                mask = model(image).mask.numpy()
                cases.append(_Case(size, round(float(mask.mean()) * 100.0, 4), image.numpy(), mask))
    return cases


@dataclass
class _Runs:
    """The timings of one (job, case) over the rounds."""

    device: str
    threads: int | None
    timings: list[Timing] = field(default_factory=list)
    powers_mw: list[float] = field(default_factory=list)

    def add(self, timing: Timing, power_mw: float | None) -> None:
        self.timings.append(timing)
        if power_mw is not None:
            self.powers_mw.append(power_mw)

    def timing(self) -> Timing:
        return Timing(tuple(t for timing in self.timings for t in timing.times_ms), self.timings[0].timer)

    def power_mw(self) -> float | None:
        return float(np.mean(self.powers_mw)) if self.powers_mw else None


@dataclass(frozen=True)
class _Job:
    backend: str
    variant: str
    precision: str


def _plan(config: BenchConfig, notes: list[str]) -> list[_Job]:
    jobs = []
    for backend in config.backends:
        if backend == "torch":
            skipped_variants = [v for v in config.variants if v not in TORCH_VARIANTS]
            if skipped_variants:
                notes.append(f"torch: no {'/'.join(skipped_variants)} variant (it is an ONNX lowering); skipped")
            other = [p for p in config.precisions if p != "fp32"]
            if other:
                notes.append(f"torch: runs fp32 only; {'/'.join(other)} skipped")
            if "fp32" in config.precisions:
                jobs += [_Job(backend, v, "fp32") for v in config.variants if v in TORCH_VARIANTS]
            continue
        if backend == "trt":
            reason = trt_unavailable()
            if reason is not None:
                notes.append(f"trt: skipped: {reason}")
                continue
        jobs += [_Job(backend, v, p) for v in config.variants for p in config.precisions]
    return jobs


def _round_sizes(sizes: tuple[Size, ...], multiple: int, min_size: int, notes: list[str]) -> list[Size]:
    rounded: list[Size] = []
    for h, w in sizes:
        new = tuple(max(-(-side // multiple) * multiple, min_size) for side in (h, w))
        if new != (h, w):
            notes.append(f"--size {h}x{w}: rounded up to {new[0]}x{new[1]} (the network needs multiples of "
                         f"{multiple}, at least {min_size})")
        if new not in rounded:
            rounded.append(new)  # type: ignore[arg-type]
    return rounded


class _Engines:
    """Opens the engine of one job; raises UserError when this machine can't run it."""

    def __init__(self, config: BenchConfig, models: dict[tuple[str, str], Path], sizes: list[Size],
                 pruning: PruningConfig) -> None:
        self.config = config
        self.pruning = pruning
        self.models = models
        self.sizes = sizes

    def open(self, job: _Job) -> tuple[Any, str]:
        if job.backend == "onnx":
            from m2ae.runtime.onnx_engine import OnnxRuntimeEngine

            return OnnxRuntimeEngine(self.models[(job.variant, job.precision)], threads=self.config.threads), "cpu"
        if job.backend == "torch":
            from m2ae.runtime.torch_engine import TorchEngine

            device = "cuda" if _cuda_available() else "cpu"
            engine = TorchEngine(self.config.checkpoint, pruned=job.variant == "plugin", mask_input=True,
                                 device=device, pruning=self.pruning)
            return engine, device
        return self._open_trt(job), "cuda"

    def _open_trt(self, job: _Job) -> Any:
        from m2ae.engine_sidecar import Profile
        from m2ae.export.trt_builder import BuildConfig, build_engine
        from m2ae.runtime.trt_engine import TensorRTEngine

        onnx_path = self.models[(job.variant, job.precision)]
        low = (min(h for h, _ in self.sizes), min(w for _, w in self.sizes))
        high = (max(h for h, _ in self.sizes), max(w for _, w in self.sizes))
        profile = Profile(min=low, opt=self.sizes[0], max=high) if len(self.sizes) > 1 else Profile(low, low, low)
        built = build_engine(BuildConfig(onnx=onnx_path, out=onnx_path.with_suffix(".engine"), profile=profile,
                                         progress=False, command=("m2ae", "bench")))
        return TensorRTEngine(built.engine_path)


# ---------------------------------------------------------------- the sweep


def run_benchmark(config: BenchConfig) -> BenchReport:
    """Measure every planned job on every size and blur ratio; write the results and plots."""
    from m2ae.model.checkpoint import load_checkpoint

    check_output_dir(config.out, "--out")
    check_output_dir(config.models_path, "--out" if config.models_dir is None else "--models")
    for folder in (config.out, config.models_path):
        remove_stale_temps(folder)
    notes: list[str] = []
    jobs = _plan(config, notes)
    if not jobs:
        raise UserError(f"--backends {','.join(config.backends)}: nothing can be measured here ({'; '.join(notes)})")
    loaded = load_checkpoint(config.checkpoint)
    sizes = _round_sizes(config.sizes, loaded.config.multiple, loaded.config.min_size, notes)
    for note in notes:
        tqdm.write(note)

    needed = {(j.variant, j.precision) for j in jobs if j.backend != "torch"}
    needed |= {(j.variant, "fp32") for j in jobs}  # MACs are counted on the fp32 graphs
    models = {}
    if needed:
        models = ensure_models(config.checkpoint, loaded.sha256, config.models_path, needed, config.progress,
                               config.pruning, loaded.config.preset)
    machine = machine_info()
    pruning = config.pruning.resolve(loaded.config.preset)
    engines = _Engines(config, models, sizes, pruning)
    cases = _cases(config, sizes, loaded.model)
    # MACs first: counting runs sessions of its own, which must be gone before any timing.
    macs = {
        (variant, i): count_macs(models[(variant, "fp32")], {INPUT_IMAGE: case.image, INPUT_MASK: case.mask},
                                 threads=config.threads)
        for variant in {j.variant for j in jobs} for i, case in enumerate(cases)
    }
    tile = pruning.tile(0)
    occupancy = [round(float(tile_occupancy(torch.from_numpy(case.mask), tile)) * 100.0, 4) for case in cases]

    runs: dict[tuple[_Job, int], _Runs] = {}
    skipped: set[_Job] = set()
    bar = tqdm(total=config.rounds * len(jobs) * len(cases), unit="run", disable=not config.progress or not jobs)
    # Rounds interleave the jobs, so slow drifts of a noisy machine fall on every variant alike.
    for _ in range(config.rounds):
        for job in jobs:
            if job in skipped:
                bar.update(len(cases))
                continue
            bar.set_description(f"{job.backend}/{job.variant}/{job.precision}")
            try:
                engine, device = engines.open(job)
            except UserError as exc:
                line = f"{job.backend}/{job.variant}/{job.precision}: skipped: {exc}"
                notes.append(line)
                tqdm.write(line)
                skipped.add(job)
                bar.update(len(cases))
                continue
            with contextlib.ExitStack() as stack:
                if hasattr(engine, "close"):
                    stack.callback(engine.close)
                on_cpu = device == "cpu"
                # TensorRT's infer() ends in a stream sync, so wall time is right where torch has no CUDA.
                cuda_events = not on_cpu and _cuda_available()
                threads: int | None = None
                if job.backend == "onnx":
                    threads = config.threads
                elif job.backend == "torch" and on_cpu:
                    threads = stack.enter_context(torch_threads(config.threads))
                for i, case in enumerate(cases):
                    bar.set_postfix_str(f"{case.size[0]}x{case.size[1]} blur {case.blur:g}%")
                    image, mask = case.image, case.mask
                    with PowerSampler(enabled=bool(machine["is_jetson"])) as power:
                        timing = time_calls(lambda: engine.infer(image, mask), config.iters, config.warmup,
                                            cuda_events=cuda_events)
                    runs.setdefault((job, i), _Runs(device, threads)).add(timing, power.mean_mw)
                    bar.update(1)
            # The closed session's spinning workers must be gone before the next measurement.
            gc.collect()
    bar.close()
    records = []
    for (job, i), run in runs.items():
        case, timing = cases[i], run.timing()
        records.append(BenchRecord(
            backend=job.backend, variant=job.variant, precision=job.precision, blur=case.blur,
            blur_measured=round(float(case.mask.mean()) * 100.0, 4), occupancy=occupancy[i],
            height=case.size[0], width=case.size[1],
            p50_ms=timing.percentile(50), p90_ms=timing.percentile(90), p99_ms=timing.percentile(99),
            mean_ms=timing.mean, throughput_ips=1e3 / timing.mean,
            macs=macs[(job.variant, i)], iters=len(timing.times_ms), warmup=config.warmup,
            threads=run.threads, device=run.device, timer=timing.timer, power_mw=run.power_mw(),
        ))
    add_speedups(records)
    return _write_outputs(config, records, notes, machine, pruning)


def add_speedups(records: list[BenchRecord]) -> None:
    """Fill ``speedup_vs_dense`` from the dense record of the same backend/precision/size/blur."""
    dense = {(r.backend, r.precision, r.height, r.width, r.blur): r.p50_ms for r in records if r.variant == "dense"}
    for record in records:
        base = dense.get((record.backend, record.precision, record.height, record.width, record.blur))
        record.speedup_vs_dense = base / record.p50_ms if base is not None and record.p50_ms > 0 else None


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    data = asdict(config)
    for key in ("out", "models_dir"):
        data[key] = None if data[key] is None else str(data[key])
    return data


def records_csv(records: list[BenchRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(asdict(record))
    return buffer.getvalue()


def _write_outputs(config: BenchConfig, records: list[BenchRecord], notes: list[str],
                   machine: dict[str, Any], pruning: PruningConfig) -> BenchReport:
    from m2ae.benchmarks.plots import write_plots

    out = Path(config.out)
    results_json = write_text(out / "results.json", json.dumps([asdict(r) for r in records], indent=1) + "\n")
    results_csv = write_text(out / "results.csv", records_csv(records))
    machine_json = write_text(
        out / "machine.json",
        json.dumps({"machine": machine, "config": _config_dict(config), "notes": notes}, indent=1) + "\n",
    )
    plots = write_plots(records, out) if config.plots and records else []
    return BenchReport(records, notes, machine, results_json, results_csv, machine_json, pruning, plots)


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
