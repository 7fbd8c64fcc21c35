"""``m2ae demo`` end to end on a small configuration: every stage writes its part of the
report, and the checkpoint is read from disk once, however many stages use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2ae.benchmarks.demo import DemoConfig, run_demo
from m2ae.model import checkpoint as checkpoint_module


@pytest.mark.slow
def test_demo_writes_the_report_and_reads_the_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real_read = checkpoint_module.read_checkpoint
    monkeypatch.setattr(checkpoint_module, "read_checkpoint", lambda path: reads.append(path) or real_read(path))
    config = DemoConfig(out=tmp_path / "demo", num_images=2, size=64, bench_size=64, blur=(0.0, 100.0),
                        predicted_images=1, iters=1, warmup=0, threads=1, progress=False)
    result = run_demo(config)

    assert len(reads) == 1, reads
    report = result.report.read_text()
    for heading in ("## Image quality", "## Parity against PyTorch", "## Latency (64x64, forced blob masks)",
                    "## Latency (64x64, the masks the model predicts"):
        assert heading in report
    parity = json.loads(result.files["parity"].read_text())
    fp32 = [c for c in parity["candidates"] if c["precision"] == "fp32"]
    assert len(fp32) == 3 and all(c["status"] == "pass" for c in fp32)
    bench = json.loads(result.files["bench"].read_text())
    assert {(r["variant"], r["blur"]) for r in bench} == {(v, b) for v in ("dense", "portable", "plugin")
                                                          for b in (0.0, 100.0)}
    predicted = json.loads(result.files["bench_predicted"].read_text())
    assert [r["variant"] for r in predicted] == ["dense", "plugin"]
