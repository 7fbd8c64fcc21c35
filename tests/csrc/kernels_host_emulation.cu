// Runs the CUDA kernels' per-thread code (trt_plugins/csrc/masked_ops_kernels.cuh) on
// the CPU: every (block, thread) of the grid the GPU launcher would use, in order.
// The ops write disjoint elements (unique indices), so sequential order gives the GPU
// result. Built and driven by tests/test_kernels_host_emulation.py.
#include "masked_ops_kernels.cuh"

#include <cstring>

namespace
{

using m2ae::kernels::Grid;
using m2ae::kernels::kThreads;
using m2ae::kernels::ThreadCoord;

//! What the last call ran: the vector width picked and the grid, for the tests to see
//! which path they covered.
struct RunRecord
{
    int32_t vec;
    int64_t gridX;
    int64_t gridY;
    int64_t gridZ;
};

class HostExecutor
{
public:
    explicit HostExecutor(RunRecord* record)
        : mRecord(record)
    {
        *mRecord = RunRecord{0, 0, 0, 0};
    }

    template <typename Op>
    void run(Grid grid, Op const& op)
    {
        *mRecord = RunRecord{Op::kVec, grid.x, grid.y, grid.z};
        for (int64_t z = 0; z < grid.z; ++z)
        {
            for (int64_t y = 0; y < grid.y; ++y)
            {
                for (int64_t x = 0; x < grid.x; ++x)
                {
                    for (int64_t thread = 0; thread < kThreads; ++thread)
                    {
                        op(ThreadCoord{x, y, z, thread});
                    }
                }
            }
        }
    }

    int copy(void* dst, void const* src, size_t bytes)
    {
        std::memcpy(dst, src, bytes);
        return 0;
    }

    int finish()
    {
        return 0;
    }

private:
    RunRecord* mRecord;
};

} // namespace

extern "C" M2AE_EXPORT int m2ae_emulated_gather(void* out, void const* dense, void const* tokens,
    int32_t const* table, int64_t n, int64_t c, int64_t hw, int64_t kt, int64_t t, int64_t k, int32_t dtype,
    RunRecord* record)
{
    HostExecutor exec(record);
    return m2ae::kernels::maskedGather(exec, out, dense, tokens, table, n, c, hw, kt, t, k, dtype);
}

extern "C" M2AE_EXPORT int m2ae_emulated_scatter(void* out, void const* base, void const* values,
    int32_t const* index, int64_t n, int64_t c, int64_t hw, int64_t k, int32_t dtype, int32_t accumulate,
    RunRecord* record)
{
    HostExecutor exec(record);
    return m2ae::kernels::maskedScatter(exec, out, base, values, index, n, c, hw, k, dtype, accumulate);
}
