// What both m2ae plugins share: identity strings, logging through the logger TensorRT
// hands over, dtype mapping to the kernels' enum and attribute parsing.
#pragma once

#include "masked_ops_kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>

namespace m2ae
{

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "m2ae";
constexpr char const* kGatherName = "MaskedGather";
constexpr char const* kScatterName = "MaskedScatter";
constexpr char const* kAccumulateField = "accumulate";

//! Remembers the logger finder TensorRT passes to setLoggerFinder (null is allowed).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Logs through TensorRT's logger when one was handed over, else to stderr.
void logMessage(nvinfer1::ILogger::Severity severity, char const* pluginName, char const* message) noexcept;

//! Maps a TensorRT tensor type to the kernels' M2aeDtype; false for anything else.
bool toKernelDtype(nvinfer1::DataType type, int32_t& dtype) noexcept;

//! True for the float types the kernels support.
bool isSupportedFloat(nvinfer1::DataType type) noexcept;

//! Reads a scalar integer field of any integer width (the ONNX parser passes INT
//! attributes as int32 but a user-built collection may use other widths).
//! Returns false when the field is absent; sets `malformed` when present but unusable.
bool readIntField(nvinfer1::PluginFieldCollection const* fc, char const* name, int64_t& value, bool& malformed) noexcept;

//! Product of dims [begin, end) of a tensor descriptor.
int64_t dimsProduct(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept;

} // namespace m2ae
