"""Every cuda/*.cu compiles for sm_90 with warnings as errors, exports the entry points that
engine/kernels.py launches, and compiles as NVRTC receives it (common.cuh pasted in, no include
path). Skipped only where nvcc is absent."""

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mercury_engine import kernels

CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
STRICT = ["-arch=sm_90", "-std=c++17", "--Werror", "all-warnings", "-Xptxas", "-Werror"]


def nvcc(*args, cwd=None):
    done = subprocess.run([NVCC, *args], capture_output=True, text=True, cwd=cwd, timeout=240)
    assert done.returncode == 0, f"nvcc {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done


def test_every_kernel_family_has_a_source():
    assert {p.stem for p in SOURCES} == set(kernels.KERNEL_FILES)


@needs_nvcc
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_compiles_to_cubin_for_sm90(source, tmp_path):
    nvcc(*STRICT, "-cubin", "-o", str(tmp_path / "k.cubin"), str(source))
    assert (tmp_path / "k.cubin").stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("family", sorted(kernels.KERNEL_FILES))
def test_pasted_source_exports_the_launched_entry_points(family, tmp_path):
    # In a folder without common.cuh: the text must stand alone, as it does for NVRTC.
    (tmp_path / "k.cu").write_text(kernels.kernel_source(family))
    nvcc(*STRICT, "--ptx", "-o", "k.ptx", "k.cu", cwd=tmp_path)
    entries = set(re.findall(r"\.entry\s+(\w+)", (tmp_path / "k.ptx").read_text()))
    assert entries == set(kernels.KERNEL_FILES[family])


def find_nvrtc():
    """libnvrtc from the system, $NVRTC_LIBRARY, or the nvidia-cuda-nvrtc-cu12 wheel; else None."""
    candidates = [os.environ.get("NVRTC_LIBRARY"), ctypes.util.find_library("nvrtc")]
    try:
        import nvidia.cuda_nvrtc  # type: ignore  # the pip wheel CuPy can use

        for folder in nvidia.cuda_nvrtc.__path__:
            candidates += sorted(glob.glob(os.path.join(folder, "lib", "libnvrtc.so.*")))
    except ImportError:
        pass
    for c in candidates:
        if c:
            try:
                return ctypes.CDLL(c)
            except OSError:
                continue
    return None


@pytest.mark.parametrize("family", sorted(kernels.KERNEL_FILES))
def test_compiles_with_nvrtc_like_cupy(family):
    lib = find_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12 to run this check)")
    prog = ctypes.c_void_p()
    source = kernels.kernel_source(family).encode()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, f"{family}.cu".encode(), 0, None, None) == 0
    options = [b"--gpu-architecture=compute_90", b"-ftz=true", *(o.encode() for o in kernels.NVRTC_OPTIONS)]  # as CuPy
    rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert rc == 0, log.value.decode()
    assert "warning" not in log.value.decode().lower(), log.value.decode()


# ---- launch arguments against the kernel signatures (runs without a GPU) -----------------------
# A kernel argument of the wrong width is not an error anywhere: CuPy packs what it is given and
# the kernel reads garbage. So every launch CudaBackend makes is checked here, on CPU tensors,
# against the parameter list parsed from the .cu source.

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mercury_engine.model import rope_tables  # noqa: E402

POINTEE = {"float": {torch.float32}, "bf16_t": {torch.bfloat16}, "long long": {torch.int64},
           "unsigned char": {torch.bool, torch.uint8}, "int": {torch.int32}}
SCALAR = {"long long": np.int64, "int": np.int32, "float": np.float32}


def kernel_signatures() -> dict[str, list[str]]:
    found = {}
    for family in kernels.KERNEL_FILES:
        text = re.sub(r"//[^\n]*", "", kernels.kernel_source(family))
        for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
            found[name] = [" ".join(p.split()[:-1]).replace("const ", "") for p in params.split(",")]
    return found


class RecordingBackend(kernels.CudaBackend):
    """The real CudaBackend argument building, on CPU tensors, with the launch recorded."""

    def __init__(self):  # no CuPy, no compile
        self.device = torch.device("cpu")
        self.launches = []

    def _launch(self, name, grid, block, args, shared_mem=0):
        self.launches.append((name, grid, block, args, shared_mem))


def check_launch(signature, args):
    assert len(args) == len(signature), (signature, args)
    for ctype, arg in zip(signature, args):
        if ctype.endswith("*"):
            assert arg is None or isinstance(arg, torch.Tensor), (ctype, arg)
            if arg is not None:
                assert arg.dtype in POINTEE[ctype[:-1].strip()], (ctype, arg.dtype)
        else:
            assert type(arg) is SCALAR[ctype], (ctype, type(arg))


def test_launch_arguments_match_kernel_signatures():
    signatures = kernel_signatures()
    assert set(signatures) == {n for names in kernels.KERNEL_FILES.values() for n in names}
    b = RecordingBackend()
    for dtype in (torch.float32, torch.bfloat16):
        b.confidence(torch.randn(2, 3, 50).to(dtype))
        b.confidence(torch.randn(4, 50).to(dtype), want_entropy=True)
        x = torch.randn(3, 64).to(dtype)
        b.add_rmsnorm(x, x, torch.ones(64, dtype=dtype), 1e-6)
        q = torch.randn(1, 5, 4, 16).to(dtype).transpose(1, 2)
        cos, sin = rope_tables(torch.arange(5)[None], 16, 10000.0, dtype)
        b.rope_qk(q, q[:, :2], cos, sin)
    mask = torch.ones(2, 7, dtype=torch.bool)
    canvas, token, prob = torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, 7, dtype=torch.long), torch.rand(2, 7)
    b.commit(canvas, mask, token, prob, 0.9)
    b.commit(canvas, mask, token, prob, 0.9, torch.ones(2, dtype=torch.long), torch.full((2,), 3), torch.tensor([True, False]))
    launched = {name for name, *_ in b.launches}
    assert launched == set(signatures)  # every kernel was exercised
    for name, grid, block, args, shared_mem in b.launches:
        check_launch(signatures[name], args)
        assert grid >= 1 and 32 <= block <= 1024 and block % 32 == 0 and shared_mem < 48 * 1024
