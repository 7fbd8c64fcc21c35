// What makes an m2ae op a TensorRT IPluginV3, shared by both ops through CRTP:
// identity strings, capability lookup, clone/attach, the op's integer attributes and
// their serialization, the output type, the type/format contract, the checks of
// input counts, ranks and known extents, and enqueue's dtype dispatch. Each op's own
// file supplies its name, attributes, input ranks, output shape, cross-input shape
// check and kernel launch (docs/design.md section 3, trt_plugins/reference.py).
//
// An op class `Op : public MaskedOpPlugin<Op, NbInputs, NbAttributes>` provides:
//   static constexpr char const* kName;
//   static constexpr std::array<IntAttribute, NbAttributes> kAttributes;
//   static constexpr std::array<int32_t, NbInputs> kInputRanks;
//   static constexpr char const* kShapeContract;            // error text naming the shapes
//   bool outputShape(DimsExprs const* inputs, DimsExprs& output, IExprBuilder&) const;
//   static bool dimsAgree(Dims const* inputs);               // -1 (not known yet) agrees with all
//   int launch(PluginTensorDesc const* inputDesc, void const* const* inputs, void* output,
//       int32_t dtype, cudaStream_t stream) const;             // the launcher's status
// and hides attributesError (below) when its attribute values constrain each other.
// Both ops take float tensors followed by the int32 tile ids, and return one float tensor.
#pragma once

#include "plugin_common.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>

namespace m2ae
{

//! An integer attribute: its ONNX attribute / serialized field name, valid values, and
//! what an absent field means.
struct IntAttribute
{
    char const* name;
    int32_t min;
    int32_t max;
    bool required;
    int32_t defaultValue; //!< taken when the field is absent and not required
};

template <typename Op, int32_t NbInputs, std::size_t NbAttributes>
class MaskedOpPlugin : public nvinfer1::IPluginV3,
                       public nvinfer1::IPluginV3OneCore,
                       public nvinfer1::IPluginV3OneBuild,
                       public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Attribute values in the order of Op::kAttributes.
    using Attributes = std::array<int32_t, NbAttributes>;

    explicit MaskedOpPlugin(Attributes const& attributes) noexcept
        : mAttributes(attributes)
    {
    }

    // clone() builds from the attributes: a copy would carry fields pointing into another object.
    MaskedOpPlugin(MaskedOpPlugin const&) = delete;
    MaskedOpPlugin& operator=(MaskedOpPlugin const&) = delete;

    //! Null when attribute values, each within its range, also fit together; else why not.
    static char const* attributesError(Attributes const& /*attributes*/) noexcept
    {
        return nullptr;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return new (std::nothrow) Op(mAttributes);
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return Op::kName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!countsValid(nbInputs, nbOutputs))
        {
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        if (!countsValid(nbInputs, nbOutputs) || !ranksValid(inputs))
        {
            return -1;
        }
        // Extents fixed in the network contradict the contract already here, not only
        // once the engine is configured.
        nvinfer1::Dims known[NbInputs];
        for (int32_t i = 0; i < NbInputs; ++i)
        {
            known[i] = knownDims(inputs[i]);
        }
        if (!Op::dimsAgree(known))
        {
            logError(Op::kShapeContract);
            return -1;
        }
        if (!static_cast<Op const&>(*this).outputShape(inputs, outputs[0], exprBuilder))
        {
            logError("could not build the output shape expression");
            return -1;
        }
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != NbInputs || nbOutputs != 1 || pos < 0 || pos > NbInputs)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        if (pos == kTilesInput)
        {
            return desc.type == nvinfer1::DataType::kINT32;
        }
        // TensorRT asks in position order, so input 0's type is already settled.
        return isSupportedFloat(desc.type) && (pos == 0 || desc.type == inOut[0].desc.type);
    }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return shapesValid(in, nbInputs, nbOutputs) ? 0 : -1;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return shapesValid(in, nbInputs, nbOutputs) ? 0 : -1;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override
    {
        int32_t dtype = 0;
        if (!toKernelDtype(inputDesc[0].type, dtype))
        {
            logError("the float tensors must be float32 or float16");
            return -1;
        }
        return launchStatus(
            Op::kName, static_cast<Op const&>(*this).launch(inputDesc, inputs, outputs[0], dtype, stream));
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        // Rebuilt on each call so the fields point at this object's values, not at
        // those of the plugin it was cloned from.
        for (std::size_t i = 0; i < NbAttributes; ++i)
        {
            mFields[i] = nvinfer1::PluginField(
                Op::kAttributes[i].name, &mAttributes[i], nvinfer1::PluginFieldType::kINT32, 1);
        }
        mFieldCollection.nbFields = static_cast<int32_t>(NbAttributes);
        mFieldCollection.fields = mFields.data();
        return &mFieldCollection;
    }

protected:
    //! The tile ids come last in both ops.
    static constexpr int32_t kTilesInput = NbInputs - 1;

    int32_t attribute(std::size_t i) const noexcept
    {
        return mAttributes[i];
    }

    static void logError(char const* message) noexcept
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, Op::kName, message);
    }

private:
    static bool countsValid(int32_t nbInputs, int32_t nbOutputs) noexcept
    {
        if (nbInputs == NbInputs && nbOutputs == 1)
        {
            return true;
        }
        try
        {
            std::string const message = "expects " + std::to_string(NbInputs) + " inputs and 1 output, got "
                + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
            logError(message.c_str());
        }
        catch (...)
        {
            logError("wrong number of inputs or outputs");
        }
        return false;
    }

    static bool ranksValid(nvinfer1::DimsExprs const* inputs) noexcept
    {
        for (int32_t i = 0; i < NbInputs; ++i)
        {
            if (inputs[i].nbDims != Op::kInputRanks[i])
            {
                logError(Op::kShapeContract);
                return false;
            }
        }
        return true;
    }

    //! The extents an expression already fixes; -1 for those that depend on the inputs.
    static nvinfer1::Dims knownDims(nvinfer1::DimsExprs const& exprs) noexcept
    {
        nvinfer1::Dims dims{};
        dims.nbDims = exprs.nbDims;
        for (int32_t i = 0; i < exprs.nbDims; ++i)
        {
            nvinfer1::IDimensionExpr const* e = exprs.d[i];
            dims.d[i] = e != nullptr && e->isConstant() ? e->getConstantValue() : -1;
        }
        return dims;
    }

    //! Counts, ranks and cross-input dims of build-time (DynamicPluginTensorDesc) or
    //! run-time (PluginTensorDesc) descriptors.
    template <typename Desc>
    static bool shapesValid(Desc const* in, int32_t nbInputs, int32_t nbOutputs) noexcept
    {
        if (!countsValid(nbInputs, nbOutputs))
        {
            return false;
        }
        nvinfer1::Dims dims[NbInputs];
        for (int32_t i = 0; i < NbInputs; ++i)
        {
            dims[i] = dimsOf(in[i]);
            if (dims[i].nbDims != Op::kInputRanks[i])
            {
                logError(Op::kShapeContract);
                return false;
            }
        }
        if (!Op::dimsAgree(dims))
        {
            logError(Op::kShapeContract);
            return false;
        }
        return true;
    }

    static nvinfer1::Dims const& dimsOf(nvinfer1::DynamicPluginTensorDesc const& desc) noexcept
    {
        return desc.desc.dims;
    }

    static nvinfer1::Dims const& dimsOf(nvinfer1::PluginTensorDesc const& desc) noexcept
    {
        return desc.dims;
    }

    Attributes mAttributes;
    std::array<nvinfer1::PluginField, NbAttributes> mFields{};
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace m2ae
