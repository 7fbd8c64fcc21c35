// How TensorRT finds the m2ae plugins, whichever way the library is loaded:
//  - dlopen (ctypes RTLD_GLOBAL from m2ae.trt_plugins.loader, trtexec --staticPlugins):
//    a static registrar adds both creators to the global registry, once;
//  - IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, version-compatible
//    engines): TensorRT calls the exported getCreators / setLoggerFinder.
// loadLibrary fails when a creator it is handed is already registered, and its dlopen
// has just run the static registrar, so getCreators takes the static registration
// back before handing the creators over.
#include "masked_ops_creators.h"
#include "masked_ops_kernels.h"
#include "plugin_common.h"

#include <NvInferVersion.h>

#include <cstring>

#ifndef M2AE_CUDA_ARCHS
#define M2AE_CUDA_ARCHS "unknown"
#endif

namespace m2ae
{
namespace
{

constexpr int32_t kNbCreators = 2;

nvinfer1::IPluginCreatorInterface* const* libraryCreators() noexcept
{
    static MaskedGatherCreator gatherCreator;
    static MaskedScatterCreator scatterCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[kNbCreators] = {&gatherCreator, &scatterCreator};
    return creators;
}

//! Calls action(registry, creator, registered) for each creator of this library, where
//! `registered` is the registry's creator of the same name, version and namespace (or null).
template <typename Action>
void forEachCreator(Action action) noexcept
{
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry == nullptr)
    {
        return;
    }
    nvinfer1::IPluginCreatorInterface* const* creators = libraryCreators();
    for (int32_t i = 0; i < kNbCreators; ++i)
    {
        auto& creator = static_cast<nvinfer1::IPluginCreatorV3One&>(*creators[i]);
        action(*registry, creator, registry->getCreator(creator.getPluginName(), kPluginVersion, kPluginNamespace));
    }
}

// Idempotent: a creator with the same name, version and namespace already in the
// registry (this library loaded twice, or another copy of it) is left alone.
void registerWithGlobalRegistry() noexcept
{
    forEachCreator([](nvinfer1::IPluginRegistry& registry, nvinfer1::IPluginCreatorV3One& creator,
                       nvinfer1::IPluginCreatorInterface* registered) {
        if (registered == nullptr)
        {
            registry.registerCreator(creator, kPluginNamespace);
        }
    });
}

void deregisterFromGlobalRegistry() noexcept
{
    forEachCreator([](nvinfer1::IPluginRegistry& registry, nvinfer1::IPluginCreatorV3One& creator,
                       nvinfer1::IPluginCreatorInterface* registered) {
        if (registered == &creator)
        {
            registry.deregisterCreator(creator);
        }
    });
}

struct StaticRegistrar
{
    StaticRegistrar() noexcept
    {
        registerWithGlobalRegistry();
    }
};

StaticRegistrar const staticRegistrar;

} // namespace
} // namespace m2ae

extern "C"
{

M2AE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    m2ae::setLoggerFinder(finder);
}

M2AE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    m2ae::deregisterFromGlobalRegistry();
    nbCreators = m2ae::kNbCreators;
    return m2ae::libraryCreators();
}

//! JSON object: the TensorRT version the plugins were compiled against, the CUDA
//! runtime version and the CUDA architectures of the kernels. The loader compares it
//! with the TensorRT and GPU it runs with.
M2AE_EXPORT char const* m2ae_plugin_build_info(void)
{
#define M2AE_STR2(x) #x
#define M2AE_STR(x) M2AE_STR2(x)
    return "{\"tensorrt\": \"" M2AE_STR(NV_TENSORRT_MAJOR) "." M2AE_STR(NV_TENSORRT_MINOR) "." M2AE_STR(
        NV_TENSORRT_PATCH) "\", \"cuda_runtime\": " M2AE_STR(CUDART_VERSION) ", \"cuda_archs\": \"" M2AE_CUDA_ARCHS
                           "\"}";
#undef M2AE_STR
#undef M2AE_STR2
}

} // extern "C"
