#include "masked_ops_creators.h"

#include "plugin_common.h"

#include <new>
#include <string>

namespace m2ae
{
namespace
{

//! Reads one attribute into `value`; false (logged) when required but absent, or
//! present but not one integer within the attribute's range.
bool readAttribute(
    char const* pluginName, IntAttribute const& spec, nvinfer1::PluginFieldCollection const* fc, int32_t& value) noexcept
{
    int64_t read = spec.defaultValue;
    bool malformed = false;
    bool const present = readIntField(fc, spec.name, read, malformed);
    if ((present || !spec.required) && !malformed && read >= spec.min && read <= spec.max)
    {
        value = static_cast<int32_t>(read);
        return true;
    }
    try
    {
        std::string const message = std::string("attribute '") + spec.name + "' "
            + (present ? "must be one integer in [" : "is missing; it takes one integer in [")
            + std::to_string(spec.min) + ", " + std::to_string(spec.max) + "]";
        logMessage(nvinfer1::ILogger::Severity::kERROR, pluginName, message.c_str());
    }
    catch (...)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, pluginName, "missing or malformed attribute");
    }
    return false;
}

} // namespace

template <typename Plugin>
MaskedOpCreator<Plugin>::MaskedOpCreator() noexcept
{
    for (std::size_t i = 0; i < mFields.size(); ++i)
    {
        mFields[i] = nvinfer1::PluginField(Plugin::kAttributes[i].name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    }
    mFieldNames.nbFields = static_cast<int32_t>(mFields.size());
    mFieldNames.fields = mFields.data();
}

template <typename Plugin>
nvinfer1::IPluginV3* MaskedOpCreator<Plugin>::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    typename Plugin::Attributes values{};
    for (std::size_t i = 0; i < values.size(); ++i)
    {
        if (!readAttribute(Plugin::kName, Plugin::kAttributes[i], fc, values[i]))
        {
            return nullptr;
        }
    }
    if (char const* error = Plugin::attributesError(values))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, Plugin::kName, error);
        return nullptr;
    }
    return new (std::nothrow) Plugin(values);
}

template <typename Plugin>
nvinfer1::PluginFieldCollection const* MaskedOpCreator<Plugin>::getFieldNames() noexcept
{
    return &mFieldNames;
}

template <typename Plugin>
char const* MaskedOpCreator<Plugin>::getPluginName() const noexcept
{
    return Plugin::kName;
}

template <typename Plugin>
char const* MaskedOpCreator<Plugin>::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

template <typename Plugin>
char const* MaskedOpCreator<Plugin>::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

template class MaskedOpCreator<MaskedGatherPlugin>;
template class MaskedOpCreator<MaskedScatterPlugin>;

} // namespace m2ae
