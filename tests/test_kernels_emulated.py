"""The CUDA kernels' own source, run on the CPU: every cuda/*.cu is compiled as host C++ with a
small shim (one OS thread per CUDA thread, real barriers for __syncthreads and warp shuffles, one
block at a time) and launched through CudaBackend's real argument building. This checks the
kernels' logic and indexing against the torch references on every CI run, where there is no GPU.
It is no substitute for tests/test_kernels_gpu.py: memory model, NVRTC and CuPy are not involved.
Skipped only where g++ is absent."""

import ctypes
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from mercury_engine import kernels as K
from mercury_engine.model import rope_tables

GXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not installed")
INF = math.inf

SHIM = r"""
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 { unsigned x, y, z; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
alignas(16) static unsigned char emu_dynamic_shared[1 << 16];
static std::unique_ptr<std::barrier<>> emu_block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
static std::atomic<int> emu_count{0};
static unsigned long long emu_slots[32][32];

static inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
static inline int __syncthreads_count(int predicate) {
    if (predicate) emu_count++;
    __syncthreads();
    int total = emu_count.load();
    __syncthreads();
    if (threadIdx.x == 0) emu_count = 0;
    __syncthreads();
    return total;
}
template <typename T> static inline T emu_shfl_xor(T v, int offset) {
    unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu_slots[warp][lane] = bits;
    emu_warp_barriers[warp]->arrive_and_wait();
    bits = emu_slots[warp][lane ^ offset];
    emu_warp_barriers[warp]->arrive_and_wait();
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int o) { return emu_shfl_xor(v, o); }
static inline int __shfl_xor_sync(unsigned, int v, int o) { return emu_shfl_xor(v, o); }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::min;
using std::max;

static void emu_launch(int grid, int block, const std::function<void()>& body) {
    gridDim = {(unsigned)grid, 1, 1};
    blockDim = {(unsigned)block, 1, 1};
    for (int b = 0; b < grid; ++b) {
        emu_block_barrier = std::make_unique<std::barrier<>>(block);
        emu_warp_barriers.clear();
        for (int w = 0; w < block / 32; ++w) emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> threads;
        for (int t = 0; t < block; ++t)
            threads.emplace_back([=, &body] { threadIdx = {(unsigned)t, 0, 0}; blockIdx = {(unsigned)b, 0, 0}; body(); });
        for (auto& th : threads) th.join();
    }
}
"""

CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float}


def signatures(source: str) -> dict[str, list[tuple[str, str]]]:
    text = re.sub(r"//[^\n]*", "", source)
    found = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
        found[name] = [(" ".join(p.split()[:-1]).replace("const ", ""), p.split()[-1]) for p in params.split(",")]
    return found


def host_source(family: str) -> tuple[str, dict]:
    source = K.kernel_source(family)
    sigs = signatures(source)
    # Dynamic shared memory becomes a pointer into one static buffer.
    source = re.sub(r"extern __shared__ (\w+) (\w+)\[\];", r"\1* \2 = (\1*)emu_dynamic_shared;", source)
    wrappers = []
    for name, params in sigs.items():
        decl = ", ".join(f"{t} {n}" for t, n in params)
        call = ", ".join(n for _, n in params)
        wrappers.append(f'extern "C" void emu_{name}(int grid, int block, {decl}) '
                        f'{{ emu_launch(grid, block, [&] {{ {name}({call}); }}); }}')
    return source + "\n" + "\n".join(wrappers) + "\n", sigs


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emu")
    (folder / "shim.h").write_text(SHIM)
    functions = {}
    for family in K.KERNEL_FILES:
        source, sigs = host_source(family)
        (folder / f"{family}.cpp").write_text(source)
        lib_path = folder / f"{family}.so"
        done = subprocess.run(
            [GXX, "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-pthread",
             "-include", str(folder / "shim.h"), "-o", str(lib_path), str(folder / f"{family}.cpp")],
            capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        lib = ctypes.CDLL(str(lib_path))
        for name, params in sigs.items():
            fn = getattr(lib, f"emu_{name}")
            fn.argtypes = [ctypes.c_int, ctypes.c_int] + [
                ctypes.c_void_p if t.endswith("*") else CTYPES[t] for t, _ in params]
            fn.restype = None
            functions[name] = fn
    return EmulatedBackend(functions)


class EmulatedBackend(K.CudaBackend):
    """CudaBackend's ops and argument building, launching the host-compiled kernels on CPU tensors."""

    def __init__(self, functions):  # no CuPy, no NVRTC
        self.device = torch.device("cpu")
        self.functions = functions
        self.launches = 0

    def _launch(self, name, grid, block, args, shared_mem=0):
        assert shared_mem <= 1 << 16
        converted = []
        for a in args:
            if isinstance(a, torch.Tensor):
                converted.append(ctypes.c_void_p(a.data_ptr()))
            elif a is None:
                converted.append(ctypes.c_void_p(None))
            else:
                converted.append(a.item() if isinstance(a, np.generic) else a)
        self.functions[name](grid, block, *converted)
        self.launches += 1


def random_logits(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand((*shape[:-1], 1), generator=g) * 10
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def assert_confidence_parity(emu, logits, view=None):
    before = emu.launches
    got = emu.confidence(logits if view is None else view, want_entropy=True)
    assert emu.launches == before + 1, "the kernel did not run"
    want = K.confidence(logits if view is None else view, want_entropy=True)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[3], want[3], rtol=1e-4, atol=1e-5)
    token, prob = emu.confidence(logits if view is None else view)
    assert torch.equal(token, got[0]) and torch.equal(prob, got[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 1000), (5, 8193), (1, 31), (3, 1)])
def test_confidence(emu, dtype, shape):
    assert_confidence_parity(emu, random_logits(shape, dtype, seed=sum(shape)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confidence_edge_rows(emu, dtype):
    rows = torch.randn(8, 3000)
    rows[0, :] = -INF
    rows[1, ::2] = -INF
    rows[2, :] = 1.0
    rows[3, 2999] = rows[3, 17] = rows[3, 1500] = 50.0
    rows[4, :] = -INF
    rows[4, 2345] = 0.0
    rows[5, 0] = rows[5, 1] = 30.0
    rows[6, :] = 0.0
    rows[6, 2999] = 1.0
    rows[7, :2999] = -INF
    assert_confidence_parity(emu, rows.to(dtype))
    assert emu.confidence(rows.to(dtype))[0].tolist()[2:] == [0, 17, 2345, 0, 2999, 2999]


def test_confidence_large_vocab_block_of_1024(emu):
    assert_confidence_parity(emu, random_logits((2, 70001), torch.bfloat16, seed=5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confidence_strided_slice(emu, dtype):
    full = random_logits((2, 20, 777), dtype, seed=9)  # rows of the slice are not 16-byte aligned
    assert_confidence_parity(emu, full, view=full[:, 5:12])
    padded = random_logits((3, 4, 1024), dtype, seed=10)
    assert_confidence_parity(emu, padded, view=padded[..., :1000])  # aligned rows, a vocabulary cut


@pytest.mark.parametrize("seed", range(12))
def test_commit(emu, seed):
    g = torch.Generator().manual_seed(seed)
    B, M = [(1, 1), (3, 7), (4, 32), (2, 33), (2, 300), (1, 1000)][seed % 6]
    levels = int(torch.randint(1, 6, (1,), generator=g))
    prob = torch.randint(0, levels, (B, M), generator=g).float() / max(levels - 1, 1)
    mask = torch.rand((B, M), generator=g) < torch.rand((B, 1), generator=g) * 1.2
    mask[0] = True
    full = torch.randint(10, 20, (B, M + 6), generator=g)
    token = torch.randint(100, 200, (B, M), generator=g)
    threshold = [0.0, 0.5, 0.9, 1.0][seed % 4]
    if seed % 2:
        limits = (torch.randint(0, 3, (B,), generator=g), torch.randint(0, M + 2, (B,), generator=g),
                  torch.rand(B, generator=g) < 0.3)
    else:
        limits = (seed % 3, None if seed % 4 == 0 else 1 + seed % 5, seed % 8 == 2)
    emu_full, emu_mask = full.clone(), mask.clone()
    before = emu.launches
    left = emu.commit(emu_full[:, 3:3 + M], emu_mask, token, prob, threshold, *limits)
    assert emu.launches == before + 1
    want = K.commit(full[:, 3:3 + M], mask, token, prob, threshold, *limits)
    assert left.dtype == torch.int32 and left.tolist() == want.tolist()
    assert torch.equal(emu_mask, mask) and torch.equal(emu_full, full)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,dim", [(3, 256), (2, 1000), (1, 5000)])
def test_add_rmsnorm(emu, dtype, rows, dim):
    g = torch.Generator().manual_seed(dim)
    x, residual = (torch.randn(rows, dim, generator=g).to(dtype) for _ in range(2))
    weight = torch.randn(dim, generator=g).to(dtype)
    out, residual_out = emu.add_rmsnorm(x, residual, weight, 1e-6)
    want_out, want_residual = K.add_rmsnorm(x, residual, weight, 1e-6)
    assert torch.equal(residual_out, want_residual)
    tol = dict(rtol=1.6e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, want_out, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_qk(emu, dtype):
    g = torch.Generator().manual_seed(4)
    B, Hq, Hk, L, D = 2, 6, 2, 5, 32
    q = torch.randn(B, L, Hq, D, generator=g).to(dtype).transpose(1, 2)
    k = torch.randn(B, L, Hk, D, generator=g).to(dtype).transpose(1, 2)
    cos, sin = rope_tables(torch.randint(0, 500, (B, L), generator=g), D, 10000.0, dtype)
    before = emu.launches
    got = emu.rope_qk(q, k, cos, sin)
    assert emu.launches == before + 1
    for a, b in zip(got, K.rope_qk(q, k, cos, sin)):
        assert torch.equal(a, b)  # same roundings in the same order: bit for bit
    shared = torch.broadcast_to(cos[:1], cos.shape), torch.broadcast_to(sin[:1], sin.shape)
    for a, b in zip(emu.rope_qk(q, k, *shared), K.rope_qk(q, k, *shared)):
        assert torch.equal(a, b)


def test_the_sampler_decodes_the_same_with_the_kernels(emu, tiny_model_dir):
    """The engine's real sampler, once on the emulated kernels and once on the references."""
    from mercury_engine.loader import load_model
    from mercury_engine.sampler import InfillParams, Sampler

    loaded = load_model(tiny_model_dir, device="cpu")
    jobs = [InfillParams(prefix="def add(a, b):\n    return ", suffix="\n", max_tokens=12, budget_ms=600_000),
            InfillParams(prefix="import os\n", suffix="", max_tokens=8, threshold=0.05, n=2, budget_ms=600_000)]
    results = []
    for backend in (emu, K.TorchBackend()):
        sampler = Sampler(loaded, backend=backend)
        out = sampler.infill_batch(jobs, [float("inf")] * len(jobs))
        results.append([[(c.text, c.tokens) for c in r.completions] + [r.steps] for r in out])
    assert emu.launches > 0
    assert results[0] == results[1]
