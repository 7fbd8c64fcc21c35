// Runs the CUDA kernels' per-thread code (trt_plugins/csrc/masked_ops_kernels.cuh) on
// the CPU: every (block, thread) of the grid the GPU launcher would use, in order.
// The ops write disjoint elements (each gather block its own window, scatter tile ids
// unique), so sequential order gives the GPU result. Built and driven by
// tests/test_kernels_host_emulation.py.
#include "masked_ops_kernels.cuh"

#include <cstring>

namespace
{

using m2ae::kernels::Grid;
using m2ae::kernels::ThreadCoord;

//! What a call did: kernel runs and base->out copies, and the grid of the last run, for
//! the tests to see that nothing ran where nothing had to and which grid covered a case.
struct RunRecord
{
    int32_t runs;
    int32_t copies;
    int64_t gridX;
    int64_t gridY;
    int64_t threads;
};

class HostExecutor
{
public:
    explicit HostExecutor(RunRecord* record)
        : mRecord(record)
    {
        *mRecord = RunRecord{0, 0, 0, 0, 0};
    }

    template <typename Op>
    void run(Grid grid, Op const& op)
    {
        mRecord->runs += 1;
        mRecord->gridX = grid.x;
        mRecord->gridY = grid.y;
        mRecord->threads = grid.threads;
        for (int64_t y = 0; y < grid.y; ++y)
        {
            for (int64_t x = 0; x < grid.x; ++x)
            {
                for (int64_t thread = 0; thread < grid.threads; ++thread)
                {
                    op(ThreadCoord{x, y, thread, grid.threads});
                }
            }
        }
    }

    int copy(void* dst, void const* src, size_t bytes)
    {
        mRecord->copies += 1;
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

extern "C" M2AE_EXPORT int m2ae_emulated_gather(void* out, void const* dense, int32_t const* tiles, int64_t n,
    int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t halo, int32_t dtype, RunRecord* record)
{
    HostExecutor exec(record);
    return m2ae::kernels::maskedGather(exec, out, dense, tiles, n, c, h, w, b, tile, halo, dtype);
}

extern "C" M2AE_EXPORT int m2ae_emulated_scatter(void* out, void const* base, void const* values,
    int32_t const* tiles, int64_t n, int64_t c, int64_t h, int64_t w, int64_t b, int32_t tile, int32_t dtype,
    RunRecord* record)
{
    HostExecutor exec(record);
    return m2ae::kernels::maskedScatter(exec, out, base, values, tiles, n, c, h, w, b, tile, dtype);
}
