"""Training loop behind ``m2ae train``: resumable, deterministic by step, DDP-ready.

Every step's data and Gumbel noise derive from ``(seed, step, rank)``, so a run
resumed from a checkpoint after a kill continues exactly where the checkpoint left
it: no step is lost or seen twice. Several GPUs: launch with ``torchrun``; each rank
draws its own samples and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps
from m2ae.errors import UserError
from m2ae.imageio import write_image
from m2ae.model.checkpoint import read_checkpoint, save_checkpoint
from m2ae.model.config import M2AEConfig, get_preset
from m2ae.model.evaluate import EvalResult, calibrate_threshold, evaluate, validation_strip
from m2ae.model.gates import GateAugment, training_gate
from m2ae.model.losses import LossWeights, m2ae_loss, mask_scores, masked_psnr_gain
from m2ae.model.network import M2AENet

LAST = "last.pt"
FINAL = "final.pt"


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    data: str = "synthetic"
    steps: int = 2000
    out: str = "runs/tiny"
    batch_size: int = 8
    crop: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    #: fraction of steps over which the gate fades from ground truth to predicted
    teacher_forcing: float = 1.0
    #: largest object motion of synthetic training pairs, in pixels
    synthetic_motion: float = 16.0
    gumbel_tau: float = 1.0
    seed: int = 0
    val_every: int = 250
    val_images: int = 8
    ckpt_every: int = 100
    loss: LossWeights = field(default_factory=LossWeights)
    #: the mask head's context levels (``M2AEConfig.mask_context``); None keeps the preset's
    mask_context: int | None = None
    #: extra sharp regions in teacher-forced gates (see ``m2ae.model.gates``)
    gates: GateAugment = field(default_factory=GateAugment)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "crop", "val_every", "ckpt_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        # As `not low < x < high`, so NaN, false in every comparison, is refused too.
        if not 0.0 < self.lr < math.inf:
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.teacher_forcing < math.inf:
            raise UserError(f"--teacher-forcing must be 0 (no ground-truth gates) or more, got {self.teacher_forcing}")
        # numpy's SeedSequence takes non-negative seeds, torch.manual_seed fewer than 2**64.
        if not 0.0 <= self.loss.reblur < math.inf:
            raise UserError(f"--reblur-weight must be 0 or more, got {self.loss.reblur}")
        if not 0 <= self.seed < 2**64:
            raise UserError(f"--seed must be 0 or more and below 2**64, got {self.seed}")


def model_config_of(config: TrainConfig) -> M2AEConfig:
    """The network a run trains: its preset, with the run's overrides."""
    model_config = get_preset(config.preset)
    if config.mask_context is None:
        return model_config
    try:
        return dataclasses.replace(model_config, mask_context=config.mask_context)
    except ValueError as exc:
        raise UserError(f"--mask-context {config.mask_context}: {exc}") from None


class BatchSource(Protocol):
    def batch(self, step: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        """Tensors ``blurred``, ``sharp``, ``mask`` [B,*,H,W] for this step and rank."""

    def validation(self) -> list[dict[str, np.ndarray]]:
        """A fixed held-out list of CHW samples."""

    def calibration(self) -> list[dict[str, np.ndarray]]:
        """Training-distribution CHW samples never used for a step (to choose the threshold)."""


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def teacher_forcing_probability(config: TrainConfig, step: int) -> float:
    """Chance that a step gates with the ground-truth mask: 1 at the start, 0 after the fade."""
    fade = config.teacher_forcing * config.steps
    return 0.0 if fade <= 0 else max(0.0, 1.0 - step / fade)


def make_source(config: TrainConfig) -> BatchSource:
    from m2ae.model.data.sources import FolderSource, SyntheticSource

    if config.data == "synthetic":
        return SyntheticSource(config.crop, config.batch_size, config.seed, config.val_images, config.synthetic_motion)
    return FolderSource(Path(config.data), config.crop, config.batch_size, config.seed, config.val_images)


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    info = _Distributed(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@dataclass(frozen=True)
class TrainResult:
    step: int
    last_checkpoint: Path
    final_checkpoint: Path | None
    validation: EvalResult | None
    steps_per_second: float


#: What a resumed run may change: how long it runs and how often it reports.
RESUME_MAY_CHANGE = frozenset({"steps", "out", "val_every", "val_images", "ckpt_every"})


def _check_resumable(config: TrainConfig, saved: Any, last_path: Path) -> None:
    """Refuse a resume whose data, noise or optimisation differ from the saved run's."""
    if not isinstance(saved, dict):
        return
    current = asdict(config) | {"loss": asdict(config.loss)}
    changed = [f"--{name.replace('_', '-')} {saved[name]!r} -> {current[name]!r}" for name in current
               if name not in RESUME_MAY_CHANGE and name in saved and saved[name] != current[name]]
    if changed:
        raise UserError(f"--resume: {last_path} was trained with other settings ({'; '.join(changed)}); "
                        "resume with the original ones or start a new run with another --out")


def _free_memory_bytes() -> tuple[int, str] | None:
    """Memory a training step may take here and where: free GPU memory, else the RAM the
    kernel still hands out, capped by a container's limit; None where neither can be read."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))[0], "the GPU"
    limits = []
    with contextlib.suppress(OSError):
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if found:
            limits.append(int(found.group(1)) * 1024)
    # The cgroup's whole limit, not limit minus usage: its usage counts page cache the kernel
    # would reclaim. v2 writes "max" and v1 a huge number for no limit; neither lowers min().
    for limit_file in ("memory.max", "memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int((Path("/sys/fs/cgroup") / limit_file).read_text()))
    return (min(limits), "this machine") if limits else None


def _check_step_fits(config: TrainConfig, model_config: M2AEConfig) -> None:
    """Refuse a step that cannot fit in memory: past it, the kernel kills the run without a word."""
    free = _free_memory_bytes()
    if free is None:
        return
    have, where = free
    # Measured in fp32 on the CPU; on the GPU autocast keeps most activations in 16 bits.
    need = model_config.train_step_bytes(config.batch_size, config.crop) // (2 if torch.cuda.is_available() else 1)
    if need <= have:
        return
    per_crop_pixel = need / (config.batch_size * config.crop**2)
    fits = int(math.sqrt(have / (config.batch_size * per_crop_pixel))) // model_config.multiple * model_config.multiple
    advice = "lower --batch-size"
    if fits >= model_config.min_size:
        advice = f"lower --crop (below about {fits}) or --batch-size"
    raise UserError(f"--crop {config.crop} --batch-size {config.batch_size}: a training step needs about "
                    f"{need / 2**30:.1f} GiB and {where} has {have / 2**30:.1f} GiB available; {advice}")


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train (or resume) a model; checkpoints go to ``config.out``.

    ``stop_after`` ends the run after that global step as a kill would (no final
    checkpoint), which is how the resume test interrupts a run.
    """
    model_config = model_config_of(config)
    if config.crop % model_config.multiple or config.crop < model_config.min_size:
        raise UserError(f"--crop {config.crop}: the {config.preset!r} network needs a multiple of "
                        f"{model_config.multiple}, at least {model_config.min_size}")
    _check_step_fits(config, model_config)
    out = check_output_dir(config.out, "--out")
    remove_stale_temps(out)
    out.mkdir(parents=True, exist_ok=True)
    ddp = _setup_distributed()
    device = torch.device(f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu")

    torch.manual_seed(config.seed)
    model = M2AENet(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    start = 0
    last_path = out / LAST
    if resume:
        if not last_path.is_file():
            raise UserError(f"--resume: no checkpoint to resume from at {last_path}")
        state = read_checkpoint(last_path)
        saved = state.get("config")
        saved_preset = saved.get("preset") if isinstance(saved, dict) else None
        if saved_preset != config.preset:
            raise UserError(f"--resume: {last_path} is of preset {saved_preset!r}, not {config.preset!r}")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--resume: {last_path} is not a resumable training checkpoint ({detail})") from None
        if start >= config.steps:
            raise UserError(f"--resume: {last_path} already reached step {start}; raise --steps to train further")
        _check_resumable(config, state.get("train"), last_path)
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    elif last_path.exists():
        raise UserError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")

    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    source = make_source(config)

    def checkpoint(step: int) -> None:
        if ddp.is_main:
            save_checkpoint(last_path, {
                "config": model_config.to_dict(),
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": {"seed": config.seed, "torch": torch.get_rng_state()},
                "train": asdict(config) | {"loss": asdict(config.loss)},
            })

    bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", disable=not (progress and ddp.is_main))
    validation = None
    begin, steps_done, done = time.perf_counter(), 0, start
    for step in range(start, config.steps):
        model.train()
        torch.manual_seed(step_seed(config.seed, step, ddp.rank))
        batch = {k: v.to(device) for k, v in source.batch(step, ddp.rank, ddp.world).items()}
        use_gt = torch.rand(()).item() < teacher_forcing_probability(config, step)
        gate = training_gate(batch["mask"], config.gates) if use_gt else "pred"
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        with _autocast(device):
            output = net(batch["blurred"], gate=gate, tau=config.gumbel_tau)
        terms = m2ae_loss(output, batch["blurred"], batch["sharp"], batch["mask"], config.loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.step(optimizer)
        scaler.update()
        steps_done += 1
        loss_value = terms.total.item()
        if on_step is not None:
            on_step(step, loss_value)
        scores = mask_scores(output.mask_logits.argmax(1, keepdim=True), batch["mask"])
        gain = masked_psnr_gain(output.restored.detach(), batch["blurred"], batch["sharp"], batch["mask"])
        bar.set_postfix_str(f"loss {loss_value:.4f} (l1 {terms.l1.item():.4f} reblur {terms.reblur.item():.4f} "
                            f"mask {terms.mask.item():.3f}) IoU/P/R {scores.iou:.2f}/{scores.precision:.2f}/"
                            f"{scores.recall:.2f} gain {gain:+.2f} dB gate {'gt' if use_gt else 'pred'}")
        bar.update(1)
        done = step + 1
        if done % config.ckpt_every == 0 or done == config.steps:
            checkpoint(done)
        if ddp.is_main and (done % config.val_every == 0 or done == config.steps):
            samples = source.validation()
            validation = evaluate(model, samples, device=device, progress=False)
            strip = write_image(out / "val" / f"step_{done:06d}.png", validation_strip(model, samples, device=device))
            bar.write(f"step {done}: PSNR {validation.psnr:.2f} dB (blurred {validation.psnr_blurred:.2f}), "
                      f"in mask {validation.psnr_masked:.2f} dB ({validation.psnr_masked - validation.psnr_masked_blurred:+.2f}), "
                      f"mask IoU/P/R {validation.mask_iou:.3f}/{validation.mask_precision:.3f}/{validation.mask_recall:.3f}; "
                      f"strip {strip}")
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    elapsed = time.perf_counter() - begin
    final_path = None
    if ddp.is_main and done == config.steps:
        # Weights only, with the inference threshold chosen on training-split pairs.
        threshold = calibrate_threshold(model, source.calibration(), device=device)
        final_config = dataclasses.replace(model_config, threshold=threshold)
        bar.write(f"mask threshold calibrated on training pairs: {threshold:.2f}")
        final_path = save_checkpoint(out / FINAL, {"config": final_config.to_dict(), "step": config.steps, "model": model.state_dict()})
    if ddp.world > 1:
        dist.destroy_process_group()
    return TrainResult(done, last_path, final_path, validation, steps_done / elapsed if elapsed > 0 else 0.0)
