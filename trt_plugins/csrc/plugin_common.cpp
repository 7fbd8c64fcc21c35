#include "plugin_common.h"

#include <cstdio>
#include <cstring>
#include <string>

namespace m2ae
{
namespace
{

// The finder outlives every plugin of the library (TensorRT owns it), so a plain
// pointer is enough; TensorRT sets it once, when it loads the library.
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder = finder;
}

void logMessage(nvinfer1::ILogger::Severity severity, char const* pluginName, char const* message) noexcept
{
    try
    {
        std::string const text = std::string("m2ae ") + pluginName + ": " + message;
        nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw across the plugin ABI.
    }
}

bool toKernelDtype(nvinfer1::DataType type, int32_t& dtype) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: dtype = M2AE_FLOAT32; return true;
    case nvinfer1::DataType::kHALF: dtype = M2AE_FLOAT16; return true;
    default: return false;
    }
}

bool isSupportedFloat(nvinfer1::DataType type) noexcept
{
    int32_t unused = 0;
    return toKernelDtype(type, unused);
}

bool readIntField(nvinfer1::PluginFieldCollection const* fc, char const* name, int64_t& value, bool& malformed) noexcept
{
    malformed = false;
    if (fc == nullptr)
    {
        return false;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        if (field.name == nullptr || std::strcmp(field.name, name) != 0)
        {
            continue;
        }
        if (field.data == nullptr || field.length != 1)
        {
            malformed = true;
            return true;
        }
        switch (field.type)
        {
        case nvinfer1::PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
        case nvinfer1::PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
        case nvinfer1::PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
        case nvinfer1::PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
        default: malformed = true; return true;
        }
    }
    return false;
}

bool windowSideValid(int64_t side) noexcept
{
    return side >= 1 && side <= kMaxWindowPixels / side;
}

bool dimAgrees(int64_t a, int64_t b) noexcept
{
    return a == b || a < 0 || b < 0;
}

int32_t launchStatus(char const* pluginName, int status) noexcept
{
    if (status == 0)
    {
        return 0;
    }
    try
    {
        std::string const message = std::string("kernel launch failed: ") + m2ae_cuda_error_string(status);
        logMessage(nvinfer1::ILogger::Severity::kERROR, pluginName, message.c_str());
    }
    catch (...)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, pluginName, "kernel launch failed");
    }
    return -1;
}

} // namespace m2ae
