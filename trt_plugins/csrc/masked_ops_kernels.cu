// CUDA launchers behind masked_ops_kernels.h: the per-thread work and the launch
// planning live in masked_ops_kernels.cuh; this file runs them on a stream.
#include "masked_ops_kernels.cuh"

#include "masked_ops_kernels.h"

#ifndef M2AE_CUDA_ARCHS
#define M2AE_CUDA_ARCHS "unknown"
#endif

namespace
{

using m2ae::kernels::Grid;
using m2ae::kernels::kThreads;
using m2ae::kernels::ThreadCoord;

template <typename Op>
__global__ void __launch_bounds__(kThreads) runThreads(Op const op)
{
    op(ThreadCoord{blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x});
}

//! Launches every op asynchronously on one stream.
class StreamExecutor
{
public:
    explicit StreamExecutor(cudaStream_t stream)
        : mStream(stream)
    {
    }

    template <typename Op>
    void run(Grid grid, Op const& op)
    {
        dim3 const blocks(static_cast<unsigned>(grid.x), static_cast<unsigned>(grid.y), static_cast<unsigned>(grid.z));
        runThreads<<<blocks, kThreads, 0, mStream>>>(op);
    }

    int copy(void* dst, void const* src, size_t bytes)
    {
        return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, mStream);
    }

    int finish()
    {
        return cudaGetLastError();
    }

private:
    cudaStream_t mStream;
};

} // namespace

extern "C" int m2ae_masked_gather(void* out, void const* dense, void const* tokens, int32_t const* table, int64_t n,
    int64_t c, int64_t hw, int64_t kt, int64_t t, int64_t k, int32_t dtype, cudaStream_t stream)
{
    StreamExecutor exec(stream);
    return m2ae::kernels::maskedGather(exec, out, dense, tokens, table, n, c, hw, kt, t, k, dtype);
}

extern "C" int m2ae_masked_scatter(void* out, void const* base, void const* values, int32_t const* index, int64_t n,
    int64_t c, int64_t hw, int64_t k, int32_t dtype, int32_t accumulate, cudaStream_t stream)
{
    StreamExecutor exec(stream);
    return m2ae::kernels::maskedScatter(exec, out, base, values, index, n, c, hw, k, dtype, accumulate);
}

extern "C" char const* m2ae_cuda_error_string(int status)
{
    return cudaGetErrorString(static_cast<cudaError_t>(status));
}

extern "C" char const* m2ae_kernels_build_info(void)
{
#define M2AE_STR2(x) #x
#define M2AE_STR(x) M2AE_STR2(x)
    return "{\"cuda_runtime\": " M2AE_STR(CUDART_VERSION) ", \"cuda_archs\": \"" M2AE_CUDA_ARCHS "\"}";
#undef M2AE_STR
#undef M2AE_STR2
}
