"""m2ae bench: blob masks, graph MAC counting, timing, and the sweep end to end (CPU)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from m2ae import cli
from m2ae.benchmarks import latency, timing
from m2ae.benchmarks.latency import BenchConfig, BenchReport, run_benchmark
from m2ae.benchmarks.latency_records import RECORD_FIELDS, BenchRecord, add_speedups, break_even_lines, format_table
from m2ae.benchmarks.macs import count_macs
from m2ae.benchmarks.masks import blob_mask
from m2ae.benchmarks.sysinfo import PowerSampler, cpu_simd, machine_info, parse_power_mw
from m2ae.cli_args import parse_size
from m2ae.errors import UserError
from m2ae.export.onnx_export import model_filename
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK
from m2ae.hashing import file_sha256
from m2ae.model import checkpoint as checkpoint_module
from m2ae.model.checkpoint import load_checkpoint, save_checkpoint
from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet
from m2ae.platform_info import tensorrt_unavailable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REQUIRED_KEYS = {"backend", "variant", "precision", "blur", "height", "width", "p50_ms", "p90_ms", "p99_ms",
                 "mean_ms", "macs", "threads", "iters", "warmup", "throughput_ips", "blur_measured", "occupancy"}
CONFIG = M2AEConfig(preset="custom", width=4, num_scales=3, enc_blocks=(1, 1, 1), dec_blocks=(1, 1),
                    motion_channels=4, mask_channels=4)


# ---------------------------------------------------------------- blob masks


@pytest.mark.parametrize("shape", [(32, 32), (45, 70), (1, 9)])
def test_blob_mask_empty_and_full(shape):
    empty = blob_mask(*shape, 0.0, seed=3)
    full = blob_mask(*shape, 1.0, seed=3)
    assert empty.shape == full.shape == (1, 1, *shape)
    assert empty.dtype == full.dtype == np.float32
    assert not empty.any()
    assert full.all()


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
def test_blob_mask_ratio_within_one_percent(ratio, shape):
    mask = blob_mask(*shape, ratio, seed=7)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(float(mask.mean()) - ratio) <= 0.01


def test_blob_mask_reproducible_and_seeded():
    a = blob_mask(64, 96, 0.2, seed=1)
    assert np.array_equal(a, blob_mask(64, 96, 0.2, seed=1))
    assert not np.array_equal(a, blob_mask(64, 96, 0.2, seed=2))


def test_blob_mask_is_blobby_not_scattered():
    """Blobs: most masked pixels have their 4 neighbours masked too (random noise would not)."""
    mask = blob_mask(128, 128, 0.2, seed=0)[0, 0].astype(bool)
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    assert inner.sum() > 0.8 * mask.sum()


def test_blob_mask_rejects_bad_ratio():
    with pytest.raises(UserError):
        blob_mask(8, 8, 1.5, seed=0)


# ---------------------------------------------------------------- MACs


def _hand_built_model() -> onnx.ModelProto:
    """Conv, grouped strided Conv, ConvTranspose, a MatMul with data-dependent K, a Gemm, and a Relu."""
    inits = [
        numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w_conv"),
        numpy_helper.from_array(np.ones((6, 1, 3, 3), np.float32), "w_group"),
        numpy_helper.from_array(np.ones((3, 2, 2, 2), np.float32), "w_convt"),
        numpy_helper.from_array(np.ones((4, 2), np.float32), "w_mm"),
        numpy_helper.from_array(np.ones((5, 3), np.float32), "b_gemm"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Conv", ["x", "w_group"], ["group"], pads=[1, 1, 1, 1], strides=[2, 2], group=3),
        helper.make_node("ConvTranspose", ["x", "w_convt"], ["convt"], strides=[2, 2]),
        # K = number of nonzero mask pixels: only known at run time.
        helper.make_node("NonZero", ["m"], ["nz"]),
        helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["w_mm", "nzf"], ["mm"]),
        helper.make_node("Gemm", ["a", "b_gemm"], ["gemm"], transA=1),
    ]
    graph = helper.make_graph(
        nodes, "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [4, 4]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [5, 6])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
         for name in ("relu", "group", "convt", "mm", "gemm")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_count_macs_hand_built_graph(rng):
    model = _hand_built_model()
    mask = (rng.random((4, 4)) < 0.4).astype(np.float32)
    mask[0, 0] = 1.0
    k = int(mask.sum())
    feeds = {"x": rng.random((1, 3, 8, 8), dtype=np.float32), "m": mask, "a": rng.random((5, 6), dtype=np.float32)}
    conv = 1 * 8 * 8 * 8 * 3 * 3 * 3  # N*Hout*Wout*Cout*(Cin/groups)*kh*kw
    group = 1 * 4 * 4 * 6 * (3 // 3) * 3 * 3  # stride 2, 3 groups
    convt = 1 * 8 * 8 * 3 * (2 // 1) * 2 * 2  # N*Hin*Win*Cin*(Cout/groups)*kh*kw
    matmul = 4 * 2 * k  # M*K*N with [4,2] @ [2,k]
    gemm = 6 * 5 * 3  # A^T is [6,5], B [5,3]
    assert count_macs(model, feeds) == conv + group + convt + matmul + gemm


def test_count_macs_follows_data_dependent_k(rng, tmp_path):
    path = tmp_path / "hand.onnx"
    onnx.save(_hand_built_model(), path)
    feeds = {"x": rng.random((1, 3, 8, 8), dtype=np.float32), "a": rng.random((5, 6), dtype=np.float32)}
    empty = count_macs(path, {**feeds, "m": np.zeros((4, 4), np.float32)})
    full = count_macs(path, {**feeds, "m": np.ones((4, 4), np.float32)})
    assert full - empty == 4 * 2 * 16


# ---------------------------------------------------------------- timing and machine info


def test_time_calls_times_each_run_after_the_warmup(monkeypatch):
    """On a scripted clock: warm-up runs are not timed, each timed run is timed alone, in ms."""
    durations = iter([0.001, 0.002, 0.003, 0.004, 0.100])  # seconds per timed run
    now = [0.0]

    def clock() -> float:
        return now[0]

    def call() -> None:
        calls.append(1)
        if len(calls) > 2:  # after the two warm-up runs
            now[0] += next(durations)

    calls: list[int] = []
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    result = timing.time_calls(call, iters=5, warmup=2)
    assert len(calls) == 7 and result.timer == "wall"
    assert result.times_ms == pytest.approx((1.0, 2.0, 3.0, 4.0, 100.0))
    assert result.percentile(50) == pytest.approx(3.0)
    assert result.mean == pytest.approx(22.0)


def test_cuda_events_bracket_each_timed_call(monkeypatch):
    """The GPU timer on fake events: a start and an end event around each timed call, and the
    end waited for before its time is read."""
    log: list[str] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.at = -1

        def record(self) -> None:
            log.append("record")
            self.at = len(log)

        def synchronize(self) -> None:
            log.append("sync")

        def elapsed_time(self, end: "FakeEvent") -> float:
            return float(end.at - self.at)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    result = timing.time_calls(lambda: log.append("call"), iters=2, warmup=1, cuda_events=True)
    assert log == ["call"] + ["record", "call", "record", "sync"] * 2
    assert result.timer == "cuda_events" and result.times_ms == (2.0, 2.0)


def test_parse_power_lines():
    orin = "RAM 2165/7620MB (lfb 1x4MB) CPU [2%@729] GR3D_FREQ 0% VDD_IN 4893mW/4893mW VDD_CPU_GPU_CV 490mW/490mW"
    nano = "RAM 1500/3964MB CPU [10%@102] POM_5V_IN 1708/1708 POM_5V_GPU 40/40 POM_5V_CPU 240/240"
    assert parse_power_mw(orin) == 4893.0
    assert parse_power_mw(nano) == 1708.0
    assert parse_power_mw("RAM 1500/3964MB CPU [10%@102]") is None


def test_power_sampler_off_is_inert():
    with PowerSampler(enabled=False) as sampler:
        pass
    assert sampler.mean_mw is None


def test_machine_info_is_json_ready():
    info = machine_info()
    json.dumps(info)
    assert info["cpu_count"] >= 1
    assert info["torch"] == torch.__version__
    assert info["cpu_simd"] == cpu_simd()


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw\n", "avx512"),
    ("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n", "avx2"),
    ("processor\t: 0\nflags\t\t: fpu sse2\n", None),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\nCPU part\t: 0xd42\n", "neon"),
    ("processor\t: 0\nFeatures\t: fp asimd sve sve2\n", "sve"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\n", None),
])
def test_cpu_simd_reads_the_widest_vector_unit(tmp_path, text, expected):
    """x86 `flags` and Arm (Jetson) `Features` lines; the widest listed unit wins."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_simd(cpuinfo) == expected
    assert cpu_simd(tmp_path / "missing") is None


# ---------------------------------------------------------------- config validation and CLI


def test_parse_size():
    """The --size parser of `m2ae bench`: a side (square) or height x width."""
    assert parse_size("512", "--size") == (512, 512)
    assert parse_size("1080x1920", "--size") == (1080, 1920)
    for bad in ("0", "12x", "x12", "-4", "axb", "1x2x3"):
        with pytest.raises(UserError, match="--size"):
            parse_size(bad, "--size")


@pytest.mark.parametrize("change", [
    {"backends": ("onnx", "tflite")}, {"variants": ("sparse",)}, {"precisions": ("fp64",)},
    {"blur": (-1.0,)}, {"blur": (100.5,)}, {"iters": 0}, {"warmup": -1}, {"threads": 0}, {"sizes": ((0, 8),)},
])
def test_bench_config_rejects(change, tmp_path):
    with pytest.raises(UserError):
        BenchConfig(out=tmp_path, **change)


def test_torch_runs_portable_and_plugin_once_as_pruned(tmp_path):
    """On torch both pruned lowerings mean the checkpoint's pruned forward: one job, counted on
    the first of them asked for."""
    config = BenchConfig(out=tmp_path, backends=("torch",), variants=("dense", "portable", "plugin"),
                         precisions=("fp32", "fp16"))
    notes: list[str] = []
    jobs = latency._plan(config, notes)
    assert [(job.variant, job.precision, job.graph) for job in jobs] == [("dense", "fp32", "dense"),
                                                                         ("pruned", "fp32", "portable")]
    assert notes == ["torch: runs fp32 only; fp16 skipped"]


@pytest.mark.parametrize("args", [
    ["--blur", "0,120"], ["--blur", "ten"], ["--backends", "onnx,cuda"], ["--variants", "dense,foo"],
    ["--precision", "fp8"], ["--size", "12x"], ["--size", "1080*1920"],
])
def test_cli_bad_arguments_exit_2_with_one_line(args, tmp_path, capsys):
    assert cli.main(["bench", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m2ae bench: error:") and "\n" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- end to end


@dataclass
class Run:
    config: BenchConfig
    report: BenchReport


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("bench")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = M2AENet(CONFIG).eval()
    checkpoint = save_checkpoint(root / "net.pt", {"config": CONFIG.to_dict(), "step": 0, "model": model.state_dict()})
    config = BenchConfig(
        out=root / "out", checkpoint=str(checkpoint), backends=("onnx", "torch", "trt"), variants=("dense", "plugin"),
        blur=(0.0, 100.0), sizes=((30, 30),), iters=2, warmup=1, threads=1, progress=False,
    )
    return Run(config, run_benchmark(config))


@pytest.mark.slow
def test_bench_records_have_required_fields(bench_run):
    records = json.loads(bench_run.report.results_json.read_text())
    assert isinstance(records, list)
    measured = {(r["backend"], r["variant"], r["blur"]) for r in records}
    expected = {(b, v, blur) for b, pruned in (("onnx", "plugin"), ("torch", "pruned")) for v in ("dense", pruned)
                for blur in (0.0, 100.0)}
    assert expected <= measured
    for record in records:
        assert REQUIRED_KEYS <= set(record)
        # 30 is rounded up to the network multiple (4).
        assert (record["height"], record["width"]) == (32, 32)
        # Two timed runs: their median is their mean, and throughput is its inverse.
        assert record["p50_ms"] == pytest.approx(record["mean_ms"])
        assert record["throughput_ips"] == pytest.approx(1e3 / record["mean_ms"])
        assert record["iters"] == 2 and record["warmup"] == 1
        assert record["blur_measured"] == record["blur"]
        assert record["occupancy"] == record["blur"]  # blob masks of 0% and 100%: no tile or every tile
        if record["variant"] != "dense" and record["blur"] == 0.0:
            assert record["macs"] == 0, "an all-sharp frame skips the body"
        else:
            assert record["macs"] > 0
        if record["device"] == "cpu":
            assert record["threads"] == 1
    assert any("rounded up to 32x32" in note for note in bench_run.report.notes)


@pytest.mark.slow
def test_bench_speedup_and_macs_consistent(bench_run):
    by_key = {(r.backend, r.variant, r.blur): r for r in bench_run.report.records}
    for backend, pruned in (("onnx", "plugin"), ("torch", "pruned")):
        for blur in (0.0, 100.0):
            dense, plugin = by_key[(backend, "dense", blur)], by_key[(backend, pruned, blur)]
            assert dense.speedup_vs_dense == pytest.approx(1.0)
            assert plugin.speedup_vs_dense == pytest.approx(dense.p50_ms / plugin.p50_ms)
    assert by_key[("onnx", "plugin", 0.0)].macs < by_key[("onnx", "plugin", 100.0)].macs
    assert by_key[("onnx", "dense", 0.0)].macs == by_key[("onnx", "dense", 100.0)].macs
    # Every tile is active at 100%: above dense_above, the pruned graph runs the dense body.
    assert by_key[("onnx", "plugin", 100.0)].macs == by_key[("onnx", "dense", 100.0)].macs
    assert by_key[("torch", "pruned", 0.0)].macs == by_key[("onnx", "plugin", 0.0)].macs
    table = format_table(bench_run.report.records)
    assert len(table.splitlines()) == len(bench_run.report.records) + 1


@pytest.mark.slow
def test_bench_csv_and_machine_json(bench_run):
    with bench_run.report.results_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(bench_run.report.records)
    assert tuple(rows[0]) == RECORD_FIELDS
    machine = json.loads(bench_run.report.machine_json.read_text())
    assert machine["config"]["iters"] == 2
    assert machine["machine"]["cpu_count"] >= 1


@pytest.mark.slow
def test_bench_plots_are_png(bench_run):
    names = {p.name for p in bench_run.report.plots}
    assert names == {"latency_32x32.png", "speedup_32x32.png", "macs_32x32.png"}
    for path in bench_run.report.plots:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()


@pytest.mark.slow
def test_bench_trt_skipped_or_measured(bench_run):
    reason = tensorrt_unavailable()
    trt_records = [r for r in bench_run.report.records if r.backend == "trt"]
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the trt backend ran instead of being skipped")
    assert not trt_records
    assert sum(note.startswith("trt: skipped:") for note in bench_run.report.notes) == 1


@pytest.mark.slow
def test_count_macs_on_exported_model(bench_run, rng):
    """MACs follow the branch taken: none for an all-sharp frame, the tiled body's for a
    few active tiles, the dense body's above ``dense_above``."""
    models = bench_run.config.models_path
    size = 160  # 5 x 5 scale-0 tiles of 32
    image = rng.random((1, 3, size, size), dtype=np.float32)

    def macs(variant: str, ratio: float) -> int:
        feeds = {INPUT_IMAGE: image, INPUT_MASK: blob_mask(size, size, ratio, seed=4)}
        return count_macs(models / model_filename(variant, "fp32", True), feeds)

    dense = [macs("dense", r) for r in (0.0, 0.02, 1.0)]
    assert dense[0] == dense[1] == dense[2]
    plugin = [macs("plugin", r) for r in (0.0, 0.02, 1.0)]
    assert plugin[0] == 0
    assert 0 < plugin[1] < dense[0]
    assert plugin[2] == dense[2]


@pytest.mark.slow
def test_bench_reuses_exported_models(bench_run):
    models = bench_run.config.models_path
    before = {p.name: p.stat().st_mtime_ns for p in models.glob("*.onnx")}
    config = BenchConfig(out=bench_run.config.out / "again", checkpoint=bench_run.config.checkpoint,
                         backends=("onnx",), variants=("dense",), blur=(0.0,), sizes=((32, 32),), iters=1,
                         warmup=0, threads=1, models_dir=models, progress=False, plots=False)
    report = run_benchmark(config)
    assert len(report.records) == 1 and not report.plots
    assert {p.name: p.stat().st_mtime_ns for p in models.glob("*.onnx")} == before


@pytest.mark.slow
def test_bench_reexports_models_of_another_checkpoint(bench_run, tmp_path):
    stale = tmp_path / "models"
    stale.mkdir()
    name = model_filename("dense", "fp32", True)
    model = onnx.load(bench_run.config.models_path / name)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "m2ae.checkpoint_sha256": "0" * 64})
    onnx.save(model, stale / name)
    config = BenchConfig(out=tmp_path / "out", checkpoint=bench_run.config.checkpoint, backends=("onnx",),
                         variants=("dense",), blur=(0.0,), sizes=((32, 32),), iters=1, warmup=0, threads=1,
                         models_dir=stale, progress=False, plots=False)
    run_benchmark(config)
    metadata = {p.key: p.value for p in onnx.load(stale / name).metadata_props}
    assert metadata["m2ae.checkpoint_sha256"] == file_sha256(bench_run.config.checkpoint)


@pytest.mark.slow
def test_cli_bench_prints_table(bench_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["bench", "--checkpoint", bench_run.config.checkpoint, "--backends", "onnx",
                     "--variants", "dense", "--blur", "0,50", "--size", "32", "--iters", "1", "--warmup", "0",
                     "--threads", "1", "--models", str(bench_run.config.models_path), "--no-plots",
                     "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["backend", "variant", "precision", "size", "blur%"]
    assert [line.split()[4] for line in lines[1:3]] == ["0", "50"]
    assert len(json.loads((out / "results.json").read_text())) == 2


def _record(variant: str, occupancy: float, p50: float) -> BenchRecord:
    return BenchRecord(
        backend="onnx", variant=variant, precision="fp32", blur=occupancy, blur_measured=occupancy,
        occupancy=occupancy, height=64, width=64, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50,
        throughput_ips=1e3 / p50, macs=1, iters=1, warmup=0, threads=1, device="cpu", timer="wall",
    )


def test_break_even_interpolates_the_crossing_of_the_tiled_body() -> None:
    records = [_record("dense", occ, 100.0) for occ in (0.0, 20.0, 40.0, 60.0)]
    # tiled: 50 ms at 20%, 150 ms at 60% -> meets 100 ms at 40%; the 0% point (skipped body) is ignored
    records += [_record("plugin", 0.0, 1.0), _record("plugin", 20.0, 50.0), _record("plugin", 60.0, 150.0)]
    add_speedups(records)
    (line,) = break_even_lines(records, dense_above=1.0)
    assert "meets dense at 40% tile occupancy" in line and "--dense-above 0.40" in line
    # Exported with a switch at 0.5: the 60% point ran the dense body and must not count.
    lines = break_even_lines(records, dense_above=0.5)
    assert "ran the dense body" in lines[0]
    assert "faster than dense at every measured occupancy (20-20%)" in lines[1]


@pytest.mark.slow
def test_bench_on_predicted_masks(bench_run):
    """``masks="predicted"``: one record per held-out image and variant, its blur the mask's own share."""
    config = BenchConfig(out=bench_run.config.out / "predicted", checkpoint=bench_run.config.checkpoint,
                         backends=("onnx",), variants=("dense", "plugin"), masks="predicted", predicted_images=2,
                         sizes=((32, 32),), iters=1, warmup=0, threads=1, models_dir=bench_run.config.models_path,
                         progress=False, plots=False)
    report = run_benchmark(config)
    assert [r.variant for r in report.records] == ["dense", "dense", "plugin", "plugin"]
    assert [r.blur for r in report.records[:2]] == [r.blur for r in report.records[2:]]
    for record in report.records:
        assert record.blur == record.blur_measured
        assert 0.0 <= record.blur <= record.occupancy <= 100.0
    with pytest.raises(UserError, match="--masks"):
        BenchConfig(out=config.out, masks="painted")


@pytest.mark.slow
def test_bench_rounds_pool_the_timed_runs(bench_run):
    config = BenchConfig(out=bench_run.config.out / "rounds", checkpoint=bench_run.config.checkpoint,
                         backends=("onnx",), variants=("dense", "plugin"), blur=(0.0, 50.0), sizes=((32, 32),),
                         iters=2, warmup=0, rounds=3, threads=1, models_dir=bench_run.config.models_path,
                         progress=False, plots=False)
    report = run_benchmark(config)
    assert sorted((r.variant, r.blur) for r in report.records) == [("dense", 0.0), ("dense", 50.0),
                                                                   ("plugin", 0.0), ("plugin", 50.0)]
    assert all(r.iters == 6 for r in report.records)
    with pytest.raises(UserError, match="--rounds"):
        BenchConfig(out=config.out, rounds=0)


@pytest.mark.slow
def test_bench_on_a_loaded_checkpoint_reads_no_checkpoint_file(bench_run, monkeypatch):
    """An orchestrator (``m2ae demo``) loads the checkpoint once: handed the loaded one, the
    sweep neither reloads it for torch nor for the exports it finds current."""
    loaded = load_checkpoint(bench_run.config.checkpoint)
    reads = []
    real_read = checkpoint_module.read_checkpoint
    monkeypatch.setattr(checkpoint_module, "read_checkpoint", lambda path: reads.append(path) or real_read(path))
    config = BenchConfig(out=bench_run.config.out / "loaded", checkpoint=loaded, backends=("torch", "onnx"),
                         variants=("dense", "plugin"), blur=(50.0,), sizes=((32, 32),), iters=1, warmup=0, threads=1,
                         models_dir=bench_run.config.models_path, progress=False, plots=False)
    report = run_benchmark(config)
    assert sorted((r.backend, r.variant) for r in report.records) == [("onnx", "dense"), ("onnx", "plugin"),
                                                                      ("torch", "dense"), ("torch", "pruned")]
    assert reads == []
    machine = json.loads(report.machine_json.read_text())
    assert machine["config"]["checkpoint"] == str(loaded.path)


def test_gpu_checks_stops_with_advice_when_m2ae_is_missing_and_no_wheels(tmp_path):
    """On a GPU machine without m2ae and without the wheels of `gpu_wheels.sh`, the prepared
    run names the way out instead of running every step into an import error."""
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "benchmarks" / "gpu_checks.sh", checkout / "benchmarks")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    python3 = fake_bin / "python3"
    python3.write_text("#!/bin/sh\nexit 1\n")  # every import fails, as where m2ae is not installed
    python3.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(checkout / "benchmarks" / "gpu_checks.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "gpu_wheels.sh" in result.stdout
    assert "== kernels_build" not in result.stdout
