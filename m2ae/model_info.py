"""What every stage needs to know about a model, read once (docs/design.md section 4).

An exported ONNX carries it as ``m2ae.*`` metadata_props, an engine in its JSON sidecar
(the ONNX's metadata copied), a checkpoint in its config. ``ModelInfo`` is the one typed
reading of it: the exporter writes ``to_metadata()``, and every reader (the engines, the
builder, tiling, parity, bench) goes through ``from_metadata``, so a key has one name, one
type and one default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from m2ae.errors import UserError
from m2ae.graph_io import INPUT_MASK

#: the key whose presence marks an m2ae model
MARKER_KEY = "m2ae.multiple"
_REMEDY = "the file was altered or not written by m2ae: make it again (`m2ae export`, for engines `m2ae build`)"


@dataclass(frozen=True)
class ModelInfo:
    """One model's contract. Sizes are pixels; ``None`` means "not recorded"."""

    #: H and W of the input must be multiples of this
    multiple: int
    #: the smallest H and W the network takes
    min_size: int
    #: "dense", "portable" or "plugin" for ONNX and engines; "dense" or "pruned" for a checkpoint
    variant: str = "dense"
    #: "fp32", "fp16" or "int8"
    precision: str = "fp32"
    #: the model takes a ``mask`` input instead of predicting one (a ``*_maskin_*`` export)
    mask_input: bool = False
    preset: str | None = None
    #: pixels of context each output pixel depends on (the halo tiled inference keeps)
    receptive_field: int | None = None
    threshold: float | None = None
    mask_dilation: int | None = None
    mask_opening: int | None = None
    opset: int | None = None
    #: tile side per U-Net scale of the pruned variants
    tiles: tuple[int, ...] | None = None
    #: share of active scale-0 tiles above which the pruned graph runs the dense body
    dense_above: float | None = None
    blocks_per_gather: int | None = None
    version: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    #: every ``m2ae.*`` entry as read (keys this version does not know are kept, not lost)
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    def with_graph_inputs(self, inputs: Iterable[str]) -> ModelInfo:
        """This info with ``mask_input`` as the graph's inputs have it.

        The graph decides: it is what runs, and its inputs cannot disagree with themselves,
        while metadata can be missing (exports made before ``m2ae.mask_input`` was recorded,
        hand-made test graphs) or edited.
        """
        return replace(self, mask_input=INPUT_MASK in inputs)

    def to_metadata(self) -> dict[str, str]:
        """The ``m2ae.*`` strings an ONNX's metadata_props (and an engine's sidecar) hold."""
        values: dict[str, object | None] = {
            "m2ae.version": self.version,
            "m2ae.preset": self.preset,
            "m2ae.threshold": None if self.threshold is None else repr(self.threshold),
            "m2ae.mask_dilation": self.mask_dilation,
            "m2ae.mask_opening": self.mask_opening,
            "m2ae.opset": self.opset,
            "m2ae.multiple": self.multiple,
            "m2ae.min_size": self.min_size,
            "m2ae.variant": self.variant,
            "m2ae.precision": self.precision,
            "m2ae.mask_input": "1" if self.mask_input else "0",
            "m2ae.checkpoint": self.checkpoint,
            "m2ae.checkpoint_sha256": self.checkpoint_sha256,
            "m2ae.receptive_field": self.receptive_field,
            "m2ae.tiles": None if self.tiles is None else ",".join(map(str, self.tiles)),
            "m2ae.dense_above": None if self.dense_above is None else repr(self.dense_above),
            "m2ae.blocks_per_gather": self.blocks_per_gather,
        }
        metadata = dict(self.extra)
        metadata.update({key: str(value) for key, value in values.items() if value is not None})
        return metadata

    @classmethod
    def from_onnx(cls, model: Any, source: str | Path) -> ModelInfo:
        """The info an ``onnx.ModelProto`` records in its metadata_props (see ``from_metadata``)."""
        return cls.from_metadata({prop.key: prop.value for prop in model.metadata_props}, source)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str | Path) -> ModelInfo:
        """Parse ``m2ae.*`` metadata; UserError naming ``source`` when it is not an m2ae
        model or an entry does not parse."""
        if MARKER_KEY not in metadata:
            raise UserError(f"{source}: not an m2ae model (no m2ae metadata); export one with `m2ae export`")
        reader = _Reader(metadata, source)
        multiple = reader.positive_int("m2ae.multiple")
        return cls(
            multiple=multiple,
            min_size=reader.positive_int("m2ae.min_size", default=multiple),
            variant=metadata.get("m2ae.variant", "dense"),
            precision=metadata.get("m2ae.precision", "fp32"),
            mask_input=reader.flag("m2ae.mask_input"),
            preset=metadata.get("m2ae.preset"),
            receptive_field=reader.positive_int("m2ae.receptive_field", default=None),
            threshold=reader.number("m2ae.threshold"),
            mask_dilation=reader.natural_int("m2ae.mask_dilation"),
            mask_opening=reader.natural_int("m2ae.mask_opening"),
            opset=reader.positive_int("m2ae.opset", default=None),
            tiles=reader.int_list("m2ae.tiles"),
            dense_above=reader.number("m2ae.dense_above"),
            blocks_per_gather=reader.positive_int("m2ae.blocks_per_gather", default=None),
            version=metadata.get("m2ae.version"),
            checkpoint=metadata.get("m2ae.checkpoint"),
            checkpoint_sha256=metadata.get("m2ae.checkpoint_sha256"),
            extra={key: value for key, value in metadata.items() if key.startswith("m2ae.")},
        )


@dataclass(frozen=True)
class _Reader:
    metadata: Mapping[str, str]
    source: str | Path

    def _fail(self, key: str, value: str, wanted: str) -> UserError:
        return UserError(f"{self.source}: metadata {key}={value!r} is not {wanted}; {_REMEDY}")

    def _int(self, key: str, default: int | None, minimum: int, wanted: str) -> int | None:
        value = self.metadata.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self._fail(key, value, wanted) from None
        if number < minimum:
            raise self._fail(key, value, wanted)
        return number

    def positive_int(self, key: str, default: int | None = None) -> int | None:
        return self._int(key, default, 1, "a positive integer")

    def natural_int(self, key: str) -> int | None:
        return self._int(key, None, 0, "an integer >= 0")

    def number(self, key: str) -> float | None:
        value = self.metadata.get(key)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise self._fail(key, value, "a number") from None

    def flag(self, key: str) -> bool:
        value = self.metadata.get(key, "0")
        if value not in ("0", "1"):
            raise self._fail(key, value, "0 or 1")
        return value == "1"

    def int_list(self, key: str) -> tuple[int, ...] | None:
        value = self.metadata.get(key)
        if value is None:
            return None
        try:
            sides = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise self._fail(key, value, "a comma-separated list of positive integers") from None
        if not sides or min(sides) < 1:
            raise self._fail(key, value, "a comma-separated list of positive integers")
        return sides
