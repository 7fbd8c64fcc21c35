// MaskedGather as a TensorRT IPluginV3 (DESIGN.md section 3):
// (dense [N,C,H,W], tokens [C,Kt], table [T,K] int32) -> out [T*C, K].
#pragma once

#include "plugin_base.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>

namespace m2ae
{

class MaskedGatherPlugin final : public MaskedOpPlugin<MaskedGatherPlugin, 0>
{
public:
    using MaskedOpPlugin::MaskedOpPlugin;

    static constexpr char const* kName = "MaskedGather";
    static constexpr std::array<IntAttribute, 0> kAttributes{};
    static constexpr std::array<int32_t, kNbOpInputs> kInputRanks{4, 2, 2};
    static constexpr char const* kShapeContract
        = "expects dense [N,C,H,W], tokens [C,Kt] with the C of dense, and table [T,K]";

    //! out [T*C, K]; K, the table's columns, is data-dependent in the real graph.
    static bool outputShape(
        nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output, nvinfer1::IExprBuilder& exprBuilder) noexcept;
    static bool dimsAgree(nvinfer1::Dims const* inputs) noexcept;
    int launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output, int32_t dtype,
        cudaStream_t stream) const noexcept;
};

} // namespace m2ae
