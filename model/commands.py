"""``m2ae train`` and ``m2ae eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from m2ae.errors import UserError
from m2ae.model.config import MASK_STEMS

#: defaults of LossWeights.reblur, GateAugment.probability and .predicted, kept here so that the
#: parser imports no torch (a test holds them equal)
DEFAULT_REBLUR_WEIGHT = 0.2
DEFAULT_SHARP_GATES = 0.0
DEFAULT_PREDICTED_GATES = 0.0
#: defaults of SyntheticConfig.max_objects and .object_scale, kept here for the same reason
DEFAULT_MOVING_OBJECTS = 3
DEFAULT_OBJECT_SIZE = (0.2, 0.5)


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train M2AENet on synthetic local-blur data or a folder of pairs",
        description="Train M2AENet with the multi-task loss (L1 + FFT L1, reblur, mask BCE), hard "
        "Gumbel straight-through masks after a ground-truth teacher-forcing phase, AdamW with "
        "cosine decay. Checkpoints land in OUT/last.pt (resumable) and OUT/final.pt (weights). "
        "Several GPUs: torchrun --nproc-per-node N -m m2ae train ...",
    )
    train.add_argument("--preset", default="tiny", help="network preset: tiny (CPU demos) or base (default: tiny)")
    train.add_argument("--data", default="synthetic",
                       help="'synthetic' (generated from scikit-image's bundled images) or a folder in "
                       "ReLoBlur layout (*_blur.png, *_sharp.png, *_mask.png) or with blur/, sharp/, mask/")
    train.add_argument("--steps", type=int, default=2000, help="total optimisation steps (default: 2000)")
    train.add_argument("--out", required=True, help="run folder for checkpoints")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument("--batch-size", type=int, default=8, help="images per step and GPU (default: 8)")
    train.add_argument("--crop", type=int, default=96, help="training crop size in pixels (default: 96)")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    train.add_argument("--teacher-forcing", type=float, default=1.0,
                       help="length of the fade from ground-truth gates to predicted (Gumbel) gates, in runs: "
                       "the chance of a ground-truth step falls linearly from 1 to 0 over this many times "
                       "--steps (default: 1.0, the whole run; 10 keeps it at 0.9 or more)")
    train.add_argument("--sharp-gates", type=float, default=DEFAULT_SHARP_GATES, metavar="P",
                       help="chance that a ground-truth gate also covers sharp pixels (the mask dilated, plus "
                       "random boxes), so the restorer learns to leave them alone (default: %(default)s; 0 trains "
                       "under the annotated mask only)")
    train.add_argument("--predicted-gates", type=float, default=DEFAULT_PREDICTED_GATES, metavar="P",
                       help="chance that a ground-truth gate is united with the mask head's own inference mask, "
                       "so the restorer learns to leave the head's false alarms alone (default: %(default)s)")
    train.add_argument("--init", metavar="CKPT",
                       help="fine-tune: start from this checkpoint's network and weights (a file, or 'tiny' "
                       "for the shipped one) with a fresh optimiser; --preset must match it")
    train.add_argument("--only-mask-head", action="store_true",
                       help="train the mask head alone (loss: the mask BCE; the rest of the network is frozen and "
                       "not run, so a step costs a fraction of a full one); with --init, --mask-stem and "
                       "--mask-context may replace the checkpoint's head, which then starts afresh")
    train.add_argument("--mask-context", type=int, metavar="N",
                       help="levels of the mask head's coarse context branch (default: the preset's, 0 = the "
                       "plain head; 2 sees about 100 pixels around each pixel and makes the network's "
                       "multiple 16)")
    train.add_argument("--mask-channels", type=int, metavar="N",
                       help="channels of the mask head (default: the preset's: 8 for tiny)")
    train.add_argument("--mask-stem", choices=MASK_STEMS,
                       help="first layers of the mask head (default: the preset's): 'unshuffle' (a 3x3 conv over "
                       "the pixel-unshuffled 1/4-resolution view) or 'conv' (a full-resolution 3x3 conv, then two "
                       "stride-2 convs: finer blur cues, about 4x the head's MACs)")
    train.add_argument("--mask-opening", type=int, metavar="N",
                       help="open the inference mask by N pixels before its dilation (erode, then dilate): marks "
                       "narrower than 2N+1 pixels go, so scattered false alarms wake no tiles of the pruned body "
                       "(default: the preset's or the --init checkpoint's, 0 for tiny). Applies to the mask the "
                       "predicted gates use in training, to the threshold calibration and to inference")
    train.add_argument("--moving-objects", type=int, default=DEFAULT_MOVING_OBJECTS, metavar="N",
                       help="synthetic data: up to N moving (blurred) objects per sample (default: "
                       f"{DEFAULT_MOVING_OBJECTS}); more, with --object-size, gives the restorer more blurred "
                       "pixels to learn from per step")
    train.add_argument("--object-size", type=_size_range, default=DEFAULT_OBJECT_SIZE, metavar="LO,HI",
                       help="synthetic data: side of each object as a fraction of the crop side, drawn from "
                       f"[LO, HI] (default: {DEFAULT_OBJECT_SIZE[0]},{DEFAULT_OBJECT_SIZE[1]})")
    train.add_argument("--still-objects", type=int, default=0, metavar="N",
                       help="synthetic data: up to N still (sharp) objects per sample besides the moving ones, so "
                       "the mask head learns to find blur, not pasted shapes (default: 0)")
    train.add_argument("--recolour", action="store_true",
                       help="synthetic data: a random colour transform of every background (most bundled "
                       "pictures are grey, so without it colour alone marks the moving objects)")
    train.add_argument("--defocus", type=float, default=0.0, metavar="P",
                       help="synthetic data: chance that a sample's still scene is out of focus (a Gaussian blur "
                       "of 0.5-3 px, whole or through a smooth depth map), so the mask head learns that soft is not "
                       "moving (default: 0)")
    train.add_argument("--procedural", type=float, default=0.0, metavar="P",
                       help="synthetic data: chance that a sample's background is a procedural dead-leaves scene "
                       "(overlapping shapes and textures at every scale) instead of a crop of one of the 14 bundled "
                       "training pictures, for more varied sharp edges (default: 0)")
    train.add_argument("--pictures", metavar="DIR",
                       help="synthetic data: also draw backgrounds and cut-out objects from the sharp pictures in DIR "
                       "(your own photos make scenes like yours; the held-out set is unchanged)")
    train.add_argument("--reblur-weight", type=float, default=DEFAULT_REBLUR_WEIGHT, metavar="W",
                       help=f"weight of the reblur loss that trains the motion analyser's trajectory "
                       f"(default: {DEFAULT_REBLUR_WEIGHT}; 0 for the ablation without it)")
    train.add_argument("--data-workers", type=int, default=1, metavar="N",
                       help="processes that make the next batches while a step runs (default: 1; 0 makes them "
                       "in the training process)")
    train.add_argument("--seed", type=int, default=0, help="seed of data, init and Gumbel noise (default: 0)")
    train.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints (default: 100)")
    train.add_argument("--val-every", type=int, default=250, help="steps between validations (default: 250)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval",
        help="PSNR, SSIM, masked PSNR and mask IoU/precision/recall of a checkpoint",
        description="Evaluate a checkpoint with its own predicted mask: PSNR and SSIM of the restored "
        "and of the blurred input against sharp, the same PSNR inside the blur mask, and the mask's IoU, "
        "precision (share of predicted pixels that are blurred: false positives cost compute) and recall.",
    )
    ev.add_argument("--checkpoint", default="tiny", help="checkpoint file, or 'tiny' for the shipped one (default: tiny)")
    ev.add_argument("--data", default="synthetic",
                    help="'synthetic' (held-out split), 'synthetic-shifted' (held-out split, local motion blur "
                    "made by another generator: other shapes and paths, 4-14 px of motion) or a folder of pairs")
    ev.add_argument("--num-images", type=int, default=32, help="synthetic images to generate (default: 32)")
    ev.add_argument("--size", type=int, default=256, help="synthetic image size (default: 256)")
    ev.add_argument("--zero-guide", action="store_true",
                    help="ablation: run the body with the motion analyser's guide features zeroed")
    ev.add_argument("--annotated-mask", action="store_true",
                    help="ablation: gate the body with the annotated blur mask instead of the predicted one, "
                    "to score the restorer alone, as if the mask head were perfect (the pairs need masks)")
    ev.add_argument("--annotated-mask-dilation", type=int, default=0, metavar="N",
                    help="with --annotated-mask: dilate that mask by N pixels first. The exact mask also tells "
                    "the restorer where the blur ends, which no predicted mask does; 2 takes that hint away "
                    "(default: 0)")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)


def _size_range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two fractions LO,HI such as 0.3,0.6, got {text!r}") from None
    return low, high


def _train(args: argparse.Namespace) -> int:
    from m2ae.model.gates import GateAugment
    from m2ae.model.losses import LossWeights
    from m2ae.model.train import TrainConfig, train

    config = TrainConfig(
        preset=args.preset, data=args.data, steps=args.steps, out=args.out, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, seed=args.seed, teacher_forcing=args.teacher_forcing, ckpt_every=args.ckpt_every, val_every=args.val_every,
        mask_context=args.mask_context, mask_stem=args.mask_stem, mask_opening=args.mask_opening, mask_channels=args.mask_channels, still_objects=args.still_objects,
        moving_objects=args.moving_objects, object_size=args.object_size, recolour=args.recolour, defocus=args.defocus, procedural=args.procedural, pictures=args.pictures, only_mask_head=args.only_mask_head,
        data_workers=args.data_workers,
        loss=dataclasses.replace(LossWeights(), reblur=args.reblur_weight),
        gates=dataclasses.replace(GateAugment(), probability=args.sharp_gates, predicted=args.predicted_gates),
        init=args.init,
    )
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"trained to step {result.step} ({result.steps_per_second:.2f} steps/s); "
          f"checkpoint: {result.final_checkpoint or result.last_checkpoint}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from m2ae.atomic import check_output_file, write_text
    from m2ae.model.checkpoint import load_checkpoint
    from m2ae.model.data.sources import evaluation_samples
    from m2ae.model.evaluate import evaluate

    if args.data == "synthetic" and args.num_images <= 0:
        raise UserError(f"--num-images must be positive, got {args.num_images}")
    if args.json:
        check_output_file(args.json, "--json")
    loaded = load_checkpoint(args.checkpoint)
    samples = evaluation_samples(args.data, args.num_images, args.size)
    result = evaluate(loaded.model, samples, progress=not args.no_progress, total=len(samples), zero_guide=args.zero_guide,
                      annotated_gate=args.annotated_mask, annotated_dilation=args.annotated_mask_dilation)
    text = json.dumps(result.to_dict(), indent=2)
    print(text)
    if args.json:
        write_text(args.json, text + "\n")
    return 0
