// What both m2ae plugins share outside their class template (plugin_base.h): version
// and namespace strings, logging through the logger TensorRT hands over, dtype mapping
// to the kernels' enum, attribute parsing and the reporting of kernel launches.
#pragma once

#include "masked_ops_kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <limits>

namespace m2ae
{

constexpr char const* kPluginVersion = "2";
constexpr char const* kPluginNamespace = "m2ae";

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

//! Most pixels in one gathered window or scattered tile. The launchers index a window's
//! pixels in 32 bits and refuse larger ones at enqueue; the plugins refuse them while
//! the engine is built.
constexpr int64_t kMaxWindowPixels = std::numeric_limits<int32_t>::max();

//! True for the side of a square window the launchers accept: >= 1, at most
//! kMaxWindowPixels pixels.
bool windowSideValid(int64_t side) noexcept;

//! Two extents of one axis agree when equal or when either is not known yet (-1 at build time).
bool dimAgrees(int64_t a, int64_t b) noexcept;

//! enqueue's return value for a launcher's status; a failure is logged with CUDA's text.
int32_t launchStatus(char const* pluginName, int status) noexcept;

} // namespace m2ae
