#include "masked_scatter_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

namespace m2ae
{
namespace
{

constexpr int32_t kBase = 0;
constexpr int32_t kValues = 1;
constexpr int32_t kIndex = 2;
constexpr std::size_t kAccumulate = 0;

} // namespace

bool MaskedScatterPlugin::outputShape(
    nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    output = inputs[kBase];
    return true;
}

bool MaskedScatterPlugin::dimsAgree(nvinfer1::Dims const* inputs) noexcept
{
    return dimAgrees(inputs[kValues].d[0], inputs[kBase].d[1]) && dimAgrees(inputs[kValues].d[1], inputs[kIndex].d[0]);
}

int MaskedScatterPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* output, int32_t dtype, cudaStream_t stream) const noexcept
{
    nvinfer1::Dims const& base = inputDesc[kBase].dims;
    return m2ae_masked_scatter(output, inputs[kBase], inputs[kValues], static_cast<int32_t const*>(inputs[kIndex]),
        base.d[0], base.d[1], dimsProduct(base, 2, 4), inputDesc[kIndex].dims.d[0], dtype, attribute(kAccumulate),
        stream);
}

} // namespace m2ae
