"""``m2ae demo``: the whole pipeline on one machine, ending in a report folder.

With the shipped checkpoint: synthesize a held-out local-blur set (written in the
ReLoBlur layout), export every variant and precision, check parity against PyTorch,
benchmark dense vs pruned graphs on ONNX Runtime (blob masks over blur ratios, and the
masks the model predicts on held-out images), evaluate image quality, and write
``report.md`` with the tables, plots and image strips. Where TensorRT and a GPU are
present it also builds FP16 and INT8 plugin engines and includes them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps, write_text
from m2ae.benchmarks.latency import BenchConfig, BenchReport, run_benchmark
from m2ae.benchmarks.parity import ParityConfig, ParityReport, run_parity
from m2ae.benchmarks.prepared_models import build_engines
from m2ae.errors import UserError
from m2ae.export.onnx_export import ExportConfig, ExportedModel, export_models
from m2ae.imageio import write_image
from m2ae.model.checkpoint import LoadedCheckpoint, load_checkpoint
from m2ae.model.data.sources import evaluation_samples
from m2ae.model.data.synthetic import heldout_set
from m2ae.model.evaluate import evaluate
from m2ae.platform_info import tensorrt_unavailable

STAGES = ("data", "export", "engines", "parity", "benchmark", "quality", "report")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo")
    checkpoint: str = "tiny"
    num_images: int = 8
    size: int = 256
    bench_size: int = 512
    blur: tuple[float, ...] = (0.0, 10.0, 25.0, 100.0)
    #: held-out images timed with the masks the model predicts for them
    predicted_images: int = 2
    iters: int = 5
    warmup: int = 1
    #: passes over all timing jobs, pooled: this machine's drift (the same dense graph
    #: between 134 and 200 ms at 512^2 within one run) then falls on every variant alike
    rounds: int = 2
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise UserError(f"--num-images must be at least 1, got {self.num_images}")


@dataclass
class DemoReport:
    report: Path
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_heldout_set(folder: Path, num_images: int, size: int) -> Path:
    """The held-out synthetic pairs as ``{i}_blur.png``, ``{i}_sharp.png``, ``{i}_mask.png``."""
    for i, sample in enumerate(heldout_set(num_images, size)):
        write_image(folder / f"{i:03d}_blur.png", sample["blurred"].numpy())
        write_image(folder / f"{i:03d}_sharp.png", sample["sharp"].numpy())
        write_image(folder / f"{i:03d}_mask.png", sample["mask"].numpy())
    return folder


def _build_engines(onnx_files: list[Path], out: Path, notes: list[str]) -> list[Path]:
    reason = tensorrt_unavailable()
    if reason is not None:
        notes.append(f"TensorRT engines skipped: {reason}")
        return []
    return list(build_engines(onnx_files, notes, out=out).values())


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _sci(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1e}"


def _quality_table(quality: dict) -> list[str]:
    rows = [
        "| metric | restored | blurred input |",
        "| --- | --- | --- |",
        f"| PSNR (dB) | {_fmt(quality['psnr'])} | {_fmt(quality['psnr_blurred'])} |",
        f"| PSNR inside the blur mask (dB) | {_fmt(quality['psnr_masked'])} | {_fmt(quality['psnr_masked_blurred'])} |",
        f"| SSIM | {_fmt(quality['ssim'], 4)} | {_fmt(quality['ssim_blurred'], 4)} |",
    ]
    return rows + ["", f"Mask IoU: {_fmt(quality['mask_iou'], 3)} over {quality['num_images']} images."]


def _parity_table(parity: ParityReport, out: Path) -> list[str]:
    rows = ["| candidate | precision | status | max abs | PSNR vs reference (dB) | mask flip rate | strip |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in parity.candidates:
        d = c.to_dict()
        metrics = d.get("metrics") or {}
        strip = d.get("strip")
        link = f"![]({Path(strip).relative_to(out)})" if strip else "-"
        rows.append(
            f"| {Path(d['path']).name} | {d.get('precision', '-')} | {d['status']} | "
            f"{_sci(metrics.get('max_abs'))} | {_fmt(metrics.get('psnr_db'))} | "
            f"{_fmt(metrics.get('mask_flip_rate'), 5)} | {link} |"
        )
    return rows


def _bench_table(bench: BenchReport) -> list[str]:
    rows = ["| backend | variant | precision | size | blur % | tiles % | p50 ms | p90 ms | MMACs | speed-up vs dense |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in bench.records:
        rows.append(
            f"| {r.backend} | {r.variant} | {r.precision} | {r.height}x{r.width} | {r.blur:g} | {r.occupancy:.1f} | "
            f"{r.p50_ms:.1f} | {r.p90_ms:.1f} | {r.macs / 1e6:.0f} | {_fmt(r.speedup_vs_dense)} |"
        )
    return rows


def _report(config: DemoConfig, files: dict[str, Path], quality: dict, parity: ParityReport, bench: BenchReport,
            predicted: BenchReport, notes: list[str], seconds: float) -> str:
    out = Path(config.out)
    lines = [
        "# m2ae demo report",
        "",
        f"Checkpoint `{config.checkpoint}`; {config.num_images} held-out synthetic images of "
        f"{config.size}x{config.size} (in `{files['data'].relative_to(out)}/`, ReLoBlur layout); "
        f"run took {seconds:.0f} s.",
        "",
        "## Image quality (PyTorch, predicted mask)",
        "",
        *_quality_table(quality),
        "",
        "## Parity against PyTorch (dense-masked reference)",
        "",
        *_parity_table(parity, out),
        "",
        f"## Latency ({config.bench_size}x{config.bench_size}, forced blob masks)",
        "",
        *_bench_table(bench),
        "",
        *[f"![]({p.relative_to(out)})" for p in bench.plots],
        "",
        f"## Latency ({config.bench_size}x{config.bench_size}, the masks the model predicts on held-out images)",
        "",
        "Blur % is the predicted mask's share of pixels; tiles % the share of scale-0 tiles it activates, "
        "what the pruned graph's cost follows.",
        "",
        *_bench_table(predicted),
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def _export(config: DemoConfig, loaded: LoadedCheckpoint, out: Path) -> list[ExportedModel]:
    return export_models(ExportConfig(checkpoint=loaded, out=out, precisions=("fp32", "fp16", "int8"),
                                      progress=config.progress))


def _parity(config: DemoConfig, loaded: LoadedCheckpoint, candidates: list[Path], json_path: Path) -> ParityReport:
    return run_parity(ParityConfig(
        candidates=tuple(str(p) for p in candidates), checkpoint=loaded, images="synthetic",
        num_images=config.num_images, size=config.size, json_path=json_path, threads=config.threads,
        progress=config.progress,
    ))


def _benchmarks(config: DemoConfig, loaded: LoadedCheckpoint, out: Path, with_engines: bool
                ) -> tuple[BenchReport, BenchReport]:
    """Blob masks over ``config.blur``, then the masks the model predicts, on the same exports."""
    blob = BenchConfig(
        out=out / "bench", checkpoint=loaded, backends=("onnx", "trt") if with_engines else ("onnx",),
        variants=("dense", "portable", "plugin"), precisions=("fp32",), blur=config.blur,
        sizes=((config.bench_size, config.bench_size),), iters=config.iters, warmup=config.warmup,
        rounds=config.rounds, threads=config.threads, models_dir=out / "bench" / "models", progress=config.progress,
    )
    predicted = replace(blob, out=out / "bench_predicted", backends=("onnx",), variants=("dense", "plugin"),
                        masks="predicted", predicted_images=config.predicted_images, plots=False)
    return run_benchmark(blob), run_benchmark(predicted)


def _quality(config: DemoConfig, loaded: LoadedCheckpoint, data: Path) -> dict:
    samples = evaluation_samples(str(data), config.num_images, config.size)
    return evaluate(loaded.model, samples, progress=False, total=len(samples)).to_dict()


def run_demo(config: DemoConfig) -> DemoReport:
    """Every stage in turn on one checkpoint, loaded once; the report last."""
    out = check_output_dir(config.out, "--out")
    # The export, parity and benchmark stages clear their own folders.
    for folder in (out, out / "data", out / "engines"):
        remove_stale_temps(folder)
    start = time.perf_counter()
    notes: list[str] = []
    files: dict[str, Path] = {}
    loaded = load_checkpoint(config.checkpoint)
    stages = tqdm(STAGES, desc="demo", unit="stage", disable=not config.progress)

    stages.set_postfix_str("synthesizing held-out pairs")
    files["data"] = write_heldout_set(out / "data", config.num_images, config.size)
    stages.update(1)

    stages.set_postfix_str("exporting ONNX")
    exported = _export(config, loaded, out / "onnx")
    stages.update(1)

    stages.set_postfix_str("TensorRT engines")
    plugin_onnx = [e.path for e in exported if e.variant == "plugin" and e.precision in ("fp16", "int8")]
    engines = _build_engines(plugin_onnx, out / "engines", notes)
    stages.update(1)

    stages.set_postfix_str("parity")
    files["parity"] = out / "parity" / "parity.json"
    parity = _parity(config, loaded, [*(e.path for e in exported), *engines], files["parity"])
    stages.update(1)

    stages.set_postfix_str("benchmark")
    bench, predicted = _benchmarks(config, loaded, out, with_engines=bool(engines))
    notes += bench.notes
    files["bench"] = bench.results_json
    files["bench_predicted"] = predicted.results_json
    stages.update(1)

    stages.set_postfix_str("image quality")
    quality = _quality(config, loaded, files["data"])
    files["quality"] = write_text(out / "quality.json", json.dumps(quality, indent=2) + "\n")
    stages.update(1)

    stages.set_postfix_str("report")
    seconds = time.perf_counter() - start
    report = write_text(out / "report.md", _report(config, files, quality, parity, bench, predicted, notes, seconds))
    stages.update(1)
    stages.close()
    return DemoReport(report, seconds, files, notes)
