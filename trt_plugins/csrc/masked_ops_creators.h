// Creators of the two m2ae plugins: they name the plugins for the registry and build
// plugin objects from the fields the ONNX parser (node attributes) or an engine
// (getFieldsToSerialize) passes in.
#pragma once

#include <NvInferRuntime.h>

#include <vector>

namespace m2ae
{

class MaskedGatherCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    MaskedGatherCreator() = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    nvinfer1::PluginFieldCollection mFieldNames{};
};

class MaskedScatterCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    MaskedScatterCreator();

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldList;
    nvinfer1::PluginFieldCollection mFieldNames{};
};

} // namespace m2ae
