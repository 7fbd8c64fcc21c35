"""``run_benchmark``: latency of every backend x variant x precision over blur ratios and sizes.

The mask goes in through the ``mask`` input of the ``*_maskin_*`` exports: a seeded
``blob_mask`` per requested blur ratio (so each ratio costs what the pruned network does
for that much blur, whatever the weights predict), or with ``masks="predicted"`` the
masks the model predicts on held-out synthetic images. Each record also gives the tile
occupancy (share of active scale-0 tiles), what the tiled body's cost follows.

Each measurement is a warm-up followed by a fixed number of timed runs (``timing``: CUDA
events on a GPU, ``perf_counter`` on the CPU), reported as p50/p90/p99/mean latency and
throughput, beside the MACs of the branch the graph took (``macs.count_macs``, counted
before any timing). Every model opens through ``runtime.base.open_engine``, and each
job's engine is closed before the next is timed. Results go to ``results.json`` (a list
of ``latency_records.BenchRecord``), ``results.csv``, ``machine.json`` and PNG plots in
the output folder.

Backends: ``onnx`` runs every exported variant and precision in ONNX Runtime; ``trt``
runs engines built from them (``prepared_models``); ``torch`` runs the checkpoint itself,
fp32 only: ``dense``, and for ``portable`` or ``plugin`` (ONNX lowerings of the same
pruned forward) its pruned forward, measured once and reported as ``pruned``. A backend
or variant this machine cannot run is skipped with one line saying why.
"""

from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps, write_text
from m2ae.benchmarks.latency_records import BenchRecord, add_speedups, records_csv
from m2ae.benchmarks.macs import count_macs
from m2ae.benchmarks.masks import blob_mask
from m2ae.benchmarks.plots import write_plots
from m2ae.benchmarks.prepared_models import ModelKey, build_engines, ensure_models, sweep_profile
from m2ae.benchmarks.sysinfo import PowerSampler, machine_info
from m2ae.benchmarks.timing import Timing, time_calls, torch_threads
from m2ae.cli_args import Size, format_size
from m2ae.errors import UserError
from m2ae.export.onnx_export import PRECISIONS, VARIANTS
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK
from m2ae.model.checkpoint import LoadedCheckpoint, load_checkpoint
from m2ae.model.config import M2AEConfig
from m2ae.model.data.synthetic import heldout_set
from m2ae.model.pruned import PruningConfig, PruningOptions, tile_occupancy
from m2ae.padding import round_up
from m2ae.platform_info import tensorrt_unavailable
from m2ae.runtime.base import Engine, open_engine

BACKENDS = ("torch", "onnx", "trt")
#: what each --variants name runs on the torch backend
TORCH_VARIANTS = {"dense": "dense", "portable": "pruned", "plugin": "pruned"}
DEFAULT_BLUR = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0)
MASK_SOURCES = ("blob", "predicted")


def _check_choices(values: tuple[str, ...], choices: tuple[str, ...], option: str) -> None:
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise UserError(f"{option}: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}")


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    #: a checkpoint file, a shipped name, or one already loaded (used as is, not reloaded)
    checkpoint: str | LoadedCheckpoint = "tiny"
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the checkpoint by its name or path."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        checkpoint = self.checkpoint
        data["checkpoint"] = str(checkpoint.path) if isinstance(checkpoint, LoadedCheckpoint) else checkpoint
        data["pruning"] = asdict(self.pruning)
        for key in ("out", "models_dir"):
            data[key] = None if data[key] is None else str(data[key])
        return data


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


# ---------------------------------------------------------------- what runs


@dataclass(frozen=True)
class _Job:
    backend: str
    #: as reported: the exported variant, or for torch "dense" / "pruned"
    variant: str
    precision: str
    #: the exported variant that runs (onnx, trt) or whose fp32 graph's MACs are counted (torch)
    graph: str

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.variant}/{self.precision}"

    @property
    def model_key(self) -> ModelKey:
        return self.graph, self.precision

    @property
    def device(self) -> str:
        if self.backend == "torch":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return "cuda" if self.backend == "trt" else "cpu"


def _torch_jobs(config: BenchConfig, notes: list[str]) -> list[_Job]:
    other = [p for p in config.precisions if p != "fp32"]
    if other:
        notes.append(f"torch: runs fp32 only; {'/'.join(other)} skipped")
    if "fp32" not in config.precisions:
        return []
    graphs: dict[str, str] = {}
    for variant in config.variants:
        graphs.setdefault(TORCH_VARIANTS[variant], variant)
    return [_Job("torch", variant, "fp32", graph) for variant, graph in graphs.items()]


def _plan(config: BenchConfig, notes: list[str]) -> list[_Job]:
    jobs = []
    for backend in config.backends:
        if backend == "torch":
            jobs += _torch_jobs(config, notes)
            continue
        if backend == "trt":
            reason = tensorrt_unavailable()
            if reason is not None:
                notes.append(f"trt: skipped: {reason}")
                continue
        jobs += [_Job(backend, v, p, v) for v in config.variants for p in config.precisions]
    if not jobs:
        raise UserError(f"--backends {','.join(config.backends)}: nothing can be measured here ({'; '.join(notes)})")
    return jobs


def _round_sizes(sizes: tuple[Size, ...], model: M2AEConfig, notes: list[str]) -> list[Size]:
    rounded: list[Size] = []
    for size in sizes:
        new = (max(round_up(size[0], model.multiple), model.min_size),
               max(round_up(size[1], model.multiple), model.min_size))
        if new != size:
            notes.append(f"--size {format_size(size)}: rounded up to {format_size(new)} (the network needs "
                         f"multiples of {model.multiple}, at least {model.min_size})")
        if new not in rounded:
            rounded.append(new)
    return rounded


@dataclass(frozen=True)
class _Models:
    """What the jobs run: the checkpoint (torch), its mask-input exports (onnx, and the MACs
    of every job) and the engines built from them (trt)."""

    loaded: LoadedCheckpoint
    pruning: PruningConfig
    exports: dict[ModelKey, Path]
    engines: dict[ModelKey, Path]

    def open(self, job: _Job, threads: int | None) -> Engine:
        if job.backend == "torch":
            return open_engine(self.loaded, pruned=job.variant == "pruned", mask_input=True, device=job.device,
                               pruning=self.pruning)
        if job.backend == "onnx":
            return open_engine(self.exports[job.model_key], threads=threads)
        return open_engine(self.engines[job.model_key])


def _prepare_models(config: BenchConfig, loaded: LoadedCheckpoint, jobs: list[_Job], sizes: list[Size],
                    notes: list[str]) -> _Models:
    """Export what the jobs need and build the engines of the trt jobs."""
    needed = {j.model_key for j in jobs if j.backend != "torch"} | {(j.graph, "fp32") for j in jobs}
    exports = ensure_models(loaded, config.models_path, needed, config.progress, config.pruning)
    trt_keys = [j.model_key for j in jobs if j.backend == "trt"]
    built = build_engines([exports[key] for key in trt_keys], notes, profile=sweep_profile(sizes),
                          command=("m2ae", "bench"))
    engines = {key: built[exports[key]] for key in trt_keys if exports[key] in built}
    return _Models(loaded, config.pruning.resolve(loaded.config.preset), exports, engines)


@dataclass(frozen=True)
class _Case:
    """One timed input: an image, its mask, and the blur ratio it stands for (percent)."""

    size: Size
    blur: float
    image: np.ndarray
    mask: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        return {INPUT_IMAGE: self.image, INPUT_MASK: self.mask}


def _cases(config: BenchConfig, sizes: list[Size], model: torch.nn.Module) -> list[_Case]:
    """Blob masks per requested ratio, or the model's own masks on held-out images."""
    if config.masks == "blob":
        rng = np.random.default_rng(config.seed)
        images = {size: rng.random((1, 3, *size), dtype=np.float32) for size in sizes}
        return [_Case(size, b, images[size], blob_mask(*size, b / 100.0, config.seed))
                for size in sizes for b in config.blur]
    cases = []
    with torch.no_grad():
        for size in sizes:
            for sample in heldout_set(config.predicted_images, size):
                image = sample["blurred"][None]
                mask = model(image).mask.numpy()
                cases.append(_Case(size, round(float(mask.mean()) * 100.0, 4), image.numpy(), mask))
    return cases


# ---------------------------------------------------------------- the sweep


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


def _time_job(engine: Engine, job: _Job, cases: list[_Case], config: BenchConfig, jetson: bool,
              runs: dict[tuple[_Job, int], _Runs], bar: tqdm) -> None:
    """Time ``engine`` on every case, adding each timing to ``runs``."""
    with contextlib.ExitStack() as stack:
        threads: int | None = None
        if job.backend == "onnx":
            threads = config.threads
        elif job.backend == "torch" and job.device == "cpu":
            threads = stack.enter_context(torch_threads(config.threads))
        # TensorRT's infer() ends in a stream sync, so wall time is right where torch has no CUDA.
        cuda_events = job.device == "cuda" and torch.cuda.is_available()
        for i, case in enumerate(cases):
            bar.set_postfix_str(f"{format_size(case.size)} blur {case.blur:g}%")
            with PowerSampler(enabled=jetson) as power:
                timing = time_calls(lambda: engine.infer(case.image, case.mask), config.iters, config.warmup,
                                    cuda_events=cuda_events)
            runs.setdefault((job, i), _Runs(job.device, threads)).add(timing, power.mean_mw)
            bar.update(1)


def _sweep(config: BenchConfig, jobs: list[_Job], cases: list[_Case], models: _Models, jetson: bool,
           notes: list[str]) -> dict[tuple[_Job, int], _Runs]:
    """Every job on every case, ``config.rounds`` times; a job whose engine does not open is skipped."""
    runs: dict[tuple[_Job, int], _Runs] = {}
    skipped: set[_Job] = set()
    bar = tqdm(total=config.rounds * len(jobs) * len(cases), unit="run", disable=not config.progress)
    # Rounds interleave the jobs, so slow drifts of a noisy machine fall on every variant alike.
    for _ in range(config.rounds):
        for job in jobs:
            if job in skipped:
                bar.update(len(cases))
                continue
            bar.set_description(job.name)
            try:
                engine = models.open(job, config.threads)
            except UserError as exc:
                notes.append(f"{job.name}: skipped: {exc}")
                tqdm.write(notes[-1])
                skipped.add(job)
                bar.update(len(cases))
                continue
            with engine:
                _time_job(engine, job, cases, config, jetson, runs, bar)
            # The closed session's spinning workers must be gone before the next measurement.
            gc.collect()
    bar.close()
    return runs


def _count_macs(jobs: list[_Job], cases: list[_Case], models: _Models, threads: int | None
                ) -> dict[tuple[str, int], int]:
    """MACs per (graph, case), on the fp32 exports."""
    graphs = {job.graph for job in jobs}
    return {(graph, i): count_macs(models.exports[(graph, "fp32")], case.feeds(), threads=threads)
            for graph in graphs for i, case in enumerate(cases)}


def _records(config: BenchConfig, runs: dict[tuple[_Job, int], _Runs], cases: list[_Case],
             macs: dict[tuple[str, int], int], tile: int) -> list[BenchRecord]:
    occupancy = [round(float(tile_occupancy(torch.from_numpy(case.mask), tile)) * 100.0, 4) for case in cases]
    records = []
    for (job, i), run in runs.items():
        case, timing = cases[i], run.timing()
        records.append(BenchRecord(
            backend=job.backend, variant=job.variant, precision=job.precision, blur=case.blur,
            blur_measured=round(float(case.mask.mean()) * 100.0, 4), occupancy=occupancy[i],
            height=case.size[0], width=case.size[1],
            p50_ms=timing.percentile(50), p90_ms=timing.percentile(90), p99_ms=timing.percentile(99),
            mean_ms=timing.mean, throughput_ips=1e3 / timing.mean,
            macs=macs[(job.graph, i)], iters=len(timing.times_ms), warmup=config.warmup,
            threads=run.threads, device=run.device, timer=timing.timer, power_mw=run.power_mw(),
        ))
    add_speedups(records)
    return records


def _prepare_folders(config: BenchConfig) -> None:
    check_output_dir(config.out, "--out")
    check_output_dir(config.models_path, "--out" if config.models_dir is None else "--models")
    for folder in (config.out, config.models_path):
        remove_stale_temps(folder)


def run_benchmark(config: BenchConfig) -> BenchReport:
    """Measure every planned job on every size and blur ratio; write the results and plots."""
    _prepare_folders(config)
    notes: list[str] = []
    jobs = _plan(config, notes)
    loaded = load_checkpoint(config.checkpoint)
    sizes = _round_sizes(config.sizes, loaded.config, notes)
    models = _prepare_models(config, loaded, jobs, sizes, notes)
    for note in notes:
        tqdm.write(note)
    jobs = [job for job in jobs if job.backend != "trt" or job.model_key in models.engines]
    cases = _cases(config, sizes, loaded.model)
    # MACs first: counting runs sessions of its own, which must be gone before any timing.
    macs = _count_macs(jobs, cases, models, config.threads)
    machine = machine_info()
    runs = _sweep(config, jobs, cases, models, bool(machine["is_jetson"]), notes)
    records = _records(config, runs, cases, macs, models.pruning.tile(0))
    return _write_outputs(config, records, notes, machine, models.pruning)


def _write_outputs(config: BenchConfig, records: list[BenchRecord], notes: list[str],
                   machine: dict[str, Any], pruning: PruningConfig) -> BenchReport:
    out = Path(config.out)
    results_json = write_text(out / "results.json", json.dumps([asdict(r) for r in records], indent=1) + "\n")
    results_csv = write_text(out / "results.csv", records_csv(records))
    machine_json = write_text(
        out / "machine.json",
        json.dumps({"machine": machine, "config": config.to_dict(), "notes": notes}, indent=1) + "\n",
    )
    plots = write_plots(records, out) if config.plots and records else []
    return BenchReport(records, notes, machine, results_json, results_csv, machine_json, pruning, plots)
