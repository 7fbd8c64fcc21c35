"""The CUDA kernels' own code, run on the CPU, against the numpy reference, bit for bit.

trt_plugins/csrc/masked_ops_kernels.cuh holds what each GPU thread does and how a
call is planned (argument checks, grid, threads per block). tests/csrc/
kernels_host_emulation.cu runs that same code for every (block, thread) of the grid
on the CPU, so without a GPU CI still checks the tile decoding, the halo and image
borders, partial edge tiles and the channel chunking against trt_plugins/reference.py.
What it cannot see (memory coalescing, races between threads, the CUDA launch itself)
is left to tests/test_cuda_kernels.py on a GPU.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import DTYPES, GATHER_CASES, SCATTER_CASES, assert_bit_equal, gather_inputs, scatter_inputs

from m2ae.errors import UserError
from m2ae.trt_plugins.build import SOURCE_DIR, find_nvcc
from m2ae.trt_plugins.contract import tile_count
from m2ae.trt_plugins.reference import masked_gather, masked_scatter

EMULATION_SOURCE = Path(__file__).parent / "csrc" / "kernels_host_emulation.cu"
CUDA_ERROR_INVALID_VALUE = 1
MAX_THREADS_PER_BLOCK = 256
WARP = 32
CHANNELS_PER_BLOCK = 16
KERNEL_DTYPE = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


class RunRecord(ctypes.Structure):
    _fields_ = [("runs", ctypes.c_int32), ("copies", ctypes.c_int32), ("grid_x", ctypes.c_int64),
                ("grid_y", ctypes.c_int64), ("threads", ctypes.c_int64)]

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.grid_x, self.grid_y, self.threads


class EmulatedKernels:
    """ctypes front of the emulation library; arrays are host numpy arrays.

    Arguments default to what the arrays say; ``overrides`` replaces any of them (n, c,
    h, w, b, tile, halo, dtype) to pass what the arrays cannot express.
    """

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
        record = ctypes.POINTER(RunRecord)
        self.lib.m2ae_emulated_gather.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, i32, record]
        self.lib.m2ae_emulated_scatter.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, record]
        self.lib.m2ae_emulated_gather.restype = ctypes.c_int
        self.lib.m2ae_emulated_scatter.restype = ctypes.c_int

    def gather(self, out: np.ndarray, dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int,
               overrides: dict[str, int] | None = None) -> tuple[int, RunRecord]:
        n, c, h, w = dense.shape
        args = {"n": n, "c": c, "h": h, "w": w, "b": tiles.size, "tile": tile, "halo": halo,
                "dtype": KERNEL_DTYPE[dense.dtype]}
        args.update(overrides or {})
        record = RunRecord()
        status = self.lib.m2ae_emulated_gather(out.ctypes.data, dense.ctypes.data, tiles.ctypes.data,
                                               *args.values(), ctypes.byref(record))
        return status, record

    def scatter(self, out: np.ndarray, base: np.ndarray, values: np.ndarray, tiles: np.ndarray,
                overrides: dict[str, int] | None = None) -> tuple[int, RunRecord]:
        n, c, h, w = base.shape
        args = {"n": n, "c": c, "h": h, "w": w, "b": tiles.size, "tile": values.shape[-1],
                "dtype": KERNEL_DTYPE[base.dtype]}
        args.update(overrides or {})
        record = RunRecord()
        status = self.lib.m2ae_emulated_scatter(out.ctypes.data, base.ctypes.data, values.ctypes.data,
                                                tiles.ctypes.data, *args.values(), ctypes.byref(record))
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


def expected_grid(b: int, c: int, window_pixels: int) -> tuple[int, int, int]:
    """One block per tile and channel chunk; the window's pixels in whole warps, at most 256 threads."""
    threads = min(-(-window_pixels // WARP) * WARP, MAX_THREADS_PER_BLOCK)
    return b, -(-c // CHANNELS_PER_BLOCK), threads


def check_gather(emulated: EmulatedKernels, dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> None:
    n, c, h, w = dense.shape
    size = tile + 2 * halo
    out = np.full((tiles.size, c, size, size), np.nan, dtype=dense.dtype)  # an element no thread writes stays NaN
    status, record = emulated.gather(out, dense, tiles, tile, halo)
    assert status == 0
    assert_bit_equal(out, masked_gather(dense, tiles, tile, halo))
    assert record.copies == 0
    if tiles.size:
        assert record.runs == 1 and record.grid == expected_grid(tiles.size, c, size * size)
    else:
        assert record.runs == 0


def check_scatter(emulated: EmulatedKernels, base: np.ndarray, values: np.ndarray, tiles: np.ndarray,
                  in_place: bool) -> None:
    expected = masked_scatter(base, values, tiles)
    original = base.copy()
    out = base if in_place else np.full(base.shape, np.nan, dtype=base.dtype)
    status, record = emulated.scatter(out, base, values, tiles)
    assert status == 0
    assert_bit_equal(out, expected)
    assert record.copies == (0 if in_place else 1)
    if tiles.size:
        assert record.runs == 1 and record.grid == expected_grid(tiles.size, base.shape[1], values.shape[-1] ** 2)
    else:
        assert record.runs == 0
    if not in_place:
        assert_bit_equal(base, original)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHER_CASES)
def test_gather_matches_reference(emulated, rng, case, dtype) -> None:
    n, c, h, w, tile, halo, b = case
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    check_gather(emulated, dense, tiles, tile, halo)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("halo", [0, 1, 2, 5])
def test_gather_every_tile_for_each_halo(emulated, rng, halo, dtype) -> None:
    """Every cell of a 2-image map with partial edge tiles; halo 5 is wider than the tile."""
    n, c, h, w, tile = 2, 3, 13, 11, 3
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, tile_count(n, h, w, tile), dtype)
    check_gather(emulated, dense, tiles, tile, halo)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCATTER_CASES)
def test_scatter_matches_reference(emulated, rng, case, dtype, in_place) -> None:
    base, values, tiles = scatter_inputs(rng, *case, dtype)
    check_scatter(emulated, base, values, tiles, in_place)


@pytest.mark.parametrize(("tile", "halo", "threads"), [
    (1, 0, 32),  # a one-pixel window still takes a whole warp
    (3, 1, 32),
    (6, 0, 64),
    (16, 0, 256),
    (16, 2, 256),  # 400 pixels: the block loops
])
def test_threads_per_block_follow_the_window(emulated, rng, tile, halo, threads) -> None:
    dense, tiles = gather_inputs(rng, 1, 2, 20, 20, tile, 3, np.float32)
    size = tile + 2 * halo
    status, record = emulated.gather(np.empty((3, 2, size, size), np.float32), dense, tiles, tile, halo)
    assert status == 0 and record.threads == threads


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 35), h=st.integers(1, 20), w=st.integers(1, 20),
       tile=st.integers(1, 9), halo=st.integers(0, 6), extra=st.integers(-30, 3), fp16=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_gather_random_shapes(emulated, n, c, h, w, tile, halo, extra, fp16, seed) -> None:
    """B from a few tiles up to every cell and a few repeats past it."""
    b = max(tile_count(n, h, w, tile) + extra, 0)
    dense, tiles = gather_inputs(np.random.default_rng(seed), n, c, h, w, tile, b,
                                 np.float16 if fp16 else np.float32)
    check_gather(emulated, dense, tiles, tile, halo)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 35), h=st.integers(1, 20), w=st.integers(1, 20),
       tile=st.integers(1, 9), fraction=st.floats(0, 1), in_place=st.booleans(), fp16=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_scatter_random_shapes(emulated, n, c, h, w, tile, fraction, in_place, fp16, seed) -> None:
    b = round(fraction * tile_count(n, h, w, tile))
    base, values, tiles = scatter_inputs(np.random.default_rng(seed), n, c, h, w, tile, b,
                                         np.float16 if fp16 else np.float32)
    check_scatter(emulated, base, values, tiles, in_place)


@pytest.mark.parametrize("overrides", [{"b": 0}, {"c": 0}, {"n": 0}, {"h": 0}, {"w": 0}])
def test_gather_with_nothing_to_do_launches_nothing(emulated, rng, overrides) -> None:
    dense, tiles = gather_inputs(rng, 1, 4, 6, 6, 3, 4, np.float32)
    out = np.full((4, 4, 5, 5), np.nan, np.float32)
    status, record = emulated.gather(out, dense, tiles, 3, 1, overrides)
    assert status == 0 and record.runs == 0 and record.copies == 0
    assert np.isnan(out).all()


def test_scatter_with_nothing_to_do_still_copies_base(emulated, rng) -> None:
    base, values, tiles = scatter_inputs(rng, 1, 4, 6, 6, 3, 0, np.float32)
    out = np.full(base.shape, np.nan, np.float32)
    status, record = emulated.scatter(out, base, values, tiles)
    assert status == 0 and record.runs == 0 and record.copies == 1
    assert_bit_equal(out, base)

    status, record = emulated.scatter(base, base, values, tiles)  # in place: nothing at all
    assert status == 0 and record.runs == 0 and record.copies == 0

    status, record = emulated.scatter(out, base, values, tiles, {"c": 0})  # an empty map: nothing to copy
    assert status == 0 and record.runs == 0 and record.copies == 0


GRID_TOO_LARGE = [
    {"b": 2**31},  # more tiles than blockIdx.x can index
    {"c": CHANNELS_PER_BLOCK * 65535 + 1},  # more channel chunks than blockIdx.y can index
    {"tile": 46341},  # a window past 2^31 - 1 pixels
]


@pytest.mark.parametrize("overrides", [
    {"n": -1}, {"c": -1}, {"h": -1}, {"w": -1}, {"b": -1}, {"tile": 0}, {"halo": -1}, {"dtype": 7},
    {"tile": 2**31 - 1, "halo": 2**31 - 1}, {"halo": 23170}, *GRID_TOO_LARGE,
])
def test_gather_rejects_bad_arguments_before_touching_memory(emulated, rng, overrides) -> None:
    dense, tiles = gather_inputs(rng, 1, 4, 6, 6, 3, 4, np.float32)
    out = np.full((4, 4, 5, 5), np.nan, np.float32)
    status, record = emulated.gather(out, dense, tiles, 3, 1, overrides)
    assert status == CUDA_ERROR_INVALID_VALUE and record.runs == 0 and record.copies == 0
    assert np.isnan(out).all()


@pytest.mark.parametrize("overrides", [
    {"n": -1}, {"w": -1}, {"b": -1}, {"tile": 0}, {"tile": -3}, {"dtype": 2}, *GRID_TOO_LARGE,
])
def test_scatter_rejects_bad_arguments_before_touching_memory(emulated, rng, overrides) -> None:
    base, values, tiles = scatter_inputs(rng, 1, 4, 6, 6, 3, 4, np.float32)
    out = np.full(base.shape, np.nan, np.float32)
    status, record = emulated.scatter(out, base, values, tiles, overrides)
    assert status == CUDA_ERROR_INVALID_VALUE and record.runs == 0 and record.copies == 0
    assert np.isnan(out).all()  # not even the base -> out copy
