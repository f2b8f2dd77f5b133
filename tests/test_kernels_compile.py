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
    options = [b"--gpu-architecture=compute_90", *(o.encode() for o in kernels.NVRTC_OPTIONS)]
    rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert rc == 0, log.value.decode()
    assert "warning" not in log.value.decode().lower(), log.value.decode()
