#include "masked_gather_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

namespace m2ae
{
namespace
{

constexpr int32_t kDense = 0;
constexpr int32_t kTiles = 1;
constexpr std::size_t kTile = 0;
constexpr std::size_t kHalo = 1;

int64_t windowSide(int32_t tile, int32_t halo) noexcept
{
    return int64_t{tile} + 2 * int64_t{halo};
}

} // namespace

char const* MaskedGatherPlugin::attributesError(Attributes const& attributes) noexcept
{
    return windowSideValid(windowSide(attributes[kTile], attributes[kHalo]))
        ? nullptr
        : "tile + 2*halo, the side of a gathered window, must be at most 46340 (2^31 - 1 pixels)";
}

bool MaskedGatherPlugin::outputShape(
    nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output, nvinfer1::IExprBuilder& exprBuilder) const noexcept
{
    nvinfer1::IDimensionExpr const* side = exprBuilder.constant(windowSide(attribute(kTile), attribute(kHalo)));
    output.nbDims = 4;
    output.d[0] = inputs[kTiles].d[0];
    output.d[1] = inputs[kDense].d[1];
    output.d[2] = side;
    output.d[3] = side;
    return side != nullptr;
}

bool MaskedGatherPlugin::dimsAgree(nvinfer1::Dims const* /*inputs*/) noexcept
{
    return true;
}

int MaskedGatherPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output,
    int32_t dtype, cudaStream_t stream) const noexcept
{
    nvinfer1::Dims const& dense = inputDesc[kDense].dims;
    return m2ae_masked_gather(output, inputs[kDense], static_cast<int32_t const*>(inputs[kTiles]), dense.d[0],
        dense.d[1], dense.d[2], dense.d[3], inputDesc[kTiles].dims.d[0], attribute(kTile), attribute(kHalo), dtype,
        stream);
}

} // namespace m2ae
