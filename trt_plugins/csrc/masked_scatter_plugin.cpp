#include "masked_scatter_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

namespace m2ae
{
namespace
{

constexpr int32_t kBase = 0;
constexpr int32_t kValues = 1;
constexpr int32_t kTiles = 2;

//! A tile side not known yet (-1), or one the launcher takes: a side of 0 cannot cut
//! the grid.
bool tileSideValid(int64_t side) noexcept
{
    return side < 0 || windowSideValid(side);
}

} // namespace

bool MaskedScatterPlugin::outputShape(nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output,
    nvinfer1::IExprBuilder& /*exprBuilder*/) const noexcept
{
    output = inputs[kBase];
    return true;
}

bool MaskedScatterPlugin::dimsAgree(nvinfer1::Dims const* inputs) noexcept
{
    nvinfer1::Dims const& values = inputs[kValues];
    return dimAgrees(values.d[0], inputs[kTiles].d[0]) && dimAgrees(values.d[1], inputs[kBase].d[1])
        && dimAgrees(values.d[2], values.d[3]) && tileSideValid(values.d[2]) && tileSideValid(values.d[3]);
}

int MaskedScatterPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* output, int32_t dtype, cudaStream_t stream) const noexcept
{
    nvinfer1::Dims const& base = inputDesc[kBase].dims;
    return m2ae_masked_scatter(output, inputs[kBase], inputs[kValues], static_cast<int32_t const*>(inputs[kTiles]),
        base.d[0], base.d[1], base.d[2], base.d[3], inputDesc[kTiles].dims.d[0],
        static_cast<int32_t>(inputDesc[kValues].dims.d[3]), dtype, stream);
}

} // namespace m2ae
