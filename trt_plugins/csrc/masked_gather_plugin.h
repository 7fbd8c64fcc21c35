// MaskedGather as a TensorRT IPluginV3 (docs/design.md section 3, trt_plugins/reference.py):
// (dense [N,C,H,W], tiles [B] int32; tile, halo) -> out [B, C, tile+2*halo, tile+2*halo].
#pragma once

#include "plugin_base.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <limits>

namespace m2ae
{

class MaskedGatherPlugin final : public MaskedOpPlugin<MaskedGatherPlugin, 2, 2>
{
public:
    using MaskedOpPlugin::MaskedOpPlugin;

    static constexpr char const* kName = "MaskedGather";
    //! halo is optional, 0 when absent, as in the ONNX lowering and the ORT custom op.
    static constexpr std::array<IntAttribute, 2> kAttributes{{{"tile", 1, std::numeric_limits<int32_t>::max(), true, 0},
        {"halo", 0, std::numeric_limits<int32_t>::max(), false, 0}}};
    static constexpr std::array<int32_t, 2> kInputRanks{4, 1};
    static constexpr char const* kShapeContract = "expects dense [N,C,H,W] and tiles [B]";

    //! The window side S = tile + 2*halo must fit the launcher (windowSideValid).
    static char const* attributesError(Attributes const& attributes) noexcept;
    //! out [B, C, S, S] with S = tile + 2*halo; B, NonZero's count upstream, is data-dependent.
    bool outputShape(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output,
        nvinfer1::IExprBuilder& exprBuilder) const noexcept;
    //! dense and tiles share no axis: any extents agree.
    static bool dimsAgree(nvinfer1::Dims const* inputs) noexcept;
    int launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output, int32_t dtype,
        cudaStream_t stream) const noexcept;
};

} // namespace m2ae
