// Creators of the two m2ae plugins: they name the plugins for the registry and build
// plugin objects from the fields the ONNX parser (node attributes) or an engine
// (getFieldsToSerialize) passes in. One template serves both ops: a creator knows its
// op only through the plugin class's name and attribute list.
#pragma once

#include "masked_gather_plugin.h"
#include "masked_scatter_plugin.h"

#include <NvInferRuntime.h>

#include <array>

namespace m2ae
{

template <typename Plugin>
class MaskedOpCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    MaskedOpCreator() noexcept;

    //! Optional attributes missing from `fc` take their defaults; fields of other names
    //! are ignored; a required attribute missing, an attribute that is not one integer
    //! in range, or values that do not fit together (Plugin::attributesError) are an
    //! error (null).
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::array<nvinfer1::PluginField, Plugin::kAttributes.size()> mFields{};
    nvinfer1::PluginFieldCollection mFieldNames{};
};

using MaskedGatherCreator = MaskedOpCreator<MaskedGatherPlugin>;
using MaskedScatterCreator = MaskedOpCreator<MaskedScatterPlugin>;

extern template class MaskedOpCreator<MaskedGatherPlugin>;
extern template class MaskedOpCreator<MaskedScatterPlugin>;

} // namespace m2ae
