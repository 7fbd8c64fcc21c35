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
    op(ThreadCoord{blockIdx.x, blockIdx.y, threadIdx.x, blockDim.x});
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
        dim3 const blocks(static_cast<unsigned>(grid.x), static_cast<unsigned>(grid.y));
        runThreads<<<blocks, static_cast<unsigned>(grid.threads), 0, mStream>>>(op);
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

extern "C" int m2ae_masked_gather(void* out, void const* dense, int32_t const* tiles, int64_t n, int64_t c,
    int64_t h, int64_t w, int64_t b, int32_t tile, int32_t halo, int32_t dtype, cudaStream_t stream)
{
    StreamExecutor exec(stream);
    return m2ae::kernels::maskedGather(exec, out, dense, tiles, n, c, h, w, b, tile, halo, dtype);
}

extern "C" int m2ae_masked_scatter(void* out, void const* base, void const* values, int32_t const* tiles, int64_t n,
    int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t dtype, cudaStream_t stream)
{
    StreamExecutor exec(stream);
    return m2ae::kernels::maskedScatter(exec, out, base, values, tiles, n, c, h, w, b, tile, dtype);
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
