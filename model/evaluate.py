"""Image quality of a model on paired data: what ``m2ae eval`` runs.

PSNR and SSIM (scikit-image) of the restored and of the blurred input against the
sharp image, the same PSNR restricted to the blur mask (mask-weighted PSNR, as
LMD-ViT reports it: the squared error averaged over masked pixels only), and the IoU,
precision and recall of the predicted mask against the annotated one. Two ablations:
``zero_guide`` runs the body with the motion analyser's features zeroed (what the
guide is worth), and ``annotated_gate`` gates the body with the annotated mask instead
of the predicted one (what the restorer is worth with a perfect mask head). The exact
annotated mask also tells the restorer where the blur ends, which no predicted mask
does; ``annotated_dilation`` widens it by a few pixels to take that hint away.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm

from m2ae.errors import UserError
from m2ae.imageio import rgb_panel
from m2ae.model.heads import blur_probability, dilate, gate_morphology
from m2ae.model.network import GATE_PREDICTED, M2AENet
from m2ae.padding import crop_to, pad_to_multiple


@dataclass(frozen=True)
class EvalResult:
    psnr: float
    psnr_blurred: float
    psnr_masked: float
    psnr_masked_blurred: float
    ssim: float
    ssim_blurred: float
    mask_iou: float
    mask_precision: float
    mask_recall: float
    num_images: int
    num_masked_images: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: undefined metrics (no annotated mask) are None, since NaN is not JSON."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


def masked_psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the pixels where ``mask`` [H,W] is set, for CHW images in [0, 1]."""
    weight = mask.astype(np.float64)[None]
    count = weight.sum() * pred.shape[0]
    mse = float((weight * (pred.astype(np.float64) - target) ** 2).sum() / count)
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _ssim(pred: np.ndarray, target: np.ndarray) -> float:
    return float(structural_similarity(target, pred, channel_axis=0, data_range=1.0))


@torch.no_grad()
def restore(model: M2AENet, blurred: np.ndarray, device: str | torch.device = "cpu",
            zero_guide: bool = False, gate_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Restore one CHW image of any size; returns (restored CHW, gate HW bool): the
    predicted mask, or ``gate_mask`` [H,W] where given."""
    height, width = blurred.shape[-2:]
    padded = pad_to_multiple(blurred, model.config.multiple)
    image = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device)
    if gate_mask is None:
        gate = model.gate(model.mask_head(image), GATE_PREDICTED)
    else:
        mask = pad_to_multiple(np.asarray(gate_mask, dtype=np.float32)[None], model.config.multiple, mode="constant")
        gate = torch.from_numpy(np.ascontiguousarray(mask))[None].to(device)
    guide, _ = model.motion(image)
    if zero_guide:
        guide = torch.zeros_like(guide)
    restored = crop_to(model.restore(image, gate, guide)[0].float().cpu().numpy(), height, width)
    mask = crop_to(gate[0, 0].float().cpu().numpy(), height, width) > 0.5
    return np.clip(restored, 0.0, 1.0), mask


def evaluate(
    model: M2AENet,
    samples: Iterable[Mapping[str, np.ndarray | None]],
    device: str | torch.device = "cpu",
    progress: bool = True,
    total: int | None = None,
    zero_guide: bool = False,
    annotated_gate: bool = False,
    annotated_dilation: int = 0,
) -> EvalResult:
    """Score ``model`` (its own predicted mask as gate) on CHW ``blurred``/``sharp`` pairs.

    Each sample may carry a ``mask`` [1,H,W] or [H,W]; masked metrics and the IoU use
    the samples that have one (the IoU over the union of all of them). With
    ``annotated_gate`` that mask, dilated by ``annotated_dilation`` pixels (a square of
    that radius), is the gate (every sample needs one; the mask scores then score that
    gate, all 1 without dilation).
    """
    if annotated_dilation < 0:
        raise UserError(f"--annotated-mask-dilation must be 0 or more, got {annotated_dilation}")
    if annotated_dilation and not annotated_gate:
        raise UserError("--annotated-mask-dilation grows the gate of the annotated-mask ablation: add --annotated-mask")
    model.eval()
    psnr, psnr_b, ssim, ssim_b, psnr_m, psnr_mb = [], [], [], [], [], []
    inter = union = predicted = positives = 0
    count = annotated = 0
    for sample in tqdm(samples, total=total, desc="eval", unit="img", disable=not progress):
        blurred = np.asarray(sample["blurred"], dtype=np.float32)
        sharp = np.asarray(sample["sharp"], dtype=np.float32)
        gt = sample.get("mask")
        gt_mask = None if gt is None else np.asarray(gt).reshape(sharp.shape[-2:]) > 0.5
        if annotated_gate and gt_mask is None:
            raise UserError("the annotated-mask ablation needs pairs with a blur mask")
        gate_mask = None
        if annotated_gate:
            gate_mask = dilate(torch.from_numpy(gt_mask)[None, None].float(), annotated_dilation)[0, 0].numpy() > 0.5
        restored, pred_mask = restore(model, blurred, device, zero_guide, gate_mask)
        psnr.append(peak_signal_noise_ratio(sharp, restored, data_range=1.0))
        psnr_b.append(peak_signal_noise_ratio(sharp, blurred, data_range=1.0))
        ssim.append(_ssim(restored, sharp))
        ssim_b.append(_ssim(blurred, sharp))
        if gt_mask is not None:
            annotated += 1
            inter += int((gt_mask & pred_mask).sum())
            union += int((gt_mask | pred_mask).sum())
            predicted += int(pred_mask.sum())
            positives += int(gt_mask.sum())
            if gt_mask.any():
                psnr_m.append(masked_psnr(restored, sharp, gt_mask))
                psnr_mb.append(masked_psnr(blurred, sharp, gt_mask))
        count += 1
    if count == 0:
        raise ValueError("no images to evaluate")

    def mean(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    return EvalResult(
        psnr=mean(psnr),
        psnr_blurred=mean(psnr_b),
        psnr_masked=mean(psnr_m),
        psnr_masked_blurred=mean(psnr_mb),
        ssim=mean(ssim),
        ssim_blurred=mean(ssim_b),
        mask_iou=(inter / union if union else 1.0) if annotated else math.nan,
        mask_precision=(inter / predicted if predicted else 1.0) if annotated else math.nan,
        mask_recall=(inter / positives if positives else 1.0) if annotated else math.nan,
        num_images=count,
        num_masked_images=len(psnr_m),
    )


THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


@torch.no_grad()
def calibrate_threshold(
    model: M2AENet,
    samples: Iterable[Mapping[str, np.ndarray | None]],
    device: str | torch.device = "cpu",
    grid: Sequence[float] = THRESHOLD_GRID,
) -> float:
    """The p_blur threshold (on ``grid``) with the best mask IoU over ``samples``."""
    model.eval()
    inter = np.zeros(len(grid))
    union = np.zeros(len(grid))
    for sample in samples:
        gt = np.asarray(sample["mask"]).reshape(np.asarray(sample["blurred"]).shape[-2:]) > 0.5
        image = torch.from_numpy(pad_to_multiple(np.asarray(sample["blurred"], dtype=np.float32), model.config.multiple))
        height, width = gt.shape
        # Opening and dilating p_blur, then thresholding, equals the inference mask (threshold, then open and dilate).
        p_blur = gate_morphology(blur_probability(model.mask_head(image[None].to(device))), model.config.mask_opening,
                                 model.config.mask_dilation)
        p_blur = p_blur[0, 0, :height, :width].cpu().numpy()
        for i, threshold in enumerate(grid):
            pred = p_blur > threshold
            inter[i] += (pred & gt).sum()
            union[i] += (pred | gt).sum()
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return float(grid[int(np.argmax(iou))])


#: white gap between the panels and rows of a validation strip, in pixels
STRIP_GAP = 2


@torch.no_grad()
def validation_strip(
    model: M2AENet,
    samples: Sequence[Mapping[str, np.ndarray | None]],
    count: int = 2,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One image [H, W, 3] per validation: a row per sample (the first ``count``) of
    blurred | annotated mask | predicted mask | restored | sharp, so a run's progress
    can be seen, not only read."""
    model.eval()
    rows = []
    for sample in list(samples)[:count]:
        blurred = np.asarray(sample["blurred"], dtype=np.float32)
        sharp = np.asarray(sample["sharp"], dtype=np.float32)
        restored, predicted = restore(model, blurred, device)
        height, width = blurred.shape[-2:]
        gt = sample.get("mask")
        annotated = np.zeros((1, height, width), np.float32) if gt is None else np.asarray(gt, np.float32).reshape(1, height, width)
        panels = [rgb_panel(p) for p in (blurred, annotated, predicted[None].astype(np.float32), restored, sharp)]
        gap = np.ones((height, STRIP_GAP, 3), np.float32)
        rows.append(np.concatenate([piece for panel in panels for piece in (panel, gap)][:-1], axis=1))
    if not rows:
        raise ValueError("no samples for a validation strip")
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=1.0) for row in rows]
    gap = np.ones((STRIP_GAP, width, 3), np.float32)
    return np.concatenate([piece for row in rows for piece in (row, gap)][:-1], axis=0)
