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
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps
from m2ae.errors import UserError
from m2ae.imageio import write_image
from m2ae.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from m2ae.model.config import M2AEConfig, get_preset
from m2ae.model.evaluate import EvalResult, calibrate_threshold, evaluate, validation_strip
from m2ae.model.gates import GateAugment, training_gate, with_prediction
from m2ae.model.heads import hard_mask
from m2ae.model.losses import LossTerms, LossWeights, MaskScores, m2ae_loss, mask_bce, mask_scores, masked_psnr_gain
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
    #: the mask head's stem (``M2AEConfig.mask_stem``); None keeps the preset's
    mask_stem: str | None = None
    #: the inference mask's opening (``M2AEConfig.mask_opening``); None keeps the preset's or
    #: the ``init`` checkpoint's. No weights depend on it, so a fine-tune may change it
    mask_opening: int | None = None
    #: the mask head's channels (``M2AEConfig.mask_channels``); None keeps the preset's
    mask_channels: int | None = None
    #: synthetic data: up to this many moving objects per sample. At the generator's 3 (sides
    #: 0.2-0.5 of a 96-pixel crop) 6% of a crop is blurred, and the restorer learns from nothing
    #: else; 8 objects of 0.3-0.6 blur 17%, and 1500 steps under ground-truth gates reached
    #: the in-mask gain that 8000 steps of the default scenes had (docs/training.md)
    moving_objects: int = 3
    #: synthetic data: object sides as a fraction of the crop side (low, high)
    object_size: tuple[float, float] = (0.2, 0.5)
    #: synthetic data: up to this many still (sharp) objects per sample, besides the moving ones
    still_objects: int = 0
    #: synthetic data: a random colour transform of every background
    recolour: bool = False
    #: synthetic data: chance that a sample's still scene is out of focus
    defocus: float = 0.0
    #: synthetic data: chance that a sample's background is a procedural dead-leaves scene
    procedural: float = 0.0
    #: synthetic data: a folder of sharp pictures added to the bundled training pictures
    pictures: str | None = None
    #: processes that make the next batches while a step runs (0: the training process makes them)
    data_workers: int = 1
    #: train the mask head alone (loss: the mask BCE; the rest is frozen and not run). With
    #: ``init``, the head may change (``mask_stem``, ``mask_context``) and then starts afresh
    only_mask_head: bool = False
    #: extra sharp regions in teacher-forced gates (see ``m2ae.model.gates``)
    gates: GateAugment = field(default_factory=GateAugment)
    #: checkpoint (path or shipped name) whose network and weights the run starts from,
    #: with a fresh optimiser: fine-tuning; None starts from random weights
    init: str | None = None

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
        if self.data_workers < 0:
            raise UserError(f"--data-workers must be 0 or more, got {self.data_workers}")
        if self.still_objects < 0:
            raise UserError(f"--still-objects must be 0 or more, got {self.still_objects}")
        if self.moving_objects < 1:
            raise UserError(f"--moving-objects must be 1 or more, got {self.moving_objects}")
        low, high = self.object_size
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"--object-size must be two fractions with 0 < LO <= HI <= 1, got {low},{high}")
        for flag, value in (("--defocus", self.defocus), ("--procedural", self.procedural)):
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{flag} must lie in [0, 1], got {value}")
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for flag, value in (("--moving-objects", self.moving_objects != defaults["moving_objects"]),
                            ("--object-size", self.object_size != defaults["object_size"]),
                            ("--still-objects", self.still_objects), ("--recolour", self.recolour),
                            ("--defocus", self.defocus), ("--procedural", self.procedural),
                            ("--pictures", self.pictures)):
            if value and self.data != "synthetic":
                raise UserError(f"{flag} applies to --data synthetic only")
        if not 0 <= self.seed < 2**64:
            raise UserError(f"--seed must be 0 or more and below 2**64, got {self.seed}")


#: the mask head's settings a run may override (TrainConfig and M2AEConfig fields alike)
HEAD_OVERRIDES = ("mask_channels", "mask_context", "mask_stem")


def model_config_of(config: TrainConfig, init: M2AEConfig | None = None) -> M2AEConfig:
    """The network a run trains: its preset, or the ``--init`` checkpoint's network, with the run's overrides."""
    model_config = get_preset(config.preset) if init is None else init
    overrides = {name: getattr(config, name) for name in HEAD_OVERRIDES
                 if getattr(config, name) is not None and getattr(config, name) != getattr(model_config, name)}
    for name, value in overrides.items():
        flag = f"--{name.replace('_', '-')} {value}"
        if init is not None and not config.only_mask_head:
            raise UserError(f"{flag}: the --init checkpoint's mask head has {name.replace('_', ' ')} "
                            f"{getattr(model_config, name)}; a fine-tune keeps its network "
                            "(but for --only-mask-head, which may replace the head)")
    if config.mask_opening is not None:
        overrides["mask_opening"] = config.mask_opening
    try:
        return dataclasses.replace(model_config, **overrides)
    except ValueError as exc:
        flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in overrides.items())
        raise UserError(f"{flags}: {exc}") from None


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
    from m2ae.model.data.sources import FolderSource, SyntheticSource, picture_files
    from m2ae.model.data.synthetic import SyntheticConfig

    if config.data == "synthetic":
        pictures = () if config.pictures is None else picture_files(Path(config.pictures))
        scene = SyntheticConfig(size=config.crop, split="train", max_displacement=config.synthetic_motion,
                                max_objects=config.moving_objects, object_scale=config.object_size,
                                still_objects=config.still_objects, recolour=config.recolour,
                                defocus=config.defocus, procedural=config.procedural, pictures=pictures)
        return SyntheticSource(scene, config.batch_size, config.seed, config.val_images)
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


def _differs(saved: Any, current: Any) -> bool:
    """Whether a saved setting differs from the current one; a group's settings that a run
    saved before they existed are not compared (they held their defaults)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return any(key not in current or _differs(value, current[key]) for key, value in saved.items())
    return saved != current


def _check_resumable(config: TrainConfig, saved: Any, last_path: Path) -> None:
    """Refuse a resume whose data, noise or optimisation differ from the saved run's."""
    if not isinstance(saved, dict):
        return
    current = asdict(config) | {"loss": asdict(config.loss)}
    changed = [f"--{name.replace('_', '-')} {saved[name]!r} -> {current[name]!r}" for name in current
               if name not in RESUME_MAY_CHANGE and name in saved and _differs(saved[name], current[name])]
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


def _check_crop(config: TrainConfig, model_config: M2AEConfig) -> None:
    """Refuse a crop the network cannot take: a multiple of its ``multiple``, at least ``min_size``."""
    if config.crop % model_config.multiple or config.crop < model_config.min_size:
        raise UserError(f"--crop {config.crop}: the {config.preset!r} network needs a multiple of "
                        f"{model_config.multiple}, at least {model_config.min_size}")


@dataclass
class _Trainee:
    """What a training checkpoint saves and a resume restores, besides the step."""

    model: M2AENet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def _new_trainee(config: TrainConfig, model_config: M2AEConfig, device: torch.device,
                 weights: dict[str, torch.Tensor] | None = None) -> _Trainee:
    """A network (initial weights drawn from the run's seed alone, or ``weights``, which may
    leave out the mask head), fresh optimiser and scaler. ``--only-mask-head`` optimises the head alone."""
    torch.manual_seed(config.seed)
    model = M2AENet(model_config)
    if weights is not None:
        missing = model.load_state_dict(weights, strict=False).missing_keys
        if any(not name.startswith(HEAD_PREFIX) for name in missing) or set(weights) - set(model.state_dict()):
            model.load_state_dict(weights)  # raises, naming what does not fit
    model = model.to(device)
    trained = model.mask_head if config.only_mask_head else model
    optimizer = torch.optim.AdamW(trained.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    return _Trainee(model, optimizer, scaler)


def _resume(config: TrainConfig, trainee: _Trainee, last_path: Path) -> int:
    """Load the run saved at ``last_path`` into ``trainee``; returns the step it reached."""
    if not last_path.is_file():
        raise UserError(f"--resume: no checkpoint to resume from at {last_path}")
    state = read_checkpoint(last_path)
    saved = state.get("config")
    saved_preset = saved.get("preset") if isinstance(saved, dict) else None
    if saved_preset != config.preset:
        raise UserError(f"--resume: {last_path} is of preset {saved_preset!r}, not {config.preset!r}")
    try:
        trainee.model.load_state_dict(state["model"])
        trainee.optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--resume: {last_path} is not a resumable training checkpoint ({detail})") from None
    if start >= config.steps:
        raise UserError(f"--resume: {last_path} already reached step {start}; raise --steps to train further")
    _check_resumable(config, state.get("train"), last_path)
    if trainee.scaler.is_enabled() and state.get("scaler"):
        trainee.scaler.load_state_dict(state["scaler"])
    return start


@dataclass
class _Run:
    """One process's share of a run: what every step, validation and checkpoint reads."""

    config: TrainConfig
    model_config: M2AEConfig
    out: Path
    ddp: _Distributed
    device: torch.device
    trainee: _Trainee
    #: what a step runs: the model (or with --only-mask-head its mask head), or its
    #: DistributedDataParallel wrapper on several ranks
    net: torch.nn.Module
    source: BatchSource
    #: the step the run starts from: 0, or the resumed checkpoint's
    start: int

    @property
    def model(self) -> M2AENet:
        return self.trainee.model

    @property
    def last_path(self) -> Path:
        return self.out / LAST


def _starting_network(config: TrainConfig, resumed: Path | None) -> tuple[M2AEConfig, dict[str, torch.Tensor] | None]:
    """The network a run trains and the weights it starts from (None: drawn from the seed).

    A resumed run takes its network from its own ``last.pt`` (whose weights ``_resume``
    loads), so a fine-tune still resumes after its ``--init`` file has moved.
    """
    if resumed is not None and resumed.is_file():
        saved = read_checkpoint(resumed).get("config")
        try:
            return M2AEConfig.from_dict(saved), None
        except (TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"--resume: {resumed} is not a resumable training checkpoint ({exc})") from None
    if config.init:
        initial = load_checkpoint(config.init, expect_preset=config.preset)
        model_config = model_config_of(config, initial.config)
        weights = initial.model.state_dict()
        if _head_of(model_config) != _head_of(initial.config):
            weights = {name: value for name, value in weights.items() if not name.startswith(HEAD_PREFIX)}
        return model_config, weights
    return model_config_of(config), None


#: state-dict keys of the mask head
HEAD_PREFIX = "mask_head."


def _head_of(config: M2AEConfig) -> tuple[object, ...]:
    """What decides the mask head's weights' shapes."""
    return config.in_channels, config.mask_channels, config.mask_context, config.mask_stem


def _open_run(config: TrainConfig, resume: bool) -> _Run:
    """Check the settings, prepare ``config.out`` and build (or resume) the model."""
    out = check_output_dir(config.out, "--out")
    model_config, initial_weights = _starting_network(config, out / LAST if resume else None)
    _check_crop(config, model_config)
    _check_step_fits(config, model_config)
    remove_stale_temps(out)
    out.mkdir(parents=True, exist_ok=True)
    ddp = _setup_distributed()
    device = torch.device(f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu")
    trainee = _new_trainee(config, model_config, device, initial_weights)
    start = 0
    if resume:
        start = _resume(config, trainee, out / LAST)
    elif (out / LAST).exists():
        raise UserError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")
    trained = trainee.model.mask_head if config.only_mask_head else trainee.model
    net = torch.nn.parallel.DistributedDataParallel(trained) if ddp.world > 1 else trained
    return _Run(config, model_config, out, ddp, device, trainee, net, make_source(config), start)


@dataclass(frozen=True)
class _StepReport:
    """What one optimisation step reports on the progress bar."""

    loss: float
    terms: LossTerms
    scores: MaskScores
    #: PSNR gain over the blurred input inside the annotated mask, in dB (None: the head trains alone)
    gain: float | None
    ground_truth_gate: bool

    def summary(self) -> str:
        terms, scores = self.terms, self.scores
        if self.gain is None:
            return (f"mask loss {terms.mask.item():.4f} IoU/P/R {scores.iou:.2f}/{scores.precision:.2f}/"
                    f"{scores.recall:.2f}")
        return (f"loss {self.loss:.4f} (l1 {terms.l1.item():.4f} reblur {terms.reblur.item():.4f} "
                f"mask {terms.mask.item():.3f}) IoU/P/R {scores.iou:.2f}/{scores.precision:.2f}/"
                f"{scores.recall:.2f} gain {self.gain:+.2f} dB gate {'gt' if self.ground_truth_gate else 'pred'}")


def _optimise(run: _Run, step: int, loss: torch.Tensor) -> None:
    optimizer, scaler = run.trainee.optimizer, run.trainee.scaler
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(run.config, step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _head_step(run: _Run, step: int, batch: dict[str, torch.Tensor]) -> _StepReport:
    """``--only-mask-head``: the mask BCE on the head's logits; nothing else runs."""
    with _autocast(run.device):
        logits = run.net(batch["blurred"])
    loss = mask_bce(logits, batch["mask"], run.config.loss.mask_pos_weight)
    _optimise(run, step, loss)
    zero = torch.zeros(())
    terms = LossTerms(loss.detach(), zero, zero, zero, loss.detach())
    return _StepReport(loss.item(), terms, mask_scores(logits.argmax(1, keepdim=True), batch["mask"]), None, False)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is this rank's batch of that step: what a DataLoader's workers make ahead."""

    def __init__(self, source: BatchSource, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return self.source.batch(step, self.rank, self.world)


def _batches(run: _Run) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of steps ``run.start`` onwards, in order; workers make them ahead of the
    steps (a synthetic batch takes about a fifth of a CPU step of ``tiny``)."""
    steps = range(run.start, run.config.steps)
    batches = _StepBatches(run.source, run.ddp.rank, run.ddp.world)
    if run.config.data_workers == 0:
        return (batches[step] for step in steps)
    return iter(torch.utils.data.DataLoader(batches, batch_size=None, sampler=steps, num_workers=run.config.data_workers,
                                            prefetch_factor=2))


def _train_step(run: _Run, step: int, batch: dict[str, torch.Tensor]) -> _StepReport:
    """One optimisation step on ``batch``; its data and noise depend on ``(seed, step, rank)`` alone."""
    config = run.config
    run.model.train()
    torch.manual_seed(step_seed(config.seed, step, run.ddp.rank))
    batch = {k: v.to(run.device) for k, v in batch.items()}
    if config.only_mask_head:
        return _head_step(run, step, batch)
    use_gt = torch.rand(()).item() < teacher_forcing_probability(config, step)
    gate: torch.Tensor | str = "pred"
    if use_gt:
        model_config = run.model_config
        gate = with_prediction(
            training_gate(batch["mask"], config.gates),
            lambda: hard_mask(run.model.mask_head(batch["blurred"]), model_config.threshold, model_config.mask_dilation,
                              model_config.mask_opening),
            config.gates)
    with _autocast(run.device):
        output = run.net(batch["blurred"], gate=gate, tau=config.gumbel_tau)
    terms = m2ae_loss(output, batch["blurred"], batch["sharp"], batch["mask"], config.loss)
    _optimise(run, step, terms.total)
    scores = mask_scores(output.mask_logits.argmax(1, keepdim=True), batch["mask"])
    gain = masked_psnr_gain(output.restored.detach(), batch["blurred"], batch["sharp"], batch["mask"])
    return _StepReport(terms.total.item(), terms, scores, gain, use_gt)


def _save_last(run: _Run, step: int) -> None:
    """The resumable checkpoint: weights, optimiser, scaler and the settings a resume must keep."""
    if not run.ddp.is_main:
        return
    config, trainee = run.config, run.trainee
    save_checkpoint(run.last_path, {
        "config": run.model_config.to_dict(),
        "step": step,
        "model": trainee.model.state_dict(),
        "optimizer": trainee.optimizer.state_dict(),
        "scaler": trainee.scaler.state_dict(),
        "rng": {"seed": config.seed, "torch": torch.get_rng_state()},
        "train": asdict(config) | {"loss": asdict(config.loss)},
    })


def _validate(run: _Run, step: int) -> tuple[EvalResult, str]:
    """Scores on the held-out samples, a strip of them under ``out/val``, and the line reporting both."""
    samples = run.source.validation()
    result = evaluate(run.model, samples, device=run.device, progress=False)
    strip = write_image(run.out / "val" / f"step_{step:06d}.png", validation_strip(run.model, samples, device=run.device))
    line = (f"step {step}: PSNR {result.psnr:.2f} dB (blurred {result.psnr_blurred:.2f}), "
            f"in mask {result.psnr_masked:.2f} dB ({result.psnr_masked - result.psnr_masked_blurred:+.2f}), "
            f"mask IoU/P/R {result.mask_iou:.3f}/{result.mask_precision:.3f}/{result.mask_recall:.3f}; "
            f"strip {strip}")
    return result, line


def _save_final(run: _Run, threshold: float) -> Path:
    """Weights only, with the inference threshold chosen on training-split pairs."""
    final_config = dataclasses.replace(run.model_config, threshold=threshold)
    return save_checkpoint(run.out / FINAL, {"config": final_config.to_dict(), "step": run.config.steps,
                                             "model": run.model.state_dict()})


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
    run = _open_run(config, resume)
    bar = tqdm(total=config.steps, initial=run.start, desc="train", unit="step",
               disable=not (progress and run.ddp.is_main))
    validation = None
    begin, steps_done, done = time.perf_counter(), 0, run.start
    for step, batch in zip(range(run.start, config.steps), _batches(run)):
        report = _train_step(run, step, batch)
        steps_done += 1
        if on_step is not None:
            on_step(step, report.loss)
        bar.set_postfix_str(report.summary())
        bar.update(1)
        done = step + 1
        if done % config.ckpt_every == 0 or done == config.steps:
            _save_last(run, done)
        if run.ddp.is_main and (done % config.val_every == 0 or done == config.steps):
            validation, line = _validate(run, done)
            bar.write(line)
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    elapsed = time.perf_counter() - begin
    final_path = None
    if run.ddp.is_main and done == config.steps:
        threshold = calibrate_threshold(run.model, run.source.calibration(), device=run.device)
        bar.write(f"mask threshold calibrated on training pairs: {threshold:.2f}")
        final_path = _save_final(run, threshold)
    if run.ddp.world > 1:
        dist.destroy_process_group()
    return TrainResult(done, run.last_path, final_path, validation, steps_done / elapsed if elapsed > 0 else 0.0)
