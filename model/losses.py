"""The multi-task training loss: restoration (L1 + FFT L1), reblur, and mask BCE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from m2ae.model.heads import reblur
from m2ae.model.network import M2AEOutput


@dataclass(frozen=True)
class LossWeights:
    fft: float = 0.05
    reblur: float = 0.2
    mask: float = 0.5
    #: extra weight of blurred pixels in the mask BCE (they are the minority class)
    mask_pos_weight: float = 2.0


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    l1: torch.Tensor
    fft: torch.Tensor
    reblur: torch.Tensor
    mask: torch.Tensor


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = torch.fft.rfft2(pred.float()) - torch.fft.rfft2(target.float())
    return diff.abs().mean() / (pred.shape[-1] * pred.shape[-2]) ** 0.5


def mask_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """BCE on p_blur = softmax(logits)[1], i.e. on the logit difference."""
    margin = (logits[:, 1:2] - logits[:, 0:1]).float()
    weight = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(margin, target.float(), pos_weight=weight)


def m2ae_loss(out: M2AEOutput, blurred: torch.Tensor, sharp: torch.Tensor, gt_mask: torch.Tensor, weights: LossWeights) -> LossTerms:
    l1 = F.l1_loss(out.restored.float(), sharp.float())
    fft = fft_l1(out.restored, sharp)
    reblurred = reblur(out.restored.float(), out.trajectory.float())
    rb = F.l1_loss(reblurred, blurred.float())
    mask = mask_bce(out.mask_logits, gt_mask, weights.mask_pos_weight)
    total = l1 + weights.fft * fft + weights.reblur * rb + weights.mask * mask
    return LossTerms(total, l1.detach(), fft.detach(), rb.detach(), mask.detach())


@dataclass(frozen=True)
class MaskScores:
    """Agreement of a predicted 0/1 mask with the annotated one, pooled over pixels."""

    iou: float
    #: share of predicted pixels that are blurred: every false positive is compute spent
    precision: float
    #: share of blurred pixels that are predicted: every miss is blur left in the output
    recall: float


def mask_scores(pred: torch.Tensor, target: torch.Tensor) -> MaskScores:
    """IoU, precision and recall over the whole batch; each 1.0 when its denominator is 0."""
    pred, target = pred > 0.5, target > 0.5
    inter = (pred & target).sum().item()
    union = (pred | target).sum().item()
    predicted, annotated = pred.sum().item(), target.sum().item()
    return MaskScores(
        iou=1.0 if union == 0 else inter / union,
        precision=1.0 if predicted == 0 else inter / predicted,
        recall=1.0 if annotated == 0 else inter / annotated,
    )


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of two 0/1 masks over the whole batch; 1.0 when both are empty."""
    return mask_scores(pred, target).iou


def masked_psnr_gain(restored: torch.Tensor, blurred: torch.Tensor, sharp: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR inside ``mask`` of ``restored`` minus that of ``blurred`` (dB, pooled over the batch)."""
    weight = (mask > 0.5).float().expand_as(sharp)
    count = weight.sum().item()
    if count == 0:
        return 0.0
    mse_restored = ((restored.float() - sharp.float()) ** 2 * weight).sum().item() / count
    mse_blurred = ((blurred.float() - sharp.float()) ** 2 * weight).sum().item() / count
    if mse_restored == 0 or mse_blurred == 0:
        return 0.0
    return 10.0 * math.log10(mse_blurred / mse_restored)
