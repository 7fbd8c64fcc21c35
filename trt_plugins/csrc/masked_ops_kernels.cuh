// What one thread of MaskedGather / MaskedScatter does, and how a call is planned
// (vector width, grid, argument checks), written once for two executors: the CUDA
// launchers in masked_ops_kernels.cu run it on the GPU, and the tests run the very
// same code on the CPU (tests/csrc/kernels_host_emulation.cu), so CI checks the
// index arithmetic and every vector path against the reference without a GPU.
//
// Layout: one thread owns VEC consecutive columns k of one table row t (gather) or of
// the index (scatter) and walks a chunk of channels. Index loads, token/value reads and
// the writes of out[t*C + c, k] are then coalesced along k, and a decoded index is
// reused for every channel of the chunk. Dense pixels sit at n*C*HW + c*HW + hw, so
// those reads (gather) and writes (scatter) are the unavoidable strided part.
#pragma once

#include "masked_ops_kernels.h"

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define M2AE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define M2AE_HOST_DEVICE inline
#endif

// Unrolling hints for the device pass only; the host compiler does not know them.
#if defined(__CUDA_ARCH__)
#define M2AE_UNROLL _Pragma("unroll")
#define M2AE_UNROLL_BY_4 _Pragma("unroll 4")
#else
#define M2AE_UNROLL
#define M2AE_UNROLL_BY_4
#endif

namespace m2ae
{
namespace kernels
{

constexpr int kThreads = 256;
// Channels per block: enough to amortise the index decode, few enough that small K
// still spreads over many blocks.
constexpr int64_t kChannelsPerBlock = 16;
// blockIdx.y and blockIdx.z are limited to 65535.
constexpr int64_t kMaxGridYZ = 65535;

//! blockIdx.{x,y,z} and threadIdx.x of the thread being run.
struct ThreadCoord
{
    int64_t blockX;
    int64_t blockY;
    int64_t blockZ;
    int64_t thread;
};

//! Blocks per grid dimension; every block has kThreads threads.
struct Grid
{
    int64_t x;
    int64_t y;
    int64_t z;
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack
{
    T v[VEC];
};

//! The unsigned word as wide as a Pack: what one vector load or store moves.
template <int BYTES>
struct Word;

template <>
struct Word<2>
{
    using type = unsigned short;
};

template <>
struct Word<4>
{
    using type = unsigned int;
};

template <>
struct Word<8>
{
    using type = uint2;
};

template <>
struct Word<16>
{
    using type = uint4;
};

// Through one word of the pack's width, with explicit vector load/store instructions
// on the device: left to itself nvcc splits an unrolled Pack store into one store per
// element (it cannot prove dst + ch * k aligned), which loses the wide coalesced
// accesses. Loads take the read-only path: what loadPack reads is never written by
// the same kernel.
template <typename T, int VEC>
M2AE_HOST_DEVICE Pack<T, VEC> loadPack(T const* src)
{
    using W = typename Word<sizeof(Pack<T, VEC>)>::type;
#if defined(__CUDA_ARCH__)
    W const word = __ldg(reinterpret_cast<W const*>(src));
#else
    W const word = *reinterpret_cast<W const*>(src);
#endif
    Pack<T, VEC> pack;
    memcpy(&pack, &word, sizeof(pack));
    return pack;
}

template <typename T, int VEC>
M2AE_HOST_DEVICE void storePack(T* dst, Pack<T, VEC> const& pack)
{
    using W = typename Word<sizeof(Pack<T, VEC>)>::type;
    W word;
    memcpy(&word, &pack, sizeof(word));
#if defined(__CUDA_ARCH__)
    __stwb(reinterpret_cast<W*>(dst), word);
#else
    *reinterpret_cast<W*>(dst) = word;
#endif
}

//! One element of an input the kernel never writes (tokens, dense), through the
//! read-only data cache on the device.
template <typename T>
M2AE_HOST_DEVICE T loadReadOnly(T const* src)
{
#if defined(__CUDA_ARCH__)
    return __ldg(src);
#else
    return *src;
#endif
}

template <typename T>
M2AE_HOST_DEVICE T zeroValue();

template <>
M2AE_HOST_DEVICE float zeroValue<float>()
{
    return 0.0f;
}

template <>
M2AE_HOST_DEVICE __half zeroValue<__half>()
{
    return __ushort_as_half(0);
}

// Single IEEE round-to-nearest additions: bit-identical to numpy's float32/float16 +=.
// (fp16 on the host adds in fp32 and rounds once more; fp32's 24-bit significand makes
// that double rounding exact for a sum of two fp16 values.)
M2AE_HOST_DEVICE float addValues(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

M2AE_HOST_DEVICE __half addValues(__half a, __half b)
{
    return __hadd(a, b);
}

M2AE_HOST_DEVICE int64_t minIndex(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

//! Offset of channel 0 of linear pixel p = n*HW + h*W + w in an NCHW map.
M2AE_HOST_DEVICE int64_t pixelOffset(int64_t p, int64_t c, int64_t hw)
{
    int64_t const n = p / hw;
    return n * c * hw + (p - n * hw);
}

//! The share of one thread: VEC columns from k0, table row t (gather), and a chunk of
//! `channels` channels from c0. Threads past the last column are not `active`.
struct ThreadColumns
{
    bool active;
    int64_t k0;
    int64_t t;
    int64_t c0;
    int64_t channels;

    M2AE_HOST_DEVICE static ThreadColumns of(ThreadCoord const& id, int vec, int64_t k, int64_t c)
    {
        int64_t const k0 = (id.blockX * kThreads + id.thread) * vec;
        int64_t const c0 = id.blockZ * kChannelsPerBlock;
        return ThreadColumns{k0 < k, k0, id.blockY, c0, minIndex(c0 + kChannelsPerBlock, c) - c0};
    }
};

//! out[t*C + c, k] for the VEC columns and the channel chunk of one thread.
template <typename T, int VEC>
struct GatherThread
{
    static constexpr int kVec = VEC;

    T* out;
    T const* dense;
    T const* tokens;
    int32_t const* table;
    int64_t c;
    int64_t hw;
    int64_t kt;
    int64_t k;

    M2AE_HOST_DEVICE void operator()(ThreadCoord const& id) const
    {
        ThreadColumns const cols = ThreadColumns::of(id, VEC, k, c);
        if (!cols.active)
        {
            return;
        }
        Pack<int32_t, VEC> const v = loadPack<int32_t, VEC>(table + cols.t * k + cols.k0);
        T const* src[VEC];
        int64_t stride[VEC];
        M2AE_UNROLL
        for (int j = 0; j < VEC; ++j)
        {
            int32_t const vj = v.v[j];
            if (vj >= 0)
            {
                src[j] = tokens + vj + cols.c0 * kt;
                stride[j] = kt;
            }
            else if (vj == -1)
            {
                src[j] = nullptr;
                stride[j] = 0;
            }
            else
            {
                src[j] = dense + pixelOffset(-2 - static_cast<int64_t>(vj), c, hw) + cols.c0 * hw;
                stride[j] = hw;
            }
        }

        T* dst = out + (cols.t * c + cols.c0) * k + cols.k0;
        M2AE_UNROLL_BY_4
        for (int64_t ch = 0; ch < cols.channels; ++ch)
        {
            Pack<T, VEC> o;
            M2AE_UNROLL
            for (int j = 0; j < VEC; ++j)
            {
                o.v[j] = src[j] != nullptr ? loadReadOnly(src[j] + ch * stride[j]) : zeroValue<T>();
            }
            storePack(dst + ch * k, o);
        }
    }
};

//! Writes (or adds) values[c, k] at the dense pixels of the VEC columns of one thread.
template <typename T, int VEC, bool ACCUMULATE>
struct ScatterThread
{
    static constexpr int kVec = VEC;

    T* out;
    T const* values;
    int32_t const* index;
    int64_t c;
    int64_t hw;
    int64_t k;

    M2AE_HOST_DEVICE void operator()(ThreadCoord const& id) const
    {
        ThreadColumns const cols = ThreadColumns::of(id, VEC, k, c);
        if (!cols.active)
        {
            return;
        }

        Pack<int32_t, VEC> const p = loadPack<int32_t, VEC>(index + cols.k0);
        T* dst[VEC];
        M2AE_UNROLL
        for (int j = 0; j < VEC; ++j)
        {
            dst[j] = out + pixelOffset(p.v[j], c, hw) + cols.c0 * hw;
        }

        T const* src = values + cols.c0 * k + cols.k0;
        M2AE_UNROLL_BY_4
        for (int64_t ch = 0; ch < cols.channels; ++ch)
        {
            Pack<T, VEC> const val = loadPack<T, VEC>(src + ch * k);
            M2AE_UNROLL
            for (int j = 0; j < VEC; ++j)
            {
                T* d = dst[j] + ch * hw;
                *d = ACCUMULATE ? addValues(*d, val.v[j]) : val.v[j];
            }
        }
    }
};

inline bool isAligned(void const* ptr, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

//! Widest vector along k that divides K and that the index pointer and the
//! vector-accessed float pointer both allow.
template <typename T>
int chooseVectorWidth(int64_t k, int32_t const* indices, void const* floats)
{
    for (int vec : {4, 2})
    {
        if (k % vec == 0 && isAligned(indices, vec * sizeof(int32_t)) && isAligned(floats, vec * sizeof(T)))
        {
            return vec;
        }
    }
    return 1;
}

//! x: groups of kThreads * vec columns, y: table rows (1 for scatter), z: channel chunks.
inline Grid gridFor(int64_t k, int vec, int64_t rows, int64_t c)
{
    int64_t const threads = (k + vec - 1) / vec;
    return Grid{(threads + kThreads - 1) / kThreads, rows, (c + kChannelsPerBlock - 1) / kChannelsPerBlock};
}

inline bool gridFits(int64_t rows, int64_t c)
{
    return rows <= kMaxGridYZ && (c + kChannelsPerBlock - 1) / kChannelsPerBlock <= kMaxGridYZ;
}

// An Executor runs ops and moves memory:
//   template <typename Op> void run(Grid grid, Op const& op);  every (block, thread) once
//   int copy(void* dst, void const* src, size_t bytes);          0 on success
//   int finish();                                                launch status, 0 = success

template <typename T, typename Executor>
int gatherTyped(Executor& exec, T* out, T const* dense, T const* tokens, int32_t const* table, int64_t c,
    int64_t hw, int64_t kt, int64_t t, int64_t k)
{
    int const vec = chooseVectorWidth<T>(k, table, out);
    Grid const grid = gridFor(k, vec, t, c);
    switch (vec)
    {
    case 4: exec.run(grid, GatherThread<T, 4>{out, dense, tokens, table, c, hw, kt, k}); break;
    case 2: exec.run(grid, GatherThread<T, 2>{out, dense, tokens, table, c, hw, kt, k}); break;
    default: exec.run(grid, GatherThread<T, 1>{out, dense, tokens, table, c, hw, kt, k}); break;
    }
    return exec.finish();
}

template <typename T, bool ACCUMULATE, typename Executor>
int scatterTyped(Executor& exec, T* out, T const* values, int32_t const* index, int64_t c, int64_t hw, int64_t k)
{
    int const vec = chooseVectorWidth<T>(k, index, values);
    Grid const grid = gridFor(k, vec, 1, c);
    switch (vec)
    {
    case 4: exec.run(grid, ScatterThread<T, 4, ACCUMULATE>{out, values, index, c, hw, k}); break;
    case 2: exec.run(grid, ScatterThread<T, 2, ACCUMULATE>{out, values, index, c, hw, k}); break;
    default: exec.run(grid, ScatterThread<T, 1, ACCUMULATE>{out, values, index, c, hw, k}); break;
    }
    return exec.finish();
}

//! m2ae_masked_gather's contract (masked_ops_kernels.h) on any executor.
template <typename Executor>
int maskedGather(Executor& exec, void* out, void const* dense, void const* tokens, int32_t const* table, int64_t n,
    int64_t c, int64_t hw, int64_t kt, int64_t t, int64_t k, int32_t dtype)
{
    if (n < 0 || c < 0 || hw < 0 || kt < 0 || t < 0 || k < 0 || !gridFits(t, c))
    {
        return cudaErrorInvalidValue;
    }
    if (dtype != M2AE_FLOAT32 && dtype != M2AE_FLOAT16)
    {
        return cudaErrorInvalidValue;
    }
    if (k == 0 || c == 0 || t == 0)
    {
        return cudaSuccess;
    }
    if (dtype == M2AE_FLOAT32)
    {
        return gatherTyped(exec, static_cast<float*>(out), static_cast<float const*>(dense),
            static_cast<float const*>(tokens), table, c, hw, kt, t, k);
    }
    return gatherTyped(exec, static_cast<__half*>(out), static_cast<__half const*>(dense),
        static_cast<__half const*>(tokens), table, c, hw, kt, t, k);
}

template <typename T, typename Executor>
int scatterDispatch(Executor& exec, void* out, void const* values, int32_t const* index, int64_t c, int64_t hw,
    int64_t k, bool accumulate)
{
    if (accumulate)
    {
        return scatterTyped<T, true>(exec, static_cast<T*>(out), static_cast<T const*>(values), index, c, hw, k);
    }
    return scatterTyped<T, false>(exec, static_cast<T*>(out), static_cast<T const*>(values), index, c, hw, k);
}

//! m2ae_masked_scatter's contract (masked_ops_kernels.h) on any executor.
template <typename Executor>
int maskedScatter(Executor& exec, void* out, void const* base, void const* values, int32_t const* index, int64_t n,
    int64_t c, int64_t hw, int64_t k, int32_t dtype, int32_t accumulate)
{
    if (n < 0 || c < 0 || hw < 0 || k < 0 || !gridFits(1, c) || (accumulate != 0 && accumulate != 1))
    {
        return cudaErrorInvalidValue;
    }
    if (dtype != M2AE_FLOAT32 && dtype != M2AE_FLOAT16)
    {
        return cudaErrorInvalidValue;
    }
    size_t const elementSize = dtype == M2AE_FLOAT32 ? sizeof(float) : sizeof(__half);
    size_t const bytes = static_cast<size_t>(n * c * hw) * elementSize;
    if (out != base && bytes > 0)
    {
        int const status = exec.copy(out, base, bytes);
        if (status != 0)
        {
            return status;
        }
    }
    if (k == 0 || c == 0)
    {
        return cudaSuccess;
    }
    if (dtype == M2AE_FLOAT32)
    {
        return scatterDispatch<float>(exec, out, values, index, c, hw, k, accumulate != 0);
    }
    return scatterDispatch<__half>(exec, out, values, index, c, hw, k, accumulate != 0);
}

} // namespace kernels
} // namespace m2ae
