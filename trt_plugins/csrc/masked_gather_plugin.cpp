#include "masked_gather_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

namespace m2ae
{
namespace
{

constexpr int32_t kDense = 0;
constexpr int32_t kTokens = 1;
constexpr int32_t kTable = 2;

} // namespace

bool MaskedGatherPlugin::outputShape(
    nvinfer1::DimsExprs const* inputs, nvinfer1::DimsExprs& output, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    output.nbDims = 2;
    output.d[0]
        = exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *inputs[kTable].d[0], *inputs[kDense].d[1]);
    output.d[1] = inputs[kTable].d[1];
    return output.d[0] != nullptr;
}

bool MaskedGatherPlugin::dimsAgree(nvinfer1::Dims const* inputs) noexcept
{
    return dimAgrees(inputs[kTokens].d[0], inputs[kDense].d[1]);
}

int MaskedGatherPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs, void* output,
    int32_t dtype, cudaStream_t stream) const noexcept
{
    nvinfer1::Dims const& dense = inputDesc[kDense].dims;
    nvinfer1::Dims const& table = inputDesc[kTable].dims;
    return m2ae_masked_gather(output, inputs[kDense], inputs[kTokens], static_cast<int32_t const*>(inputs[kTable]),
        dense.d[0], dense.d[1], dimsProduct(dense, 2, 4), inputDesc[kTokens].dims.d[1], table.d[0], table.d[1], dtype,
        stream);
}

} // namespace m2ae
