#include "masked_scatter_plugin.h"

#include "masked_ops_kernels.h"
#include "plugin_common.h"

#include <new>
#include <string>

namespace m2ae
{
namespace
{

constexpr int32_t kNbInputs = 3;
constexpr int32_t kBase = 0;
constexpr int32_t kValues = 1;
constexpr int32_t kIndex = 2;

bool shapesValid(nvinfer1::Dims const* in, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return nbInputs == kNbInputs && nbOutputs == 1 && in[kBase].nbDims == 4 && in[kValues].nbDims == 2
        && in[kIndex].nbDims == 1;
}

void logError(char const* message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, kScatterName, message);
}

} // namespace

MaskedScatterPlugin::MaskedScatterPlugin(int32_t accumulate)
    : mAccumulate(accumulate)
{
}

MaskedScatterPlugin::MaskedScatterPlugin(MaskedScatterPlugin const& other)
    : mAccumulate(other.mAccumulate)
{
}

nvinfer1::IPluginCapability* MaskedScatterPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* MaskedScatterPlugin::clone() noexcept
{
    return new (std::nothrow) MaskedScatterPlugin(*this);
}

char const* MaskedScatterPlugin::getPluginName() const noexcept
{
    return kScatterName;
}

char const* MaskedScatterPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* MaskedScatterPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t MaskedScatterPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t MaskedScatterPlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        logError("expects 3 inputs (base, values, index) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[kBase];
    return 0;
}

int32_t MaskedScatterPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kBase].nbDims != 4)
    {
        logError("expects base [N,C,H,W], values [C,K] and index [K]");
        return -1;
    }
    outputs[0] = inputs[kBase];
    return 0;
}

bool MaskedScatterPlugin::supportsFormatCombination(
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
    if (pos == kIndex)
    {
        return desc.type == nvinfer1::DataType::kINT32;
    }
    if (pos == kBase)
    {
        return isSupportedFloat(desc.type);
    }
    // values and out share base's type.
    return desc.type == inOut[kBase].desc.type;
}

int32_t MaskedScatterPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < nbInputs && i < kNbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    if (!shapesValid(dims, nbInputs, nbOutputs))
    {
        logError("expects base [N,C,H,W], values [C,K] and index [K]");
        return -1;
    }
    return 0;
}

int32_t MaskedScatterPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < nbInputs && i < kNbInputs; ++i)
    {
        dims[i] = in[i].dims;
    }
    if (!shapesValid(dims, nbInputs, nbOutputs) || dims[kValues].d[0] != dims[kBase].d[1]
        || dims[kValues].d[1] != dims[kIndex].d[0])
    {
        logError("values must be [C,K] with the C of base [N,C,H,W] and the K of index [K]");
        return -1;
    }
    return 0;
}

int32_t MaskedScatterPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    int32_t dtype = 0;
    if (!toKernelDtype(inputDesc[kBase].type, dtype))
    {
        logError("base must be float32 or float16");
        return -1;
    }
    nvinfer1::Dims const& base = inputDesc[kBase].dims;
    // The launcher copies base into out first, unless TensorRT gave both one buffer.
    int const status = m2ae_masked_scatter(outputs[0], inputs[kBase], inputs[kValues],
        static_cast<int32_t const*>(inputs[kIndex]), base.d[0], base.d[1], dimsProduct(base, 2, 4),
        inputDesc[kIndex].dims.d[0], dtype, mAccumulate, stream);
    if (status != 0)
    {
        std::string const message
            = std::string("kernel launch failed: ") + cudaGetErrorString(static_cast<cudaError_t>(status));
        logError(message.c_str());
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* MaskedScatterPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* MaskedScatterPlugin::getFieldsToSerialize() noexcept
{
    mField = nvinfer1::PluginField(kAccumulateField, &mAccumulate, nvinfer1::PluginFieldType::kINT32, 1);
    mFields.nbFields = 1;
    mFields.fields = &mField;
    return &mFields;
}

} // namespace m2ae
