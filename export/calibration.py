"""int8 calibration: the images (synthetic training-split pairs, or a folder of images) and
the activation ranges they give."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image
from m2ae.padding import pad_to_multiple

CALIBRATION_SIZE = 256
#: seeds far from training's, so calibration never replays a training batch
CALIBRATION_SEED = 7_000_000


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[..., top : top + size, left : left + size]


def calibration_images(source: str, count: int, multiple: int, size: int = CALIBRATION_SIZE) -> list[np.ndarray]:
    """``count`` CHW float32 images padded to ``multiple``: 'synthetic' or a folder's images."""
    if count <= 0:
        raise UserError(f"calibration needs at least one image, got {count}")
    if source == "synthetic":
        from m2ae.model.data.synthetic import SyntheticConfig, make_sample

        config = SyntheticConfig(size=size, split="train")
        return [make_sample(config, CALIBRATION_SEED + i).blurred for i in range(count)]
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(f"--calib: {folder} is neither 'synthetic' nor a folder of images")
    paths = list_images(folder, recursive=True)
    if not paths:
        raise UserError(f"--calib: {folder} holds no images")
    images = []
    for path in paths[:count]:
        chw = np.ascontiguousarray(read_image(path).transpose(2, 0, 1))
        images.append(pad_to_multiple(_center_crop(chw, size), multiple))
    return images


def activation_absmax(
    model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], tensors: Iterable[str], progress: bool = True,
) -> dict[str, float]:
    """max |x| of each of ``tensors`` (float32 tensors of ``model``) over all ``feeds``.

    Symmetric MinMax calibration: the int8 scale of a tensor is this value / 127. ``model``
    runs on plain ONNX Runtime (CPU) with the tensors added as graph outputs, so it must be
    made of standard ops (the portable or dense graph).
    """
    import onnxruntime as ort

    wanted = sorted(set(tensors))
    produced = {value.name for value in model.graph.input} | {out for node in model.graph.node for out in node.output}
    missing = [name for name in wanted if name not in produced]
    if missing:
        raise ValueError(f"calibration graph has no tensor named {', '.join(missing[:5])}")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {value.name for value in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in wanted if name not in outputs
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    absmax = dict.fromkeys(wanted, 0.0)
    for feed in tqdm(feeds, desc="int8 calibration", unit="img", disable=not progress):
        for name, value in zip(wanted, session.run(wanted, feed)):
            if value.size:
                absmax[name] = max(absmax[name], float(np.abs(value).max()))
    return absmax
