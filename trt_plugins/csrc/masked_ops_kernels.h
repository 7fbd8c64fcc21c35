// CUDA launchers of MaskedGather and MaskedScatter (trt_plugins/reference.py defines
// both), free of TensorRT types so the kernels build, load and test without TensorRT.
//
// Both ops work on the tile x tile cells of a dense NCHW map: rows = ceil(H / tile),
// cols = ceil(W / tile), and tile id v = n*rows*cols + ty*cols + tx names cell (ty, tx)
// of image n. Tile ids are trusted: the kernels do no range checks. The graph derives
// them from a tile mask over the same map, so they are in range and unique; host paths
// (trt_plugins/reference.py) validate instead.
//
// Every launcher returns a cudaError_t as int (0 = success), refuses bad arguments
// (negative sizes, tile < 1, halo < 0, unknown dtype, a grid or window too large) with
// cudaErrorInvalidValue before touching memory, and launches no kernel when there is
// nothing to do (B == 0, or a map without pixels; the scatter's copy still runs).
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#if defined(_WIN32)
#define M2AE_EXPORT __declspec(dllexport)
#else
#define M2AE_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

//! Element type of the float tensors; indices are always int32.
enum M2aeDtype
{
    M2AE_FLOAT32 = 0,
    M2AE_FLOAT16 = 1
};

//! out [B,C,S,S], S = tile + 2*halo, from dense [N,C,H,W] and tiles [B]; 0 outside the image.
M2AE_EXPORT int m2ae_masked_gather(void* out, void const* dense, int32_t const* tiles,
    int64_t n, int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t halo, int32_t dtype, cudaStream_t stream);

//! out = base with each tile's in-image pixels replaced by values [B,C,tile,tile];
//! the base->out copy is skipped when out == base.
M2AE_EXPORT int m2ae_masked_scatter(void* out, void const* base, void const* values, int32_t const* tiles,
    int64_t n, int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t dtype, cudaStream_t stream);

//! cudaGetErrorString of a launcher's return value, for callers without the CUDA runtime.
M2AE_EXPORT char const* m2ae_cuda_error_string(int status);

//! JSON object describing this build: {"cuda_runtime": 13000, "cuda_archs": "87,90"}.
M2AE_EXPORT char const* m2ae_kernels_build_info(void);

#ifdef __cplusplus
}
#endif
