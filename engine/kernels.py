"""The sampler's hot-loop ops and two fused model ops, with a torch and a CUDA implementation.

Module-level functions are the torch references: the CPU path, and the oracle the CUDA kernels
(cuda/*.cu, compiled with NVRTC through CuPy) are tested against. `get_backend(device)` picks:
- "cpu": `TorchBackend` (the references);
- "cuda": `CudaBackend`, or `KernelsUnavailable` with the reason (no GPU, no CuPy, compile error);
- "auto": `CudaBackend` when CuPy and a GPU are there, else `TorchBackend`.
Both backends have the same methods with the same signatures and results:
    confidence(logits, temperature=0.0, want_entropy=False, generator=None)
        -> (token, prob) or (token, prob, entropy, margin)
    commit(canvas_mid, mask, token, prob, threshold, min_commit=1, max_commit=None,
           commit_all=False) -> masks_left
    add_rmsnorm(x, residual, weight, eps) -> (out, residual_out)
    rope_qk(q, k, cos, sin) -> (q_out, k_out)
This module imports neither CuPy nor a GPU at import time. Checks: tests/test_kernels_compile.py
(nvcc, NVRTC), tests/test_kernels_emulated.py (the kernels' C++ run on the CPU), and on a GPU
tests/test_kernels_gpu.py and `mercury-bench kernels`.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .model import apply_rope

log = logging.getLogger(__name__)


class KernelsUnavailable(RuntimeError):
    """The CUDA kernels cannot run here; the message says why and what to install."""


# ----------------------------------------------------------------------------------------------
# Torch references
# ----------------------------------------------------------------------------------------------


def confidence(
    logits: torch.Tensor,
    temperature: float = 0.0,
    want_entropy: bool = False,
    generator: torch.Generator | None = None,
):
    """Per row of `logits` (..., V): the chosen token (int64) and its probability (float32).

    temperature == 0: the argmax; ties go to the lowest index (torch.argmax's rule, on CPU and
    CUDA alike). temperature > 0: a draw from softmax(logits / temperature) by the Gumbel-max
    trick, and the probability of the drawn token under that distribution. With `want_entropy`
    also the entropy (nats) and the margin p(top-1) - p(top-2) of the same distribution.
    -inf logits have probability 0; a row of only -inf gives token 0 and zeros elsewhere.
    """
    if logits.shape[-1] == 0:
        raise ValueError("confidence: logits have an empty vocabulary dimension")
    x = logits.float()  # a no-op for float32 logits
    if temperature <= 0 and not want_entropy:
        # The hot CPU path. softmax + max measured ~30% faster on CPU than max + logsumexp
        # (softmax is one fused vectorised pass). Equal logits give equal probabilities, so ties
        # still go to the lowest index; a row of only -inf gives NaN, turned into 0.
        prob, token = torch.softmax(x, -1).max(-1)
        return token, prob.nan_to_num_(0.0)
    if temperature > 0:
        x = x / temperature
        u = torch.rand(x.shape, device=x.device, generator=generator).clamp_(min=1e-20)
        token = (x - torch.log(-torch.log(u))).argmax(-1)
        chosen = x.gather(-1, token[..., None]).squeeze(-1)
    else:
        chosen, token = x.max(-1)
    lse = torch.logsumexp(x, -1)  # -inf for a row of only -inf
    empty = lse == -math.inf
    prob = torch.exp(chosen - lse).masked_fill_(empty, 0.0)
    if not want_entropy:
        return token, prob
    logp = x - lse[..., None]
    p = logp.exp()
    entropy = -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)
    entropy = entropy.clamp_(min=0.0).masked_fill_(empty, 0.0)
    if x.shape[-1] >= 2:
        top = x.topk(2, -1).values
        margin = torch.exp(top[..., 0] - lse) - torch.exp(top[..., 1] - lse)
    else:
        margin = prob.clone()
    margin = margin.masked_fill_(empty, 0.0)
    return token, prob, entropy, margin


def commit(
    canvas_mid: torch.Tensor,
    mask: torch.Tensor,
    token: torch.Tensor,
    prob: torch.Tensor,
    threshold: float,
    min_commit: int | torch.Tensor = 1,
    max_commit: int | torch.Tensor | None = None,
    commit_all: bool | torch.Tensor = False,
) -> torch.Tensor:
    """Commit the most confident masked positions of each row, in place; return masks left.

    canvas_mid (B, M) int64 token ids (may be a view into the full canvas), mask (B, M) bool
    (True = still masked; updated in place), token (B, M) proposed ids, prob (B, M) their
    confidences. Per row, among masked positions, the k most confident are committed, where
        k = all masked                                               if commit_all,
        k = min(masked, max(min_commit, min(max_commit, #(prob >= threshold))))  otherwise.
    min_commit / max_commit / commit_all are scalars or per-row (B,) tensors; max_commit None
    means no cap. Equal confidences: the lower position goes first. Returns masks left per row,
    (B,) int32 on the same device (the one small read-back a sampler step needs).
    """
    _check_commit_args(canvas_mid, mask, token, prob)
    B, M = mask.shape
    n_masked = mask.sum(1)
    n_pass = (mask & (prob >= threshold)).sum(1)
    hi = M if max_commit is None else max_commit
    k = torch.minimum(n_masked, n_pass.clamp(max=hi).clamp(min=min_commit))
    if isinstance(commit_all, torch.Tensor):
        k = torch.where(commit_all.to(device=k.device, dtype=torch.bool), n_masked, k)
    elif commit_all:
        k = n_masked
    k = k.clamp(min=0)
    # Rank masked positions by confidence, high first; a stable sort keeps lower positions first.
    key = torch.where(mask, prob.float(), -math.inf)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(M, device=mask.device).expand(B, M))
    chosen = mask & (rank < k[:, None])
    canvas_mid.copy_(torch.where(chosen, token, canvas_mid))
    mask.logical_and_(~chosen)
    return (n_masked - k).to(torch.int32)


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """residual_out = x + residual; out = RMSNorm(residual_out) exactly as engine/model.py's
    RMSNorm computes it. Returns (out, residual_out)."""
    r = x + residual
    h = r.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(r.dtype), r


def rope_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotary embedding on q (B, Hq, L, D) and k (B, Hk, L, D) with cos/sin (B, 1, L, D) from
    engine/model.py rope_tables (Hugging Face half-split layout)."""
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


def _check_commit_args(canvas_mid, mask, token, prob):
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"commit: mask must be a (B, M) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    for name, t in (("canvas_mid", canvas_mid), ("token", token), ("prob", prob)):
        if t.shape != mask.shape:
            raise ValueError(f"commit: {name} has shape {tuple(t.shape)}, mask has {tuple(mask.shape)}")


class TorchBackend:
    """The references: the CPU path, and a GPU path (plain torch ops) where CuPy is missing."""

    name = "torch"
    confidence = staticmethod(confidence)
    commit = staticmethod(commit)
    add_rmsnorm = staticmethod(add_rmsnorm)
    rope_qk = staticmethod(rope_qk)


# ----------------------------------------------------------------------------------------------
# CUDA kernels through CuPy
# ----------------------------------------------------------------------------------------------

KERNEL_FILES = {
    "confidence": ("confidence_f32", "confidence_bf16"),
    "commit": ("commit_tokens",),
    "add_rmsnorm": ("add_rmsnorm_f32", "add_rmsnorm_bf16"),
    "rope": ("rope_qk_f32", "rope_qk_bf16"),
}
NVRTC_OPTIONS: tuple[str, ...] = ()  # NVRTC defaults (C++17 since CUDA 11); CuPy adds the arch and -ftz
COMMIT_MAX_POSITIONS = 8192  # shared memory holds 5 bytes per position (48 KiB per block)


def kernel_source(family: str) -> str:
    """cuda/<family>.cu with cuda/common.cuh pasted in place of its #include, as NVRTC gets it."""
    folder = resources.files("mercury_engine.cuda")
    source = folder.joinpath(f"{family}.cu").read_text()
    return source.replace('#include "common.cuh"', folder.joinpath("common.cuh").read_text())


def _import_real_cuda_namespace() -> None:
    """The checkout's top-level cuda/ folder (a package: the .cu sources) shadows NVIDIA's `cuda`
    namespace package (cuda.pathfinder, which CuPy 14 imports) whenever the checkout root is on
    sys.path, e.g. under `python -m pytest` run from it. Import the real namespace first, with
    the checkout's root left out for that moment; later `cuda.*` imports then resolve through it."""
    ours = Path(str(resources.files("mercury_engine.cuda"))).resolve()
    loaded = sys.modules.get("cuda")
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "/").resolve().parent != ours:
        return  # the real one (or nothing of ours) is already imported
    shadowing = [p for p in sys.path if (Path(p or ".").resolve() / "cuda") == ours]
    if not shadowing:
        return
    saved = list(sys.path)
    sys.modules.pop("cuda", None)
    sys.path[:] = [p for p in sys.path if p not in shadowing]
    try:
        importlib.import_module("cuda")
    except ImportError:
        pass  # no NVIDIA `cuda` distribution installed: nothing to shadow
    finally:
        sys.path[:] = saved


def _import_cupy():
    if not torch.cuda.is_available():
        raise KernelsUnavailable(
            "the CUDA kernels need an NVIDIA GPU, and PyTorch sees none (torch.cuda.is_available() is "
            "False); use --device cpu or auto"
        )
    _import_real_cuda_namespace()
    try:
        import cupy
    except ImportError as e:
        raise KernelsUnavailable(
            f"the CUDA kernels need CuPy, which is not importable ({e}); install it with "
            "pip install 'mercury-lsp[gpu]' (cupy-cuda12x), or use --device auto to run plain torch ops"
        ) from e
    return cupy


class CudaBackend:
    """The kernels of cuda/*.cu, compiled at construction (NVRTC, cached by CuPy on disk) and
    launched on torch's current stream over torch tensors shared by DLPack (no copies).
    Inputs the kernels do not cover (CPU tensors, float16/float64, temperature > 0 sampling,
    rows longer than COMMIT_MAX_POSITIONS) go to the torch reference instead."""

    name = "cuda"

    def __init__(self, device: str | torch.device = "cuda"):
        self._cp = _import_cupy()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise KernelsUnavailable(f"CudaBackend needs a cuda device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._streams: dict[int, object] = {}
        self._fn = {}
        with torch.cuda.device(self.device):
            for family, names in KERNEL_FILES.items():
                try:
                    module = self._cp.RawModule(code=kernel_source(family), options=NVRTC_OPTIONS)
                    for name in names:
                        self._fn[name] = module.get_function(name)  # compiles now, not mid-request
                except Exception as e:  # CuPy raises CompileException, CUDARuntimeError, ...
                    raise KernelsUnavailable(f"compiling cuda/{family}.cu failed: {e}") from e

    # -- plumbing ------------------------------------------------------------------------------

    def _covers(self, *tensors: torch.Tensor) -> bool:
        return all(t.device == self.device for t in tensors)

    def _array(self, t: torch.Tensor):
        """A CuPy view of `t` (no copy). CuPy has no bfloat16 or needs none for bool: the kernels
        read those as raw 16-bit and 8-bit values."""
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        elif t.dtype == torch.bool:
            t = t.view(torch.uint8)
        return self._cp.from_dlpack(t)

    def _stream(self):
        ptr = torch.cuda.current_stream(self.device).cuda_stream
        stream = self._streams.get(ptr)
        if stream is None:
            # 0 is the legacy default stream, which CuPy has as Stream.null.
            with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream; 12-13 lack the successor
                warnings.simplefilter("ignore", DeprecationWarning)
                stream = self._cp.cuda.Stream.null if ptr == 0 else self._cp.cuda.ExternalStream(ptr, self.device.index)
            self._streams[ptr] = stream
        return stream

    def _launch(self, name: str, grid: int, block: int, args: tuple, shared_mem: int = 0):
        """Launch on torch's current stream; tensors in `args` are passed by DLPack."""
        def convert(a):
            if isinstance(a, torch.Tensor):
                return self._array(a)
            if a is None:
                return np.uint64(0)  # a null pointer: the kernel uses its scalar instead
            return a

        with torch.cuda.device(self.device), self._stream():
            self._fn[name]((grid,), (block,), tuple(convert(a) for a in args), shared_mem=shared_mem)

    # -- ops -----------------------------------------------------------------------------------

    def confidence(self, logits, temperature=0.0, want_entropy=False, generator=None):
        if (
            temperature > 0  # sampling stays in torch; the kernel is greedy
            or logits.dtype not in (torch.float32, torch.bfloat16)
            or not self._covers(logits)
            or logits.shape[-1] == 0
        ):
            return confidence(logits, temperature, want_entropy, generator)
        lead, vocab = logits.shape[:-1], logits.shape[-1]
        view = logits if logits.dim() == 3 else logits.reshape(1, -1, vocab)
        if view.stride(-1) != 1:
            view = view.contiguous()
        rows = view.shape[0] * view.shape[1]
        token = torch.empty(lead, dtype=torch.int64, device=logits.device)
        prob = torch.empty(lead, dtype=torch.float32, device=logits.device)
        entropy = torch.empty_like(prob) if want_entropy else None
        margin = torch.empty_like(prob) if want_entropy else None
        if rows > 0:
            name = "confidence_bf16" if logits.dtype == torch.bfloat16 else "confidence_f32"
            block = 1024 if vocab >= 65536 else 256
            args = (view, np.int64(view.stride(0)), np.int64(view.stride(1)), np.int32(view.shape[1]),
                    np.int32(vocab), token, prob, entropy, margin, np.int32(want_entropy))
            self._launch(name, rows, block, args)
        return (token, prob, entropy, margin) if want_entropy else (token, prob)

    def commit(self, canvas_mid, mask, token, prob, threshold, min_commit=1, max_commit=None,
               commit_all=False):
        _check_commit_args(canvas_mid, mask, token, prob)
        B, M = mask.shape
        per_row = [a for a in (min_commit, max_commit, commit_all) if isinstance(a, torch.Tensor)]
        if (
            canvas_mid.dtype != torch.int64
            or M > COMMIT_MAX_POSITIONS
            or not self._covers(canvas_mid, mask, token, prob, *per_row)
        ):
            return commit(canvas_mid, mask, token, prob, threshold, min_commit, max_commit, commit_all)
        masks_left = torch.zeros(B, dtype=torch.int32, device=mask.device)
        if B == 0 or M == 0:
            return masks_left
        token = token.to(torch.int64).contiguous()
        prob = prob.to(torch.float32).contiguous()

        def scalar_or_rows(value, default, dtype):
            if isinstance(value, torch.Tensor):
                return default, value.to(dtype).contiguous()
            return value, None

        lo, lo_rows = scalar_or_rows(min_commit, 0, torch.int32)
        hi, hi_rows = scalar_or_rows(M if max_commit is None else max_commit, 0, torch.int32)
        everything, all_rows = scalar_or_rows(commit_all, False, torch.uint8)
        block = min(1024, max(32, -(-M // 32) * 32))
        args = (canvas_mid, np.int64(canvas_mid.stride(0)), np.int64(canvas_mid.stride(1)),
                mask, np.int64(mask.stride(0)), np.int64(mask.stride(1)), token, prob,
                np.int32(M), np.float32(threshold),
                np.int32(_clamp_int32(lo)), lo_rows, np.int32(_clamp_int32(hi)), hi_rows,
                np.int32(bool(everything)), all_rows, masks_left)
        self._launch("commit_tokens", B, block, args, shared_mem=M * 5)
        return masks_left

    def add_rmsnorm(self, x, residual, weight, eps):
        if (
            x.dtype not in (torch.float32, torch.bfloat16)
            or residual.dtype != x.dtype
            or weight.dtype != x.dtype
            or residual.shape != x.shape
            or weight.shape != x.shape[-1:]
            or not self._covers(x, residual, weight)
        ):
            return add_rmsnorm(x, residual, weight, eps)
        x, residual, weight = x.contiguous(), residual.contiguous(), weight.contiguous()
        out, residual_out = torch.empty_like(x), torch.empty_like(x)
        dim = x.shape[-1]
        rows = x.numel() // dim if dim else 0
        if rows > 0:
            name = "add_rmsnorm_bf16" if x.dtype == torch.bfloat16 else "add_rmsnorm_f32"
            block = 256 if dim <= 4096 else 1024
            self._launch(name, rows, block, (x, residual, weight, out, residual_out, np.int32(dim),
                                             np.float32(eps)))
        return out, residual_out

    def rope_qk(self, q, k, cos, sin):
        dtypes = {q.dtype, k.dtype, cos.dtype, sin.dtype}
        if (
            len(dtypes) != 1
            or q.dtype not in (torch.float32, torch.bfloat16)
            or q.dim() != 4
            or k.dim() != 4
            or q.shape[0] != k.shape[0]
            or q.shape[2:] != k.shape[2:]
            or q.shape[-1] % 2
            or not self._covers(q, k, cos, sin)
        ):
            return rope_qk(q, k, cos, sin)
        B, Hq, L, D = q.shape
        Hk = k.shape[1]
        q = q if q.stride(-1) == 1 else q.contiguous()
        k = k if k.stride(-1) == 1 else k.contiguous()
        cos = _broadcast_rows(cos, B, L, D)
        sin = _broadcast_rows(sin, B, L, D)
        q_out = torch.empty((B, Hq, L, D), dtype=q.dtype, device=q.device)
        k_out = torch.empty((B, Hk, L, D), dtype=k.dtype, device=k.device)
        pairs = B * (Hq + Hk) * L * (D // 2)
        if pairs > 0:
            name = "rope_qk_bf16" if q.dtype == torch.bfloat16 else "rope_qk_f32"
            i64 = np.int64
            args = (q, i64(q.stride(0)), i64(q.stride(1)), i64(q.stride(2)), np.int32(Hq),
                    k, i64(k.stride(0)), i64(k.stride(1)), i64(k.stride(2)), np.int32(Hk),
                    cos, i64(cos.stride(0)), i64(cos.stride(2)),
                    sin, i64(sin.stride(0)), i64(sin.stride(2)),
                    q_out, k_out, np.int32(B), np.int32(L), np.int32(D))
            self._launch(name, min(-(-pairs // 256), 8192), 256, args)
        return q_out, k_out


def _clamp_int32(v) -> int:
    return max(-(2**31), min(2**31 - 1, int(v)))


def _broadcast_rows(t: torch.Tensor, B: int, L: int, D: int) -> torch.Tensor:
    """cos/sin as a (B, 1, L, D) view with a contiguous last dim (stride 0 where broadcast)."""
    t = torch.broadcast_to(t, (B, 1, L, D))
    return t if t.stride(-1) == 1 else t.contiguous()


def get_backend(device: str = "auto"):
    """The kernel backend for a `--device` value: "cpu", "cuda" (or "cuda:N"), or "auto"."""
    choice = (device or "auto").strip().lower()
    if choice == "cpu":
        return TorchBackend()
    if choice == "auto":
        try:
            return CudaBackend()
        except KernelsUnavailable as e:
            log.info("CUDA kernels not used: %s", e)
            return TorchBackend()
    if choice == "cuda" or choice.startswith("cuda:"):
        return CudaBackend(choice)
    raise ValueError(f"unknown device {device!r}: expected auto, cpu or cuda")
