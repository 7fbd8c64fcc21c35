"""What TensorRT's ONNX parser and builder accept, per TensorRT version: the data behind
``m2ae check`` (``m2ae.export.trt_check``).

Every table and constant names where it was read (``SOURCES``); docs/design.md section 5
lists the rules with the same sources. Versions are ``(major, minor)`` tuples; the
command line offers ``TENSORRT_VERSIONS``.

The onnx-tensorrt sources pinned by TensorRT 10.3 (62bdde2) and 10.8 (118ed0a) are not in
the stored history this was written from, so:

* 10.3 follows onnx-tensorrt 10.1-GA (operator matrix, importers, checkers); the
  changelog's 10.2 and 10.3 entries touch only GRU, Squeeze, Slice and ScatterElements,
  which the version gates below account for;
* 10.8 follows the 10.16 matrix, minus what the changelog dates after 10.8;
* 11 follows the 11.1 matrix and headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from m2ae.trt_plugins import GATHER_OP, SCATTER_OP

TrtVersion = tuple[int, int]

#: ``--tensorrt`` choices; 10.3 is what JetPack 6 ships
TENSORRT_VERSIONS: dict[str, TrtVersion] = {"10.3": (10, 3), "10.8": (10, 8), "11": (11, 0)}
DEFAULT_TENSORRT = "10.3"

SOURCES: dict[str, str] = {
    "matrix-10.1": "onnx/onnx-tensorrt branch 10.1-GA, docs/operators.md",
    "matrix-10.16": "onnx/onnx-tensorrt 6bde659 (NVIDIA/TensorRT release/10.16's parser), docs/operators.md",
    "matrix-11.1": "onnx/onnx-tensorrt 7c51a63 (NVIDIA/TensorRT release/11.1's parser), docs/operators.md",
    "importers-10.1": "onnx/onnx-tensorrt branch 10.1-GA, onnxOpImporters.cpp",
    "checkers-10.1": "onnx/onnx-tensorrt branch 10.1-GA, onnxOpCheckers.cpp",
    "model-importer-10.1": "onnx/onnx-tensorrt branch 10.1-GA, ModelImporter.cpp (parseNode, importModel)",
    "weights-10.1": "onnx/onnx-tensorrt branch 10.1-GA, ShapedWeights.cpp and WeightsContext.cpp",
    "changelog": "onnx/onnx-tensorrt docs/Changelog.md (entries 10.1 to 10.15)",
    "nvinfer-10.3": "NVIDIA/TensorRT release/10.3, include/NvInfer.h",
    "nvinfer-10.8": "NVIDIA/TensorRT release/10.8, include/NvInfer.h (ICumulativeLayer; absent from release/10.7)",
    "nvinfer-11.1": "NVIDIA/TensorRT release/11.1, include/NvInfer.h",
    "pytorch-quantization": "NVIDIA/TensorRT release/10.3, tools/pytorch-quantization/pytorch_quantization/"
    "tensor_quant.py (per-channel weight axis: conv 0, conv-transpose 1)",
    "plugin": "m2ae trt_plugins/csrc: masked_gather_plugin.h, masked_scatter_plugin.h (kAttributes), "
    "plugin_common.h (kPluginVersion, kPluginNamespace)",
    "m2ae-builder": "m2ae export/trt_builder.py network_flags: m2ae builds strongly typed on TensorRT 10 too",
}



class ElemType(IntEnum):
    """The ONNX element types the tables name, by their TensorProto.DataType codes
    (onnx/onnx.proto), so that importing this module (and ``m2ae --help``) needs no onnx."""

    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    INT32 = 6
    INT64 = 7
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23


# ---------------------------------------------------------------- operators

#: ops with a builtin importer in onnx-tensorrt 10.1-GA (matrix "Y" rows; matrix-10.1)
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min
Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: ops imported from a later TensorRT on (changelog; matrix-10.16, matrix-11.1)
OPS_SINCE: dict[str, TrtVersion] = {
    "BlackmanWindow": (10, 4), "HammingWindow": (10, 4), "HannWindow": (10, 4),
    "STFT": (10, 5),
    "Attention": (10, 14),
    "RMSNormalization": (10, 15), "RotaryEmbedding": (10, 15), "TensorScatter": (10, 15),
    "Swish": (11, 0),
}

#: ops no TensorRT version imports: its checkers fail them outright (checkers-10.1 and the
#: "unsupported node checkers" of later onnxOpCheckers.cpp; "N" in matrix-11.1)
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

_F = (ElemType.FLOAT, ElemType.FLOAT16, ElemType.BFLOAT16)
_FI = _F + (ElemType.INT32, ElemType.INT64)
_FIB = _FI + (ElemType.BOOL,)
_B = (ElemType.BOOL,)


@dataclass(frozen=True)
class OpTypes:
    """The types the matrix lists for an op's data input (``index``)."""

    index: int
    types: tuple[int, ...]


#: "Supported Types" of the ops m2ae's graphs and typical CNNs use; the same in
#: matrix-10.1, matrix-10.16 and matrix-11.1 except where OP_TYPES_FROM adds types.
#: NonZero follows importers-10.1 (the matrix lists FP32, FP16 only, the importer takes more).
OP_TYPES: dict[str, OpTypes] = {
    **{op: OpTypes(0, _FI) for op in (
        "Abs", "Add", "Sub", "Mul", "Div", "Neg", "Min", "Max", "Mod", "Sign", "Sum", "Mean", "Equal", "Greater",
        "GreaterOrEqual", "Less", "LessOrEqual", "Relu", "DepthToSpace", "SpaceToDepth", "Pad", "ScatterND",
        "ScatterElements", "Range", "TopK", "ArgMax", "ArgMin", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum",
        "ReduceProd", "ReduceL1", "ReduceL2")},
    **{op: OpTypes(0, _F) for op in (
        "Pow", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "LeakyRelu", "PRelu", "Sigmoid",
        "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Clip", "Softmax", "LogSoftmax", "Conv",
        "ConvTranspose", "MatMul", "Gemm", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
        "GroupNormalization", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample",
        "Einsum", "CumSum", "QuantizeLinear")},
    **{op: OpTypes(0, _FIB) for op in (
        "Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Expand", "Tile",
        "Gather", "GatherElements", "GatherND", "Identity", "Trilu")},
    **{op: OpTypes(0, _B) for op in ("And", "Or", "Xor", "Not")},
    "Where": OpTypes(1, _FIB),
    "GridSample": OpTypes(0, (ElemType.FLOAT, ElemType.FLOAT16)),
    "NonZero": OpTypes(0, _FIB + (ElemType.INT8,)),
}

#: types an op gains from a version on: integer Pow (changelog 10.8 exponents, 10.12 bases; matrix-11.1)
OP_TYPES_FROM: dict[str, tuple[TrtVersion, tuple[int, ...]]] = {
    "Pow": ((10, 12), (ElemType.INT32, ElemType.INT64)),
}

#: what Cast may produce (matrix "Cast" row); DOUBLE is parsed as FLOAT (importers-10.1 convertDtype)
CAST_TARGETS = frozenset({ElemType.FLOAT, ElemType.FLOAT16, ElemType.BFLOAT16, ElemType.INT32,
                          ElemType.INT64, ElemType.UINT8, ElemType.BOOL})

#: highest default-domain opset the parser covers (matrix headers: 10.0/10.1 "opset 9 to
#: opset 20", 10.16 and 11.1 "opset 9 to opset 24"); 10.8's matrix is not stored
MIN_OPSET = 9
MAX_OPSET: dict[TrtVersion, int] = {(10, 3): 20, (11, 0): 24}

#: ops whose axes input must be a constant (initializer or Constant), and until which
#: TensorRT version (exclusive; None: every version): matrix-10.1 and the changelog (Slice
#: tensor axes 10.3, Pad 10.4, Squeeze/Unsqueeze 10.7); matrix-11.1 still requires it of
#: the Reduce ops (opset 18 moved their axes to an input)
CONSTANT_AXES: dict[str, tuple[int, TrtVersion | None]] = {
    "Slice": (3, (10, 3)),
    "Pad": (3, (10, 4)),
    "Squeeze": (1, (10, 7)),
    "Unsqueeze": (1, (10, 7)),
    **{op: (1, None) for op in ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
                                 "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}

#: Resize attributes the importer implements (checkers-10.1, importers-10.1; matrix-11.1 "Resize")
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})
RESIZE_TRANSFORMS = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                               "align_corners"})

#: ScatterND: importers-10.1 refuses any ``reduction`` attribute, even "none"; from 10.9
#: ("Fixed support for opset 18+ ScatterND", changelog) only "none" is taken (matrix-10.16)
SCATTER_ND_REDUCTION_NONE_FROM: TrtVersion = (10, 9)

#: CumSum became one ICumulativeLayer in 10.8 (changelog "improved performance of CumSum";
#: nvinfer-10.8); before, importers-10.1 builds a loop with one iteration per element
CUMSUM_LAYER_FROM: TrtVersion = (10, 8)

# ---------------------------------------------------------------- quantization

#: what IDequantizeLayer takes (nvinfer-10.3: INT8, FP8, INT4; nvinfer-11.1 adds FP4, which
#: came with 10.8: changelog "FLOAT4E2M1 types for quantized networks")
DEQUANTIZE_INPUTS: dict[TrtVersion, frozenset[int]] = {
    (10, 3): frozenset({ElemType.INT8, ElemType.FLOAT8E4M3FN, ElemType.INT4}),
    (10, 8): frozenset({ElemType.INT8, ElemType.FLOAT8E4M3FN, ElemType.INT4, ElemType.FLOAT4E2M1}),
}

#: weighted ops TensorRT fuses Q/DQ into, and the input index of their weight
WEIGHTED_OPS: dict[str, int] = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}

# ---------------------------------------------------------------- the m2ae plugin


@dataclass(frozen=True)
class PluginField:
    """One integer field of a plugin creator (IntAttribute in plugin_base.h)."""

    name: str
    minimum: int
    required: bool


#: the creators' field lists, mirrored from the plugin's kAttributes (plugin); the parser
#: passes a node's attributes of these names as plugin fields and drops the others
#: (importers-10.1 loadFields)
PLUGIN_FIELDS: dict[str, tuple[PluginField, ...]] = {
    GATHER_OP: (PluginField("tile", 1, True), PluginField("halo", 0, False)),
    SCATTER_OP: (),
}
#: float inputs before the int32 tile ids (plugin_base.h: float tensors, then the ids)
PLUGIN_INPUTS: dict[str, int] = {GATHER_OP: 2, SCATTER_OP: 3}
#: attributes the parser itself reads from a plugin node (importers-10.1 FallbackPluginImporter)
PARSER_PLUGIN_ATTRIBUTES = frozenset({"plugin_version", "plugin_namespace", "tensorrt_plugin_shape_input_indices"})
#: from 10.10 the plugin importer also takes the namespace from the node's domain (changelog)
NAMESPACE_FROM_DOMAIN: TrtVersion = (10, 10)


def resolve(version: str) -> TrtVersion:
    """The rules' version for a ``--tensorrt`` value; ValueError for an unknown one."""
    if version not in TENSORRT_VERSIONS:
        raise ValueError(f"unknown TensorRT version {version!r}; choose from {', '.join(TENSORRT_VERSIONS)}")
    return TENSORRT_VERSIONS[version]


def at_version(table: dict[TrtVersion, frozenset[int]], version: TrtVersion) -> frozenset[int]:
    """The entry of a table keyed by "from this version on" that applies at ``version``."""
    return table[max(v for v in table if v <= version)]

# ---------------------------------------------------------------- the rules and where they come from


@dataclass(frozen=True)
class Rule:
    summary: str
    sources: tuple[str, ...]  # keys of SOURCES


RULES: dict[str, Rule] = {
    "opset": Rule("the default-domain opset lies in the range the parser covers", ("matrix-10.1", "matrix-11.1")),
    "op-unsupported": Rule("no TensorRT version imports the op", ("checkers-10.1", "matrix-11.1")),
    "op-version": Rule("the op is imported from a later TensorRT on", ("changelog", "matrix-10.16", "matrix-11.1")),
    "op-unknown": Rule("a standard op outside this table", ("matrix-10.1",)),
    "custom-op": Rule("an op of another domain is looked up as a plugin by its op_type",
                      ("model-importer-10.1", "importers-10.1")),
    "dtype": Rule("the op's data input has a type the matrix lists; INT8/UINT8 only through Q/DQ and I/O",
                  ("matrix-10.1", "matrix-11.1", "importers-10.1")),
    "cast-target": Rule("Cast produces a type TensorRT has", ("matrix-10.1", "importers-10.1")),
    "attribute": Rule("attributes the importers refuse: pooling dilations and MaxPool indices, Resize modes, "
                      "ScatterND reduction, Mod fmod=0 on floats", ("checkers-10.1", "importers-10.1", "matrix-11.1")),
    "constant-axes": Rule("axes inputs the parser needs as constants", ("matrix-10.1", "changelog", "matrix-11.1")),
    "if-branches": Rule("If branches have as many outputs, with different names", ("checkers-10.1", "matrix-10.1")),
    "slow-cumsum": Rule("CumSum before 10.8 is a loop with one iteration per element",
                        ("importers-10.1", "changelog", "nvinfer-10.8")),
    "data-dependent": Rule("output sizes that depend on the data (NonZero, NonMaxSuppression)",
                           ("nvinfer-10.3", "matrix-10.1")),
    "dq-input": Rule("IDequantizeLayer takes INT8, FP8, INT4 (and FP4 from 10.8) only",
                     ("nvinfer-10.3", "nvinfer-11.1", "importers-10.1")),
    "zero-point": Rule("zero points are 0 (symmetric) and not UINT8", ("importers-10.1", "nvinfer-10.3")),
    "per-channel-activation": Rule("per-channel scales only on constants (weights)",
                                   ("nvinfer-10.3", "importers-10.1")),
    "weight-axis": Rule("per-channel weight scales lie on the consumer's output-channel axis",
                        ("nvinfer-10.3", "pytorch-quantization")),
    "qdq-placement": Rule("Q/DQ where TensorRT runs the consumer in int8: Conv, ConvTranspose, MatMul, Gemm",
                          ("nvinfer-10.3", "pytorch-quantization")),
    "strong-typing": Rule("strongly typed networks compute in the ONNX's types: a DQ outputs its scale's type, "
                          "one op's float inputs share one type", ("nvinfer-11.1", "importers-10.1", "m2ae-builder")),
    "plugin": Rule("m2ae plugin nodes: op name, plugin_version, plugin_namespace, the creator's fields, inputs",
                   ("importers-10.1", "checkers-10.1", "changelog", "plugin")),
    "zero-size": Rule("zero-size constants read as absent inputs", ("weights-10.1",)),
}


def for_installed(version: str) -> str:
    """The ``--tensorrt`` key whose rules apply to an installed TensorRT ``version`` ("10.8.0.43"):
    the newest key not newer than it (the oldest key for anything older)."""
    installed = tuple(int(part) for part in version.split(".")[:2])
    keys = sorted(TENSORRT_VERSIONS, key=TENSORRT_VERSIONS.__getitem__)
    return next((key for key in reversed(keys) if TENSORRT_VERSIONS[key] <= installed), keys[0])
