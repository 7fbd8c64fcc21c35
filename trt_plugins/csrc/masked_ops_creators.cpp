#include "masked_ops_creators.h"

#include "masked_gather_plugin.h"
#include "masked_scatter_plugin.h"
#include "plugin_common.h"

#include <new>

namespace m2ae
{

nvinfer1::IPluginV3* MaskedGatherCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* /*fc*/, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    // The op has no attributes; the parser's plugin_version/plugin_namespace
    // fields, if passed on, only select this creator.
    return new (std::nothrow) MaskedGatherPlugin();
}

nvinfer1::PluginFieldCollection const* MaskedGatherCreator::getFieldNames() noexcept
{
    return &mFieldNames;
}

char const* MaskedGatherCreator::getPluginName() const noexcept
{
    return kGatherName;
}

char const* MaskedGatherCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* MaskedGatherCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

MaskedScatterCreator::MaskedScatterCreator()
    : mFieldList{nvinfer1::PluginField(kAccumulateField, nullptr, nvinfer1::PluginFieldType::kINT32, 1)}
{
    mFieldNames.nbFields = static_cast<int32_t>(mFieldList.size());
    mFieldNames.fields = mFieldList.data();
}

nvinfer1::IPluginV3* MaskedScatterCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    int64_t accumulate = 0;
    bool malformed = false;
    readIntField(fc, kAccumulateField, accumulate, malformed);
    if (malformed || (accumulate != 0 && accumulate != 1))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, kScatterName,
            "attribute 'accumulate' must be a single integer, 0 (replace) or 1 (add)");
        return nullptr;
    }
    return new (std::nothrow) MaskedScatterPlugin(static_cast<int32_t>(accumulate));
}

nvinfer1::PluginFieldCollection const* MaskedScatterCreator::getFieldNames() noexcept
{
    return &mFieldNames;
}

char const* MaskedScatterCreator::getPluginName() const noexcept
{
    return kScatterName;
}

char const* MaskedScatterCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* MaskedScatterCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

} // namespace m2ae
