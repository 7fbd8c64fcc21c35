// CUDA launchers of MaskedGather and MaskedScatter (DESIGN.md section 3), free of
// TensorRT types so the kernels build, load and test without TensorRT.
//
// Indices are trusted: the kernels do no range checks. In the graph they come from
// NonZero and the inverse index maps built from the same mask, so the builder has
// proved them in range; host paths (trt_plugins/reference.py) validate instead.
//
// Every launcher returns a cudaError_t as int (0 = success) and launches nothing when
// there is nothing to do (K == 0, C == 0 or T == 0).
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

//! out[t*C + c, k] = tokens[c, v] (v >= 0), dense pixel -2 - v of channel c (v <= -2),
//! 0 (v == -1), where v = table[t, k].
//! dense [N,C,H,W] with hw = H*W, tokens [C,Kt], table [T,K], out [T*C,K]; all contiguous.
M2AE_EXPORT int m2ae_masked_gather(void* out, void const* dense, void const* tokens, int32_t const* table,
    int64_t n, int64_t c, int64_t hw, int64_t kt, int64_t t, int64_t k, int32_t dtype, cudaStream_t stream);

//! out = base, then out at linear pixel index[k] = values[:, k] (accumulate 0) or
//! += values[:, k] (accumulate 1). Indices must be unique. base [N,C,H,W], values [C,K],
//! index [K]. The copy base -> out is skipped when out == base (in place).
M2AE_EXPORT int m2ae_masked_scatter(void* out, void const* base, void const* values, int32_t const* index,
    int64_t n, int64_t c, int64_t hw, int64_t k, int32_t dtype, int32_t accumulate, cudaStream_t stream);

//! cudaGetErrorString of a launcher's return value, for callers without the CUDA runtime.
M2AE_EXPORT char const* m2ae_cuda_error_string(int status);

//! JSON object describing this build: {"cuda_runtime": 13000, "cuda_archs": "87,90"}.
M2AE_EXPORT char const* m2ae_kernels_build_info(void);

#ifdef __cplusplus
}
#endif
