"""How far a candidate's outputs are from the reference's, and the limits each precision
must keep: pure numpy, no models (``parity`` runs them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from m2ae.errors import UserError


@dataclass(frozen=True)
class PrecisionThreshold:
    """Limits for one precision; ``None`` means the metric is not judged."""

    max_abs: float | None = None
    min_psnr_db: float | None = None
    max_flip_rate: float = 0.0


@dataclass(frozen=True)
class ParityThresholds:
    """What each candidate precision must reach against the fp32 reference.

    - fp32: the same arithmetic in another order (ORT vs PyTorch kernels, the plugin's
      gather/scatter vs dense masking) differs by float32 rounding only, a few 1e-6 on
      [0, 1] images, so ``max abs <= 1e-4`` leaves 10x headroom and still catches any
      real graph error (a wrong tap or a missed pixel moves outputs by > 1e-2). A mask
      pixel flips only where p_blur lands within rounding of the threshold, a handful of
      pixels per million, hence ``flip rate <= 1e-4``.
    - fp16: 11-bit mantissas give ~5e-4 relative error per op; through the network this
      is ~1e-3 RMS on the output, i.e. ~60 dB. ``PSNR >= 40 dB`` (RMS error 1%) is well
      below visible change. The mask head stays fp32 in the export, but its input
      features do not, so pixels near the threshold may flip: ``<= 0.5%``.
    - int8: per-channel symmetric weights and calibrated activations give ~1% relative
      error per layer; ``PSNR >= 30 dB`` (RMS error 3%) is the usual bar for "visually
      equal" quantised restoration. Quantised features move p_blur more, so up to 2% of
      pixels (a thin band along mask borders) may flip.
    """

    fp32: PrecisionThreshold = PrecisionThreshold(max_abs=1e-4, max_flip_rate=1e-4)
    fp16: PrecisionThreshold = PrecisionThreshold(min_psnr_db=40.0, max_flip_rate=0.005)
    int8: PrecisionThreshold = PrecisionThreshold(min_psnr_db=30.0, max_flip_rate=0.02)

    def for_precision(self, precision: str, source: str) -> PrecisionThreshold:
        threshold = getattr(self, precision, None) if precision in self.precisions() else None
        if threshold is None:
            raise UserError(
                f"{source}: precision {precision!r} has no parity threshold; known: {', '.join(self.precisions())}"
            )
        return threshold

    @staticmethod
    def precisions() -> tuple[str, ...]:
        return ("fp32", "fp16", "int8")

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        return {p: asdict(getattr(self, p)) for p in self.precisions()}


@dataclass(frozen=True)
class ParityMetrics:
    """Candidate vs reference over all images (padding cropped off). ``psnr_db`` is
    ``inf`` for identical outputs (data range 1)."""

    max_abs: float
    mean_abs: float
    psnr_db: float
    mask_flip_rate: float
    flipped_pixels: int
    mask_pixels: int

    def to_dict(self) -> dict[str, float | int | None]:
        # JSON has no infinity or NaN: identical outputs (PSNR inf) and NaN outputs are written as null.
        return {key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in asdict(self).items()}


def parity_metrics(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> ParityMetrics:
    """Scores over (candidate restored, reference restored, candidate mask, reference mask) per image."""
    maxima: list[float] = [0.0]
    sum_abs, sum_sq, values, flipped, pixels = 0.0, 0.0, 0, 0, 0
    for restored, ref_restored, mask, ref_mask in pairs:
        diff = np.abs(restored.astype(np.float64) - ref_restored.astype(np.float64))
        if diff.size:
            maxima.append(float(diff.max()))
        sum_abs += float(diff.sum())
        sum_sq += float(np.square(diff).sum())
        values += diff.size
        flipped += int(np.count_nonzero((mask > 0.5) != (ref_mask > 0.5)))
        pixels += ref_mask.size
    mse = sum_sq / max(values, 1)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    # np.max, unlike max(), propagates a NaN.
    return ParityMetrics(float(np.max(maxima)), sum_abs / max(values, 1), psnr, flipped / max(pixels, 1), flipped, pixels)


def threshold_violations(metrics: ParityMetrics, threshold: PrecisionThreshold) -> list[str]:
    """What ``metrics`` break; NaN outputs break every limit (each test is "within", never "beyond")."""
    violations = []
    if threshold.max_abs is not None and not metrics.max_abs <= threshold.max_abs:
        violations.append(f"max abs {metrics.max_abs:.3g} > {threshold.max_abs:.3g}")
    if threshold.min_psnr_db is not None and not metrics.psnr_db >= threshold.min_psnr_db:
        violations.append(f"PSNR {metrics.psnr_db:.2f} dB < {threshold.min_psnr_db:.2f} dB")
    if not metrics.mask_flip_rate <= threshold.max_flip_rate:
        violations.append(f"mask flip rate {metrics.mask_flip_rate:.3%} > {threshold.max_flip_rate:.3%}")
    return violations
