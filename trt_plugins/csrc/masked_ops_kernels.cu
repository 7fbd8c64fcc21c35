// Kernels behind masked_ops_kernels.h.
//
// Layout: one thread owns VEC consecutive columns k of one table row t (gather) or of
// the index (scatter) and walks a chunk of channels. Index loads, token/value reads and
// the writes of out[t*C + c, k] are then coalesced along k, and a decoded index is
// reused for every channel of the chunk. Dense pixels sit at n*C*HW + c*HW + hw, so
// those reads (gather) and writes (scatter) are the unavoidable strided part.
#include "masked_ops_kernels.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#ifndef M2AE_CUDA_ARCHS
#define M2AE_CUDA_ARCHS "unknown"
#endif

namespace
{

constexpr int kThreads = 256;
// Channels per block: enough to amortise the index decode, few enough that small K
// still spreads over many blocks.
constexpr int64_t kChannelsPerBlock = 16;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack
{
    T v[VEC];
};

template <typename T>
__device__ __forceinline__ T zeroValue();

template <>
__device__ __forceinline__ float zeroValue<float>()
{
    return 0.0f;
}

template <>
__device__ __forceinline__ __half zeroValue<__half>()
{
    return __ushort_as_half(0);
}

// Single IEEE round-to-nearest additions: bit-identical to numpy's float32/float16 +=.
__device__ __forceinline__ float addValues(float a, float b)
{
    return __fadd_rn(a, b);
}

__device__ __forceinline__ __half addValues(__half a, __half b)
{
    return __hadd(a, b);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) maskedGatherKernel(T* __restrict__ out, T const* __restrict__ dense,
    T const* __restrict__ tokens, int32_t const* __restrict__ table, int64_t c, int64_t hw, int64_t kt, int64_t k)
{
    int64_t const k0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
    if (k0 >= k)
    {
        return;
    }
    int64_t const t = blockIdx.y;
    int64_t const c0 = static_cast<int64_t>(blockIdx.z) * kChannelsPerBlock;
    int64_t const c1 = min(c0 + kChannelsPerBlock, c);

    Pack<int32_t, VEC> const v = *reinterpret_cast<Pack<int32_t, VEC> const*>(table + t * k + k0);
    T const* src[VEC];
    int64_t stride[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j)
    {
        int32_t const vj = v.v[j];
        if (vj >= 0)
        {
            src[j] = tokens + vj + c0 * kt;
            stride[j] = kt;
        }
        else if (vj == -1)
        {
            src[j] = nullptr;
            stride[j] = 0;
        }
        else
        {
            int64_t const p = -2 - static_cast<int64_t>(vj);
            int64_t const n = p / hw;
            src[j] = dense + n * c * hw + (p - n * hw) + c0 * hw;
            stride[j] = hw;
        }
    }

    T* dst = out + (t * c + c0) * k + k0;
#pragma unroll 4
    for (int64_t ch = 0; ch < c1 - c0; ++ch)
    {
        Pack<T, VEC> o;
#pragma unroll
        for (int j = 0; j < VEC; ++j)
        {
            o.v[j] = src[j] != nullptr ? src[j][ch * stride[j]] : zeroValue<T>();
        }
        *reinterpret_cast<Pack<T, VEC>*>(dst + ch * k) = o;
    }
}

template <typename T, int VEC, bool ACCUMULATE>
__global__ void __launch_bounds__(kThreads) maskedScatterKernel(
    T* __restrict__ out, T const* __restrict__ values, int32_t const* __restrict__ index, int64_t c, int64_t hw, int64_t k)
{
    int64_t const k0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
    if (k0 >= k)
    {
        return;
    }
    int64_t const c0 = static_cast<int64_t>(blockIdx.z) * kChannelsPerBlock;
    int64_t const c1 = min(c0 + kChannelsPerBlock, c);

    Pack<int32_t, VEC> const p = *reinterpret_cast<Pack<int32_t, VEC> const*>(index + k0);
    T* dst[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j)
    {
        int64_t const pj = p.v[j];
        int64_t const n = pj / hw;
        dst[j] = out + n * c * hw + (pj - n * hw) + c0 * hw;
    }

    T const* src = values + c0 * k + k0;
#pragma unroll 4
    for (int64_t ch = 0; ch < c1 - c0; ++ch)
    {
        Pack<T, VEC> const val = *reinterpret_cast<Pack<T, VEC> const*>(src + ch * k);
#pragma unroll
        for (int j = 0; j < VEC; ++j)
        {
            T* d = dst[j] + ch * hw;
            *d = ACCUMULATE ? addValues(*d, val.v[j]) : val.v[j];
        }
    }
}

bool isAligned(void const* ptr, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// Widest vector along k that divides K and that every vector-accessed pointer allows.
template <typename T>
int chooseVectorWidth(int64_t k, void const* a, void const* b)
{
    for (int vec : {4, 2})
    {
        if (k % vec == 0 && isAligned(a, vec * sizeof(int32_t)) && isAligned(b, vec * sizeof(T)))
        {
            return vec;
        }
    }
    return 1;
}

// x: groups of kThreads * vec columns, y: table rows (1 for scatter), z: channel chunks.
dim3 gridFor(int64_t k, int vec, int64_t rows, int64_t c)
{
    int64_t const threads = (k + vec - 1) / vec;
    int64_t const chunks = (c + kChannelsPerBlock - 1) / kChannelsPerBlock;
    return dim3(static_cast<unsigned>((threads + kThreads - 1) / kThreads), static_cast<unsigned>(rows),
        static_cast<unsigned>(chunks));
}

template <typename T>
cudaError_t launchGather(T* out, T const* dense, T const* tokens, int32_t const* table, int64_t c, int64_t hw,
    int64_t kt, int64_t t, int64_t k, cudaStream_t stream)
{
    int const vec = chooseVectorWidth<T>(k, table, out);
    dim3 const grid = gridFor(k, vec, t, c);
    switch (vec)
    {
    case 4: maskedGatherKernel<T, 4><<<grid, kThreads, 0, stream>>>(out, dense, tokens, table, c, hw, kt, k); break;
    case 2: maskedGatherKernel<T, 2><<<grid, kThreads, 0, stream>>>(out, dense, tokens, table, c, hw, kt, k); break;
    default: maskedGatherKernel<T, 1><<<grid, kThreads, 0, stream>>>(out, dense, tokens, table, c, hw, kt, k); break;
    }
    return cudaGetLastError();
}

template <typename T, bool ACCUMULATE>
void launchScatterKernel(
    int vec, dim3 grid, T* out, T const* values, int32_t const* index, int64_t c, int64_t hw, int64_t k, cudaStream_t s)
{
    switch (vec)
    {
    case 4: maskedScatterKernel<T, 4, ACCUMULATE><<<grid, kThreads, 0, s>>>(out, values, index, c, hw, k); break;
    case 2: maskedScatterKernel<T, 2, ACCUMULATE><<<grid, kThreads, 0, s>>>(out, values, index, c, hw, k); break;
    default: maskedScatterKernel<T, 1, ACCUMULATE><<<grid, kThreads, 0, s>>>(out, values, index, c, hw, k); break;
    }
}

template <typename T>
cudaError_t launchScatter(T* out, T const* values, int32_t const* index, int64_t c, int64_t hw, int64_t k,
    bool accumulate, cudaStream_t stream)
{
    int const vec = chooseVectorWidth<T>(k, index, values);
    dim3 const grid = gridFor(k, vec, 1, c);
    if (accumulate)
    {
        launchScatterKernel<T, true>(vec, grid, out, values, index, c, hw, k, stream);
    }
    else
    {
        launchScatterKernel<T, false>(vec, grid, out, values, index, c, hw, k, stream);
    }
    return cudaGetLastError();
}

bool gridFits(int64_t rows, int64_t c)
{
    // blockIdx.y / blockIdx.z are limited to 65535.
    return rows <= 65535 && (c + kChannelsPerBlock - 1) / kChannelsPerBlock <= 65535;
}

} // namespace

extern "C" int m2ae_masked_gather(void* out, void const* dense, void const* tokens, int32_t const* table, int64_t n,
    int64_t c, int64_t hw, int64_t kt, int64_t t, int64_t k, int32_t dtype, cudaStream_t stream)
{
    if (n < 0 || c < 0 || hw < 0 || kt < 0 || t < 0 || k < 0 || !gridFits(t, c))
    {
        return cudaErrorInvalidValue;
    }
    if (k == 0 || c == 0 || t == 0)
    {
        return cudaSuccess;
    }
    switch (dtype)
    {
    case M2AE_FLOAT32:
        return launchGather(static_cast<float*>(out), static_cast<float const*>(dense),
            static_cast<float const*>(tokens), table, c, hw, kt, t, k, stream);
    case M2AE_FLOAT16:
        return launchGather(static_cast<__half*>(out), static_cast<__half const*>(dense),
            static_cast<__half const*>(tokens), table, c, hw, kt, t, k, stream);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" int m2ae_masked_scatter(void* out, void const* base, void const* values, int32_t const* index, int64_t n,
    int64_t c, int64_t hw, int64_t k, int32_t dtype, int32_t accumulate, cudaStream_t stream)
{
    if (n < 0 || c < 0 || hw < 0 || k < 0 || !gridFits(1, c) || (accumulate != 0 && accumulate != 1))
    {
        return cudaErrorInvalidValue;
    }
    size_t elementSize = 0;
    switch (dtype)
    {
    case M2AE_FLOAT32: elementSize = sizeof(float); break;
    case M2AE_FLOAT16: elementSize = sizeof(__half); break;
    default: return cudaErrorInvalidValue;
    }
    size_t const bytes = static_cast<size_t>(n * c * hw) * elementSize;
    if (out != base && bytes > 0)
    {
        cudaError_t const err = cudaMemcpyAsync(out, base, bytes, cudaMemcpyDeviceToDevice, stream);
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    if (k == 0 || c == 0)
    {
        return cudaSuccess;
    }
    if (dtype == M2AE_FLOAT32)
    {
        return launchScatter(static_cast<float*>(out), static_cast<float const*>(values), index, c, hw, k,
            accumulate != 0, stream);
    }
    return launchScatter(static_cast<__half*>(out), static_cast<__half const*>(values), index, c, hw, k,
        accumulate != 0, stream);
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
