// MaskedScatter as a TensorRT IPluginV3 (DESIGN.md section 3):
// (base [N,C,H,W], values [C,K], index [K] int32; accumulate) -> out [N,C,H,W].
#pragma once

#include "plugin_base.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>

namespace m2ae
{

class MaskedScatterPlugin final : public MaskedOpPlugin<MaskedScatterPlugin, 1>
{
public:
    using MaskedOpPlugin::MaskedOpPlugin;

    static constexpr char const* kName = "MaskedScatter";
    //! accumulate: 0 writes values (ONNX's default), 1 adds them.
    static constexpr std::array<IntAttribute, 1> kAttributes{{{"accumulate", 0, 0, 1}}};
    static constexpr std::array<int32_t, kNbOpInputs> kInputRanks{4, 2, 1};
    static constexpr char const* kShapeContract
        = "expects base [N,C,H,W], values [C,K] with the C of base, and index [K] with the K of values";

    //! out has base's shape.
    static bool outputShape(
        nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output, nvinfer1::IExprBuilder& exprBuilder) noexcept;
    static bool dimsAgree(nvinfer1::Dims const* inputs) noexcept;
    //! The launcher copies base into out first, unless TensorRT gave both one buffer.
    int launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output, int32_t dtype,
        cudaStream_t stream) const noexcept;
};

} // namespace m2ae
