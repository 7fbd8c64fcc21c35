"""The CUDA kernels' own code, run on the CPU, against the numpy reference, bit for bit.

trt_plugins/csrc/masked_ops_kernels.cuh holds what each GPU thread does and how a
call is planned (argument checks, vector width, grid). tests/csrc/
kernels_host_emulation.cu runs that same code for every (block, thread) of the grid
on the CPU, so without a GPU CI still checks the index arithmetic, the channel
chunking, the 4/2/1-wide vector paths and the fp16 accumulation against
trt_plugins/reference.py. What it cannot see (memory coalescing, races between
threads, the CUDA launch itself) is left to tests/test_cuda_kernels.py on a GPU.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import DTYPES, GATHER_CASES, SCATTER_CASES, assert_bit_equal, random_index, random_table

from m2ae.errors import UserError
from m2ae.trt_plugins.build import SOURCE_DIR, find_nvcc
from m2ae.trt_plugins.reference import masked_gather, masked_scatter

EMULATION_SOURCE = Path(__file__).parent / "csrc" / "kernels_host_emulation.cu"
CUDA_ERROR_INVALID_VALUE = 1
THREADS_PER_BLOCK = 256
CHANNELS_PER_BLOCK = 16
KERNEL_DTYPE = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


class RunRecord(ctypes.Structure):
    _fields_ = [("vec", ctypes.c_int32), ("grid_x", ctypes.c_int64), ("grid_y", ctypes.c_int64),
                ("grid_z", ctypes.c_int64)]


class EmulatedKernels:
    """ctypes front of the emulation library; arrays are host numpy arrays."""

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
        record = ctypes.POINTER(RunRecord)
        self.lib.m2ae_emulated_gather.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i32, record]
        self.lib.m2ae_emulated_scatter.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i32, i32, record]
        self.lib.m2ae_emulated_gather.restype = ctypes.c_int
        self.lib.m2ae_emulated_scatter.restype = ctypes.c_int

    def gather(self, out: np.ndarray, dense: np.ndarray, tokens: np.ndarray, table: np.ndarray,
               dtype_code: int | None = None, **shape_overrides: int) -> tuple[int, RunRecord]:
        n, c, h, w = dense.shape
        shape = {"n": n, "c": c, "hw": h * w, "kt": tokens.shape[1], "t": table.shape[0], "k": table.shape[1]}
        shape.update(shape_overrides)
        record = RunRecord()
        status = self.lib.m2ae_emulated_gather(
            out.ctypes.data, dense.ctypes.data, tokens.ctypes.data, table.ctypes.data, *shape.values(),
            KERNEL_DTYPE[dense.dtype] if dtype_code is None else dtype_code, ctypes.byref(record))
        return status, record

    def scatter(self, out: np.ndarray, base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int,
                **shape_overrides: int) -> tuple[int, RunRecord]:
        n, c, h, w = base.shape
        shape = {"n": n, "c": c, "hw": h * w, "k": index.shape[0]}
        shape.update(shape_overrides)
        record = RunRecord()
        status = self.lib.m2ae_emulated_scatter(
            out.ctypes.data, base.ctypes.data, values.ctypes.data, index.ctypes.data, *shape.values(),
            KERNEL_DTYPE[base.dtype], accumulate, ctypes.byref(record))
        return status, record


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> EmulatedKernels:
    try:
        nvcc = find_nvcc()
    except UserError as exc:
        pytest.skip(f"cannot compile the kernels' host emulation: {exc}")
    library = tmp_path_factory.mktemp("emulation") / "libm2ae_kernels_emulated.so"
    command = [str(nvcc), "-std=c++17", "-O2", "--shared", "-Xcompiler=-fPIC,-Wall,-Wextra,-Werror",
               f"-I{SOURCE_DIR / 'csrc'}", str(EMULATION_SOURCE), "-o", str(library)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, f"host emulation failed to compile:\n{result.stdout}"
    return EmulatedKernels(library)


def aligned_view(shape: tuple[int, ...], dtype: type, fill: float, offset: int = 0) -> np.ndarray:
    """A contiguous array starting `offset` elements past a 64-byte boundary."""
    count = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    storage = np.full(count + offset + 64 // itemsize, fill, dtype=dtype)
    start = (-storage.ctypes.data % 64) // itemsize + offset
    return storage[start:start + count].reshape(shape)


def expected_grid(k: int, vec: int, rows: int, c: int) -> tuple[int, int, int]:
    threads = -(-k // vec)
    return -(-threads // THREADS_PER_BLOCK), rows, -(-c // CHANNELS_PER_BLOCK)


def gather_inputs(rng: np.random.Generator, n: int, c: int, h: int, w: int, kt: int, t: int, k: int,
                  dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dense = rng.standard_normal((n, c, h, w)).astype(dtype)
    tokens = rng.standard_normal((c, kt)).astype(dtype)
    return dense, tokens, random_table(rng, t, k, kt, n * h * w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHER_CASES)
def test_gather_matches_reference(emulated, rng, case, dtype) -> None:
    n, c, h, w, kt, t, k = case
    dense, tokens, table = gather_inputs(rng, *case, dtype)
    out = aligned_view((t * c, k), dtype, np.nan)  # an element no thread writes stays NaN
    status, record = emulated.gather(out, dense, tokens, table)
    assert status == 0
    assert_bit_equal(out, masked_gather(dense, tokens, table))
    if k:
        assert (record.grid_x, record.grid_y, record.grid_z) == expected_grid(k, record.vec, t, c)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("accumulate", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCATTER_CASES)
def test_scatter_matches_reference(emulated, rng, case, dtype, accumulate, in_place) -> None:
    n, c, h, w, k = case
    base = rng.standard_normal((n, c, h, w)).astype(dtype)
    values = rng.standard_normal((c, k)).astype(dtype)
    index = random_index(rng, k, n * h * w, sort=not in_place)
    expected = masked_scatter(base, values, index, accumulate)
    original = base.copy()
    out = base if in_place else np.full(base.shape, np.nan, dtype=dtype)
    status, _ = emulated.scatter(out, base, values, index, accumulate)
    assert status == 0
    assert_bit_equal(out, expected)
    if not in_place:
        assert_bit_equal(base, original)


def test_fp16_accumulation_rounds_like_numpy(emulated) -> None:
    """Sums that round (ties, overflow to inf, subnormals) match numpy's float16 +=."""
    base_values = np.array([2048, 1, 65504, -65504, 6e-8, 0.1, -0.0, 1024], np.float16)
    added = np.array([1, 2048, 65504, -32, 6e-8, 0.2, 0.0, 0.5], np.float16)
    base = base_values.reshape(1, 1, 1, -1).copy()
    index = np.arange(base_values.size, dtype=np.int32)
    out = np.empty_like(base)
    status, _ = emulated.scatter(out, base, added.reshape(1, -1), index, accumulate=1)
    assert status == 0
    with np.errstate(over="ignore"):  # 65504 + 65504 overflows to inf on purpose
        expected = masked_scatter(base, added.reshape(1, -1), index, accumulate=1)
    assert_bit_equal(out, expected)
    assert np.isinf(out[0, 0, 0, 2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("k", "out_offset", "expected_vec"), [
    (64, 0, 4),
    (66, 0, 2),  # K even, not a multiple of 4
    (67, 0, 1),  # K odd
    (64, 1, 1),  # output one element off: no vector store is safe
])
def test_gather_vector_paths(emulated, rng, dtype, k, out_offset, expected_vec) -> None:
    n, c, h, w, kt, t = 2, 19, 7, 5, 23, 9
    dense, tokens, table = gather_inputs(rng, n, c, h, w, kt, t, k, dtype)
    out = aligned_view((t * c, k), dtype, np.nan, offset=out_offset)
    status, record = emulated.gather(out, dense, tokens, table)
    assert status == 0 and record.vec == expected_vec
    assert_bit_equal(out, masked_gather(dense, tokens, table))


def test_fp16_gather_two_wide_when_output_is_four_byte_aligned(emulated, rng) -> None:
    dense, tokens, table = gather_inputs(rng, 1, 5, 6, 6, 8, 9, 40, np.float16)
    out = aligned_view((45, 40), np.float16, np.nan, offset=2)  # 4-byte, not 8-byte, aligned
    status, record = emulated.gather(out, dense, tokens, table)
    assert status == 0 and record.vec == 2
    assert_bit_equal(out, masked_gather(dense, tokens, table))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("k", "values_offset", "expected_vec"), [(48, 0, 4), (50, 0, 2), (49, 0, 1), (48, 1, 1)])
def test_scatter_vector_paths(emulated, rng, dtype, k, values_offset, expected_vec) -> None:
    n, c, h, w = 2, 18, 6, 7
    base = rng.standard_normal((n, c, h, w)).astype(dtype)
    values = aligned_view((c, k), dtype, 0.0, offset=values_offset)
    values[...] = rng.standard_normal((c, k)).astype(dtype)
    index = random_index(rng, k, n * h * w, sort=False)
    out = np.full(base.shape, np.nan, dtype=dtype)
    status, record = emulated.scatter(out, base, values, index, accumulate=1)
    assert status == 0 and record.vec == expected_vec
    assert_bit_equal(out, masked_scatter(base, np.ascontiguousarray(values), index, accumulate=1))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       kt=st.integers(0, 50), t=st.sampled_from([1, 2, 9]), k=st.integers(0, 600), fp16=st.booleans(),
       out_offset=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_gather_random_shapes(emulated, n, c, h, w, kt, t, k, fp16, out_offset, seed) -> None:
    dtype = np.float16 if fp16 else np.float32
    dense, tokens, table = gather_inputs(np.random.default_rng(seed), n, c, h, w, kt, t, k, dtype)
    out = aligned_view((t * c, k), dtype, np.nan, offset=out_offset)
    status, _ = emulated.gather(out, dense, tokens, table)
    assert status == 0
    assert_bit_equal(out, masked_gather(dense, tokens, table))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       fraction=st.floats(0, 1), accumulate=st.sampled_from([0, 1]), fp16=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_scatter_random_shapes(emulated, n, c, h, w, fraction, accumulate, fp16, seed) -> None:
    dtype = np.float16 if fp16 else np.float32
    rng = np.random.default_rng(seed)
    k = round(fraction * n * h * w)
    base = rng.standard_normal((n, c, h, w)).astype(dtype)
    values = rng.standard_normal((c, k)).astype(dtype)
    index = random_index(rng, k, n * h * w, sort=bool(seed % 2))
    out = np.full(base.shape, np.nan, dtype=dtype)
    status, _ = emulated.scatter(out, base, values, index, accumulate)
    assert status == 0
    assert_bit_equal(out, masked_scatter(base, values, index, accumulate))


def test_nothing_to_do_launches_nothing(emulated, rng) -> None:
    dense, tokens, table = gather_inputs(rng, 1, 4, 3, 3, 2, 9, 5, np.float32)
    out = np.full((36, 5), np.nan, np.float32)
    for overrides in ({"k": 0}, {"t": 0}, {"c": 0}):
        status, record = emulated.gather(out, dense, tokens, table, **overrides)
        assert status == 0 and record.vec == 0, overrides
    assert np.isnan(out).all()

    base = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    scattered = np.full(base.shape, np.nan, np.float32)
    status, record = emulated.scatter(scattered, base, np.zeros((4, 0), np.float32), np.zeros(0, np.int32), 0)
    assert status == 0 and record.vec == 0
    assert_bit_equal(scattered, base)  # K = 0 still copies base into out


@pytest.mark.parametrize("overrides", [
    {"n": -1}, {"k": -3}, {"kt": -1},
    {"t": 65536},  # more table rows than blockIdx.y can index
    {"c": CHANNELS_PER_BLOCK * 65535 + 1},  # more channel chunks than blockIdx.z can index
    {"dtype_code": 7},
])
def test_gather_rejects_bad_arguments_before_touching_memory(emulated, rng, overrides) -> None:
    dense, tokens, table = gather_inputs(rng, 1, 4, 3, 3, 2, 9, 8, np.float32)
    out = np.full((36, 8), np.nan, np.float32)
    status, record = emulated.gather(out, dense, tokens, table, **overrides)
    assert status == CUDA_ERROR_INVALID_VALUE and record.vec == 0
    assert np.isnan(out).all()


@pytest.mark.parametrize(("accumulate", "overrides"), [(2, {}), (0, {"hw": -1}), (1, {"k": -1})])
def test_scatter_rejects_bad_arguments_before_touching_memory(emulated, rng, accumulate, overrides) -> None:
    base = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    out = np.full(base.shape, np.nan, np.float32)
    index = np.arange(4, dtype=np.int32)
    status, record = emulated.scatter(out, base, np.ones((4, 4), np.float32), index, accumulate, **overrides)
    assert status == CUDA_ERROR_INVALID_VALUE and record.vec == 0
    assert np.isnan(out).all()
