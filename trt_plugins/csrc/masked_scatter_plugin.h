// MaskedScatter as a TensorRT IPluginV3 (docs/design.md section 3, trt_plugins/reference.py):
// (base [N,C,H,W], values [B,C,tile,tile], tiles [B] int32) -> out [N,C,H,W].
#pragma once

#include "plugin_base.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>

namespace m2ae
{

class MaskedScatterPlugin final : public MaskedOpPlugin<MaskedScatterPlugin, 3, 0>
{
public:
    using MaskedOpPlugin::MaskedOpPlugin;

    static constexpr char const* kName = "MaskedScatter";
    static constexpr std::array<IntAttribute, 0> kAttributes{};
    static constexpr std::array<int32_t, 3> kInputRanks{4, 4, 1};
    static constexpr char const* kShapeContract
        = "expects base [N,C,H,W], values [B,C,tile,tile] with the C of base and 1 <= tile <= 46340, and tiles [B]";

    //! out has base's shape.
    bool outputShape(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output,
        nvinfer1::IExprBuilder& exprBuilder) const noexcept;
    static bool dimsAgree(nvinfer1::Dims const* inputs) noexcept;
    //! The tile size is values' last extent. The launcher copies base into out first,
    //! unless TensorRT gave both one buffer.
    int launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output, int32_t dtype,
        cudaStream_t stream) const noexcept;
};

} // namespace m2ae
