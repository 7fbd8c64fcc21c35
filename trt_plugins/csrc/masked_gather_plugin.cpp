#include "masked_gather_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

#include <new>
#include <string>

namespace m2ae
{
namespace
{

constexpr int32_t kNbInputs = 3;
constexpr int32_t kDense = 0;
constexpr int32_t kTokens = 1;
constexpr int32_t kTable = 2;

bool shapesValid(nvinfer1::Dims const* in, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return nbInputs == kNbInputs && nbOutputs == 1 && in[kDense].nbDims == 4 && in[kTokens].nbDims == 2
        && in[kTable].nbDims == 2;
}

void logError(char const* message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, kGatherName, message);
}

} // namespace

nvinfer1::IPluginCapability* MaskedGatherPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* MaskedGatherPlugin::clone() noexcept
{
    return new (std::nothrow) MaskedGatherPlugin();
}

char const* MaskedGatherPlugin::getPluginName() const noexcept
{
    return kGatherName;
}

char const* MaskedGatherPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* MaskedGatherPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t MaskedGatherPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t MaskedGatherPlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        logError("expects 3 inputs (dense, tokens, table) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[kDense];
    return 0;
}

int32_t MaskedGatherPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kDense].nbDims != 4 || inputs[kTokens].nbDims != 2
        || inputs[kTable].nbDims != 2)
    {
        logError("expects dense [N,C,H,W], tokens [C,Kt] and table [T,K]");
        return -1;
    }
    // out [T*C, K]: K (table's columns) is data-dependent in the real graph; its
    // expression comes in through the table's dims.
    outputs[0].nbDims = 2;
    outputs[0].d[0]
        = exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *inputs[kTable].d[0], *inputs[kDense].d[1]);
    outputs[0].d[1] = inputs[kTable].d[1];
    return 0;
}

bool MaskedGatherPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos >= kNbInputs + 1)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == kTable)
    {
        return desc.type == nvinfer1::DataType::kINT32;
    }
    if (pos == kDense)
    {
        return isSupportedFloat(desc.type);
    }
    // tokens and out share dense's type.
    return desc.type == inOut[kDense].desc.type;
}

int32_t MaskedGatherPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < nbInputs && i < kNbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    if (!shapesValid(dims, nbInputs, nbOutputs))
    {
        logError("expects dense [N,C,H,W], tokens [C,Kt] and table [T,K]");
        return -1;
    }
    return 0;
}

int32_t MaskedGatherPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < nbInputs && i < kNbInputs; ++i)
    {
        dims[i] = in[i].dims;
    }
    if (!shapesValid(dims, nbInputs, nbOutputs) || dims[kTokens].d[0] != dims[kDense].d[1])
    {
        logError("tokens must be [C,Kt] with the C of dense [N,C,H,W], and table [T,K]");
        return -1;
    }
    return 0;
}

int32_t MaskedGatherPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    int32_t dtype = 0;
    if (!toKernelDtype(inputDesc[kDense].type, dtype))
    {
        logError("dense must be float32 or float16");
        return -1;
    }
    nvinfer1::Dims const& dense = inputDesc[kDense].dims;
    nvinfer1::Dims const& table = inputDesc[kTable].dims;
    int const status = m2ae_masked_gather(outputs[0], inputs[kDense], inputs[kTokens],
        static_cast<int32_t const*>(inputs[kTable]), dense.d[0], dense.d[1], dimsProduct(dense, 2, 4),
        inputDesc[kTokens].dims.d[1], table.d[0], table.d[1], dtype, stream);
    if (status != 0)
    {
        std::string const message
            = std::string("kernel launch failed: ") + cudaGetErrorString(static_cast<cudaError_t>(status));
        logError(message.c_str());
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* MaskedGatherPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* MaskedGatherPlugin::getFieldsToSerialize() noexcept
{
    return &mFields;
}

} // namespace m2ae
