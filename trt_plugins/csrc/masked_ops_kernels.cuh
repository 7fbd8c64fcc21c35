// What one thread of MaskedGather / MaskedScatter does, and how a call is planned
// (argument checks, grid), written once for two executors: the CUDA launchers in
// masked_ops_kernels.cu run it on the GPU, and the tests run the very same code on the
// CPU (tests/csrc/kernels_host_emulation.cu), so CI checks the tile decoding, the
// border handling and the channel chunking against the reference without a GPU.
//
// Layout: a block owns one tile (blockIdx.x = b) and a chunk of channels (blockIdx.y).
// Its threads walk the tile's window row-major, one pixel each per step, so consecutive
// threads touch consecutive x: the dense rows and the [B,C,S,S] / [B,C,tile,tile] rows
// are read and written coalesced. A thread decodes the tile id and its pixel once and
// reuses them for every channel of the chunk. Elements move one at a time: a window
// starts at x = tx*tile - halo, so in general no vector width is aligned, and a plain
// copy keeps float32 and float16 bit-exact.
#pragma once

#include "masked_ops_kernels.h"

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define M2AE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define M2AE_HOST_DEVICE inline
#endif

// Unrolling hint for the device pass only; the host compiler does not know it.
#if defined(__CUDA_ARCH__)
#define M2AE_UNROLL_BY_4 _Pragma("unroll 4")
#else
#define M2AE_UNROLL_BY_4
#endif

namespace m2ae
{
namespace kernels
{

//! Most threads per block; small windows get fewer (whole warps), not idle threads.
constexpr int64_t kThreads = 256;
constexpr int64_t kWarp = 32;
// Channels per block: enough to amortise the tile and pixel decode, few enough that a
// handful of tiles still spreads over many blocks.
constexpr int64_t kChannelsPerBlock = 16;
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridY = 65535;
// Pixels inside a window are divided in 32 bits, far cheaper than 64 on the device.
constexpr int64_t kMaxWindowPixels = 2147483647;

//! blockIdx.{x,y}, threadIdx.x and blockDim.x of the thread being run.
struct ThreadCoord
{
    int64_t blockX;
    int64_t blockY;
    int64_t thread;
    int64_t blockThreads;
};

//! Blocks per grid dimension and threads per block.
struct Grid
{
    int64_t x;
    int64_t y;
    int64_t threads;
};

//! One element of an input the kernel never writes (dense, values, tiles), through the
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

M2AE_HOST_DEVICE int64_t minIndex(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

M2AE_HOST_DEVICE int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

//! Image and top-left pixel of a tile's cell.
struct TileOrigin
{
    int64_t image;
    int64_t y0;
    int64_t x0;
};

//! The grid of tile x tile cells over every image of the map.
struct TileGrid
{
    int64_t cells; // rows * cols, per image
    int64_t cols;
    int64_t tile;

    static TileGrid over(int64_t h, int64_t w, int64_t tile)
    {
        int64_t const cols = ceilDiv(w, tile);
        return TileGrid{ceilDiv(h, tile) * cols, cols, tile};
    }

    M2AE_HOST_DEVICE TileOrigin origin(int32_t id) const
    {
        int64_t const image = id / cells;
        int64_t const cell = id - image * cells;
        int64_t const ty = cell / cols;
        return TileOrigin{image, ty * tile, (cell - ty * cols) * tile};
    }
};

//! Channels [c0, c0 + count) of the block's chunk.
struct ChannelChunk
{
    int64_t c0;
    int count;

    M2AE_HOST_DEVICE static ChannelChunk of(ThreadCoord const& id, int64_t c)
    {
        int64_t const c0 = id.blockY * kChannelsPerBlock;
        return ChannelChunk{c0, static_cast<int>(minIndex(c0 + kChannelsPerBlock, c) - c0)};
    }
};

//! out[b, c, i, j] for the window pixels and the channel chunk of one thread.
template <typename T>
struct GatherThread
{
    T* out;
    T const* dense;
    int32_t const* tiles;
    int64_t c;
    int64_t h;
    int64_t w;
    TileGrid grid;
    int64_t halo;
    uint32_t size; // S = tile + 2 * halo
    int64_t pixels; // S * S

    M2AE_HOST_DEVICE void operator()(ThreadCoord const& id) const
    {
        ChannelChunk const chunk = ChannelChunk::of(id, c);
        TileOrigin const origin = grid.origin(loadReadOnly(tiles + id.blockX));
        int64_t const hw = h * w;
        T const* image = dense + (origin.image * c + chunk.c0) * hw;
        T* window = out + (id.blockX * c + chunk.c0) * pixels;
        for (int64_t q = id.thread; q < pixels; q += id.blockThreads)
        {
            uint32_t const i = static_cast<uint32_t>(q) / size;
            uint32_t const j = static_cast<uint32_t>(q) - i * size;
            int64_t const y = origin.y0 - halo + i;
            int64_t const x = origin.x0 - halo + j;
            T* dst = window + q;
            if (y >= 0 && y < h && x >= 0 && x < w)
            {
                T const* src = image + y * w + x;
                M2AE_UNROLL_BY_4
                for (int ch = 0; ch < chunk.count; ++ch)
                {
                    dst[ch * pixels] = loadReadOnly(src + ch * hw);
                }
            }
            else
            {
                M2AE_UNROLL_BY_4
                for (int ch = 0; ch < chunk.count; ++ch)
                {
                    dst[ch * pixels] = zeroValue<T>();
                }
            }
        }
    }
};

//! Writes values[b, c, i, j] over the in-image pixels of one thread's share of tile b.
template <typename T>
struct ScatterThread
{
    T* out;
    T const* values;
    int32_t const* tiles;
    int64_t c;
    int64_t h;
    int64_t w;
    TileGrid grid;
    int64_t pixels; // tile * tile

    M2AE_HOST_DEVICE void operator()(ThreadCoord const& id) const
    {
        ChannelChunk const chunk = ChannelChunk::of(id, c);
        TileOrigin const origin = grid.origin(loadReadOnly(tiles + id.blockX));
        int64_t const hw = h * w;
        uint32_t const side = static_cast<uint32_t>(grid.tile);
        T* image = out + (origin.image * c + chunk.c0) * hw;
        T const* cell = values + (id.blockX * c + chunk.c0) * pixels;
        for (int64_t q = id.thread; q < pixels; q += id.blockThreads)
        {
            uint32_t const i = static_cast<uint32_t>(q) / side;
            uint32_t const j = static_cast<uint32_t>(q) - i * side;
            int64_t const y = origin.y0 + i;
            int64_t const x = origin.x0 + j;
            // Partial tiles at the right and bottom edges: their rest lies off the image.
            if (y < h && x < w)
            {
                T* dst = image + y * w + x;
                T const* src = cell + q;
                M2AE_UNROLL_BY_4
                for (int ch = 0; ch < chunk.count; ++ch)
                {
                    dst[ch * hw] = loadReadOnly(src + ch * pixels);
                }
            }
        }
    }
};

//! x: one block per tile, y: channel chunks; threads: the window's pixels in whole
//! warps, at most kThreads (larger windows loop).
inline Grid gridFor(int64_t b, int64_t c, int64_t pixels)
{
    return Grid{b, ceilDiv(c, kChannelsPerBlock), minIndex(ceilDiv(pixels, kWarp) * kWarp, kThreads)};
}

inline bool mapValid(int64_t n, int64_t c, int64_t h, int64_t w, int64_t b)
{
    return n >= 0 && c >= 0 && h >= 0 && w >= 0 && b >= 0 && b <= kMaxGridX
        && ceilDiv(c, kChannelsPerBlock) <= kMaxGridY;
}

inline bool dtypeValid(int32_t dtype)
{
    return dtype == M2AE_FLOAT32 || dtype == M2AE_FLOAT16;
}

//! A map with no pixel has no tile that a valid id could name.
inline bool mapEmpty(int64_t n, int64_t c, int64_t h, int64_t w)
{
    return n == 0 || c == 0 || h == 0 || w == 0;
}

// An Executor runs ops and moves memory:
//   template <typename Op> void run(Grid grid, Op const& op);  every (block, thread) once
//   int copy(void* dst, void const* src, size_t bytes);          0 on success
//   int finish();                                                launch status, 0 = success

template <typename T, typename Executor>
int gatherTyped(Executor& exec, void* out, void const* dense, int32_t const* tiles, int64_t c, int64_t h, int64_t w,
    int64_t b, int64_t tile, int64_t halo)
{
    int64_t const size = tile + 2 * halo;
    GatherThread<T> const op{static_cast<T*>(out), static_cast<T const*>(dense), tiles, c, h, w,
        TileGrid::over(h, w, tile), halo, static_cast<uint32_t>(size), size * size};
    exec.run(gridFor(b, c, op.pixels), op);
    return exec.finish();
}

template <typename T, typename Executor>
int scatterTyped(Executor& exec, void* out, void const* values, int32_t const* tiles, int64_t c, int64_t h,
    int64_t w, int64_t b, int64_t tile)
{
    ScatterThread<T> const op{static_cast<T*>(out), static_cast<T const*>(values), tiles, c, h, w,
        TileGrid::over(h, w, tile), tile * tile};
    exec.run(gridFor(b, c, op.pixels), op);
    return exec.finish();
}

//! m2ae_masked_gather's contract (masked_ops_kernels.h) on any executor.
template <typename Executor>
int maskedGather(Executor& exec, void* out, void const* dense, int32_t const* tiles, int64_t n, int64_t c, int64_t h,
    int64_t w, int64_t b, int32_t tile, int32_t halo, int32_t dtype)
{
    if (!mapValid(n, c, h, w, b) || tile < 1 || halo < 0 || !dtypeValid(dtype))
    {
        return cudaErrorInvalidValue;
    }
    int64_t const size = int64_t{tile} + 2 * int64_t{halo};
    if (size * size > kMaxWindowPixels)
    {
        return cudaErrorInvalidValue;
    }
    if (b == 0 || mapEmpty(n, c, h, w))
    {
        return cudaSuccess;
    }
    if (dtype == M2AE_FLOAT32)
    {
        return gatherTyped<float>(exec, out, dense, tiles, c, h, w, b, tile, halo);
    }
    return gatherTyped<__half>(exec, out, dense, tiles, c, h, w, b, tile, halo);
}

//! m2ae_masked_scatter's contract (masked_ops_kernels.h) on any executor.
template <typename Executor>
int maskedScatter(Executor& exec, void* out, void const* base, void const* values, int32_t const* tiles, int64_t n,
    int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t dtype)
{
    if (!mapValid(n, c, h, w, b) || tile < 1 || !dtypeValid(dtype)
        || int64_t{tile} * int64_t{tile} > kMaxWindowPixels)
    {
        return cudaErrorInvalidValue;
    }
    if (out != base && !mapEmpty(n, c, h, w))
    {
        size_t const elementSize = dtype == M2AE_FLOAT32 ? sizeof(float) : sizeof(__half);
        int const status = exec.copy(out, base, static_cast<size_t>(n * c * h * w) * elementSize);
        if (status != 0)
        {
            return status;
        }
    }
    if (b == 0 || mapEmpty(n, c, h, w))
    {
        return cudaSuccess;
    }
    if (dtype == M2AE_FLOAT32)
    {
        return scatterTyped<float>(exec, out, values, tiles, c, h, w, b, tile);
    }
    return scatterTyped<__half>(exec, out, values, tiles, c, h, w, b, tile);
}

} // namespace kernels
} // namespace m2ae
