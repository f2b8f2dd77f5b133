"""GPU parity: every CUDA kernel against its torch reference (computed on the CPU, the path
users without a GPU get). Skipped without CuPy and a GPU; run these on a GPU machine:
    pytest tests/test_kernels_gpu.py
"""

import importlib.util
import json
import math

import pytest
import torch

from mercury_engine import kernels as K
from mercury_engine.model import rope_tables

HAVE_CUPY = importlib.util.find_spec("cupy") is not None  # imported by the backend, past cuda/

pytestmark = pytest.mark.skipif(
    not (HAVE_CUPY and torch.cuda.is_available()), reason="needs CuPy and an NVIDIA GPU"
)
INF = math.inf
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def cuda():
    backend = K.get_backend("cuda")
    assert isinstance(backend, K.CudaBackend)
    return backend


def random_logits(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand((*shape[:-1], 1), generator=g) * 10  # flat to peaked rows
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def assert_confidence_parity(cuda, logits_cpu, gpu_view=None):
    gpu = logits_cpu.cuda() if gpu_view is None else gpu_view
    got = [t.cpu() for t in cuda.confidence(gpu, want_entropy=True)]
    want = K.confidence(logits_cpu, want_entropy=True)
    assert got[0].dtype == torch.int64 and got[1].dtype == torch.float32
    assert torch.equal(got[0], want[0]), "argmax differs"
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[3], want[3], rtol=1e-4, atol=1e-5)
    token, prob = (t.cpu() for t in cuda.confidence(gpu))  # the hot path without extras
    assert torch.equal(token, got[0]) and torch.equal(prob, got[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 1000), (37, 8193), (3, 70001), (4, 8, 152064), (5, 1), (1, 31)])
def test_confidence_random(cuda, dtype, shape):
    # Vocabularies that are not multiples of either block size (256, 1024); bf16 rows of 70k+
    # values hold many exact ties at the maximum.
    assert_confidence_parity(cuda, random_logits(shape, dtype, seed=sum(shape)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_confidence_edge_rows(cuda, dtype):
    V = 5000
    rows = torch.randn(8, V)
    rows[0, :] = -INF  # all -inf: token 0, zeros
    rows[1, ::2] = -INF  # half -inf
    rows[2, :] = 1.0  # all tied: token 0, entropy log V
    rows[3, 4999] = rows[3, 17] = rows[3, 2500] = 50.0  # tie at the max far apart: 17
    rows[4, :] = -INF
    rows[4, 4321] = 0.0  # a single possible token
    rows[5, 0] = rows[5, 1] = 30.0  # tie in the first two, margin 0
    rows[6, :] = 0.0
    rows[6, 4999] = 1.0  # max in the last slot
    rows[7, :4999] = -INF  # only the last slot possible
    assert_confidence_parity(cuda, rows.to(dtype))
    token = cuda.confidence(rows.to(dtype).cuda())[0].tolist()
    assert token[:8] == [0, token[1], 0, 17, 4321, 0, 4999, 4999]


def test_confidence_on_a_strided_slice(cuda):
    full = random_logits((3, 40, 3001), torch.bfloat16, seed=7)
    middle = full[:, 10:26]
    gpu_middle = full.cuda()[:, 10:26]
    assert not gpu_middle.is_contiguous()
    assert_confidence_parity(cuda, middle, gpu_view=gpu_middle)


def test_confidence_sampling_stays_in_torch(cuda):
    logits = torch.tensor([0.0, math.log(3.0), -INF], device="cuda").expand(4000, 3)
    token, prob = cuda.confidence(logits, temperature=1.0)
    assert set(token.tolist()) <= {0, 1} and 0.7 < token.float().mean().item() < 0.8
    torch.testing.assert_close(prob, torch.where(token == 1, 0.75, 0.25))


def commit_case(seed, B, M):
    g = torch.Generator().manual_seed(seed)
    levels = int(torch.randint(1, 6, (1,), generator=g))
    prob = torch.randint(0, levels, (B, M), generator=g).float() / max(levels - 1, 1)  # many ties
    mask = torch.rand((B, M), generator=g) < torch.rand((B, 1), generator=g) * 1.2
    mask[0] = True  # all masked
    if B > 1:
        mask[1] = False  # none masked
    full = torch.randint(10, 20, (B, M + 6), generator=g)
    token = torch.randint(100, 200, (B, M), generator=g)
    return g, full, mask, token, prob


@pytest.mark.parametrize("seed", range(24))
def test_commit_random(cuda, seed):
    B, M = [(1, 1), (3, 7), (4, 32), (8, 33), (2, 300), (3, 1000)][seed % 6]
    g, full, mask, token, prob = commit_case(seed, B, M)
    threshold = [0.0, 0.5, 0.9, 1.0][seed % 4]
    if seed % 2:
        limits = (torch.randint(0, 3, (B,), generator=g), torch.randint(0, M + 2, (B,), generator=g),
                  torch.rand(B, generator=g) < 0.3)
    else:
        limits = (seed % 3, None if seed % 4 == 0 else 1 + seed % 5, seed % 8 == 2)
    gpu_full, gpu_mask = full.cuda(), mask.cuda()
    gpu_limits = tuple(v.cuda() if isinstance(v, torch.Tensor) else v for v in limits)
    left = cuda.commit(gpu_full[:, 3:3 + M], gpu_mask, token.cuda(), prob.cuda(), threshold, *gpu_limits)
    want_left = K.commit(full[:, 3:3 + M], mask, token, prob, threshold, *limits)
    assert left.dtype == torch.int32 and left.cpu().tolist() == want_left.tolist()
    assert torch.equal(gpu_mask.cpu(), mask)
    assert torch.equal(gpu_full.cpu(), full)  # prefix and suffix columns untouched as well


def test_a_decode_loop_matches_the_cpu_path(cuda):
    """confidence + commit until settled, GPU kernels vs CPU references, same tokens each step."""
    logits = random_logits((4, 32, 8192), torch.float32, seed=3)
    results = []
    for backend, device in ((cuda, "cuda"), (K.TorchBackend(), "cpu")):
        canvas = torch.zeros(4, 32, dtype=torch.long, device=device)
        mask = torch.ones(4, 32, dtype=torch.bool, device=device)
        x = logits.to(device)
        history = []
        for step in range(40):
            token, prob = backend.confidence(x)
            left = backend.commit(canvas, mask, token, prob, 0.9, 1, 3, step == 11)
            history.append(left.tolist())
            if max(history[-1]) == 0:
                break
        results.append((canvas.cpu(), history))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,dim", [(1, 256), (37, 896), (5, 1000), (3, 5000)])
def test_add_rmsnorm(cuda, dtype, rows, dim):
    g = torch.Generator().manual_seed(rows * dim)
    x, residual = (torch.randn(rows, dim, generator=g).to(dtype) for _ in range(2))
    weight = torch.nn.Parameter(torch.randn(dim, generator=g).to(dtype))  # requires_grad, as in the model
    with torch.no_grad():
        out, residual_out = (t.cpu() for t in cuda.add_rmsnorm(x.cuda(), residual.cuda(), weight.cuda(), 1e-6))
        want_out, want_residual = K.add_rmsnorm(x, residual, weight, 1e-6)
    assert torch.equal(residual_out, want_residual)
    if dtype == torch.bfloat16:  # one rounding step may land one bf16 ulp apart
        torch.testing.assert_close(out, want_out, rtol=1.6e-2, atol=1e-2)
    else:
        torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Hq,Hk,L,D", [(1, 14, 2, 33, 64), (3, 8, 4, 5, 32), (2, 2, 2, 1, 128)])
def test_rope_qk(cuda, dtype, B, Hq, Hk, L, D):
    g = torch.Generator().manual_seed(B * Hq * L)
    q = torch.randn(B, L, Hq, D, generator=g).to(dtype).cuda().transpose(1, 2)  # model's view
    k = torch.randn(B, L, Hk, D, generator=g).to(dtype).cuda().transpose(1, 2)
    positions = torch.randint(0, 2000, (B, L), generator=g).cuda()
    cos, sin = rope_tables(positions, D, 10000.0, dtype)
    got = cuda.rope_qk(q, k, cos, sin)
    want = K.rope_qk(q, k, cos, sin)  # torch on the same GPU: same op order, same roundings
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    shared = torch.broadcast_to(cos[:1], cos.shape), torch.broadcast_to(sin[:1], sin.shape)  # stride 0
    for a, b in zip(cuda.rope_qk(q, k, *shared), K.rope_qk(q, k, *shared)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_kernels_follow_torchs_current_stream(cuda):
    logits = random_logits((64, 20000), torch.float32, seed=11).cuda()
    want = cuda.confidence(logits)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = cuda.confidence(logits)
        left = cuda.commit(torch.zeros(64, 1, dtype=torch.long, device="cuda"),
                           torch.ones(64, 1, dtype=torch.bool, device="cuda"), got[0][:, None], got[1][:, None], 0.5)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and int(left.sum()) == 0


def test_cpu_tensors_take_the_reference_path(cuda):
    logits = random_logits((4, 100), torch.float32, seed=1)
    token, prob = cuda.confidence(logits)
    assert token.device.type == "cpu" and torch.equal(token, K.confidence(logits)[0])


def test_auto_picks_the_kernels(cuda):
    assert K.get_backend("auto").name == "cuda"


def test_kernel_bench_runs(tmp_path):
    from mercury_bench.kernels import main

    out = tmp_path / "kernels.json"
    assert main(["--quick", "--device", "cuda", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "cuda" and report["missing"] is None
    assert all(r["ms"]["kernel"] >= 0 and r["ms"]["torch"] >= 0 for r in report["results"])
    assert all(r.get("same_tokens", True) for r in report["results"])
