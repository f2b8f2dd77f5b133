"""The torch references of engine/kernels.py (the CPU path and the GPU oracle) against plain,
naive formulas, on random inputs and the edge cases the CUDA kernels must also get right."""

import math
import subprocess
import sys

import pytest
import torch

from mercury_engine import kernels as K
from mercury_engine.model import RMSNorm, rope_tables

INF = math.inf


def naive_confidence(logits):
    """softmax in float64, then argmax (first on ties), entropy and top-2 margin, row by row."""
    x = logits.double().reshape(-1, logits.shape[-1])
    tokens, probs, entropies, margins = [], [], [], []
    for row in x:
        if torch.isneginf(row).all():
            tokens.append(0), probs.append(0.0), entropies.append(0.0), margins.append(0.0)
            continue
        p = torch.softmax(row, 0)
        best = max(range(len(row)), key=lambda i: (row[i].item(), -i))
        ordered = sorted(p.tolist(), reverse=True) + [0.0]
        tokens.append(best)
        probs.append(p[best].item())
        entropies.append(-sum(v * math.log(v) for v in p.tolist() if v > 0))
        margins.append(ordered[0] - ordered[1])
    shape = logits.shape[:-1]
    as_t = lambda v, dt: torch.tensor(v, dtype=dt).reshape(shape)  # noqa: E731
    return (as_t(tokens, torch.int64), as_t(probs, torch.float64), as_t(entropies, torch.float64),
            as_t(margins, torch.float64))


def check_confidence(logits):
    token, prob, entropy, margin = K.confidence(logits, want_entropy=True)
    n_token, n_prob, n_entropy, n_margin = naive_confidence(logits)
    assert token.dtype == torch.int64 and prob.dtype == torch.float32
    assert torch.equal(token, n_token)
    torch.testing.assert_close(prob.double(), n_prob, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy.double(), n_entropy, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(margin.double(), n_margin, rtol=1e-5, atol=1e-6)
    token2, prob2 = K.confidence(logits)  # the default (hot) path agrees with the full one
    assert torch.equal(token2, token)
    torch.testing.assert_close(prob2, prob, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5, 1000), (7, 97), (4, 8193), (2,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confidence_random(shape, dtype):
    g = torch.Generator().manual_seed(hash((shape, str(dtype))) % 2**31)
    scale = torch.rand((*shape[:-1], 1), generator=g) * 8  # from flat to peaked distributions
    check_confidence((torch.randn(shape, generator=g) * scale).to(dtype))


def test_confidence_ties_take_the_lowest_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 0.0, 0.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    token, prob, entropy, margin = K.confidence(logits, want_entropy=True)
    assert token.tolist() == [1, 0, 0]
    assert margin.tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(entropy[2], torch.tensor(math.log(4)))
    big = torch.zeros(2, 50000)
    big[:, 40000] = big[:, 49999] = big[:, 12345] = 7.0
    assert K.confidence(big)[0].tolist() == [12345, 12345]
    check_confidence(big)


def test_confidence_neg_inf_logits():
    logits = torch.tensor([
        [-INF, 0.0, -INF, math.log(3.0)],  # -inf entries get probability 0
        [-INF, -INF, -INF, -INF],  # nothing possible: token 0, zeros, and no NaN
        [-INF, -INF, 2.0, -INF],  # a single possible token: certain
    ])
    token, prob, entropy, margin = K.confidence(logits, want_entropy=True)
    assert token.tolist() == [3, 0, 2]
    torch.testing.assert_close(prob, torch.tensor([0.75, 0.0, 1.0]))
    torch.testing.assert_close(margin, torch.tensor([0.5, 0.0, 1.0]))
    assert not torch.isnan(entropy).any() and entropy[1] == 0 and entropy[2] == 0
    check_confidence(logits)


def test_confidence_vocabulary_of_one_and_of_none():
    token, prob, entropy, margin = K.confidence(torch.tensor([[4.0], [-1.0]]), want_entropy=True)
    assert token.tolist() == [0, 0] and prob.tolist() == [1.0, 1.0]
    assert entropy.tolist() == [0.0, 0.0] and margin.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="vocabulary"):
        K.confidence(torch.zeros(3, 0))


def test_confidence_on_a_strided_view_matches_contiguous():
    full = torch.randn(2, 12, 300)
    middle = full[:, 4:9]  # what the sampler takes from (batch, length, vocab) logits
    assert not middle.is_contiguous()
    for a, b in zip(K.confidence(middle, want_entropy=True), K.confidence(middle.contiguous(), want_entropy=True)):
        assert torch.equal(a, b)


def test_confidence_temperature_samples_the_tempered_distribution():
    logits = torch.tensor([0.0, math.log(3.0), -INF]).expand(4000, 3)
    g = torch.Generator().manual_seed(0)
    token, prob = K.confidence(logits, temperature=1.0, generator=g)
    assert set(token.tolist()) <= {0, 1}
    assert 0.70 < token.float().mean().item() < 0.80  # p(token 1) = 0.75
    torch.testing.assert_close(prob, torch.where(token == 1, 0.75, 0.25))
    # Temperature 2 flattens: p(1) = sqrt(3) / (1 + sqrt(3)) ~ 0.634, and the prob follows.
    token, prob = K.confidence(logits, temperature=2.0, generator=g)
    assert 0.58 < token.float().mean().item() < 0.69
    torch.testing.assert_close(prob[token == 1], torch.full_like(prob[token == 1], 3**0.5 / (1 + 3**0.5)))
    # The same generator state gives the same draw; a tiny temperature is the argmax.
    x = torch.randn(50, 40)
    s1 = K.confidence(x, temperature=0.7, generator=torch.Generator().manual_seed(5))
    s2 = K.confidence(x, temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1[0], s2[0])
    assert torch.equal(K.confidence(x, temperature=1e-6)[0], x.argmax(-1))


# ---- commit ------------------------------------------------------------------------------------


def naive_commit(canvas, mask, token, prob, threshold, lo, hi, everything):
    """Row by row in plain Python: the k most confident masked positions, lower position first on
    ties. lo/hi/everything are per-row lists."""
    canvas, mask = canvas.clone(), mask.clone()
    left = []
    for b in range(mask.shape[0]):
        masked = [j for j in range(mask.shape[1]) if mask[b, j]]
        passing = sum(1 for j in masked if prob[b, j].item() >= threshold)
        k = len(masked) if everything[b] else min(len(masked), max(lo[b], min(hi[b], passing)))
        k = max(k, 0)
        for j in sorted(masked, key=lambda j: (-prob[b, j].item(), j))[:k]:
            canvas[b, j] = token[b, j]
            mask[b, j] = False
        left.append(len(masked) - k)
    return canvas, mask, left


def random_commit_case(g, B, M, levels):
    # Few distinct confidence levels, so that ties are common.
    prob = (torch.randint(0, levels, (B, M), generator=g).float() / (levels - 1)) if levels > 1 else torch.full((B, M), 0.5)
    mask = torch.rand((B, M), generator=g) < torch.rand((B, 1), generator=g) * 1.2  # incl. all / none
    canvas = torch.randint(10, 20, (B, M), generator=g)
    token = torch.randint(100, 200, (B, M), generator=g)
    return canvas, mask, token, prob


@pytest.mark.parametrize("seed", range(40))
def test_commit_matches_naive_rule(seed):
    g = torch.Generator().manual_seed(seed)
    B, M = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 24, (1,), generator=g))
    canvas, mask, token, prob = random_commit_case(g, B, M, levels=int(torch.randint(1, 6, (1,), generator=g)))
    threshold = [0.0, 0.5, 0.9, 1.0, 1.1][seed % 5]
    per_row = seed % 2 == 0
    lo = torch.randint(0, 3, (B,), generator=g)
    hi = torch.randint(0, M + 2, (B,), generator=g)
    everything = torch.rand(B, generator=g) < 0.25
    if per_row:
        args = (lo, hi, everything)
        lists = (lo.tolist(), hi.tolist(), everything.tolist())
    else:
        args = (int(lo[0]), None if seed % 3 == 0 else int(hi[0]), bool(everything[0]))
        cap = M if args[1] is None else args[1]
        lists = ([args[0]] * B, [cap] * B, [args[2]] * B)
    want_canvas, want_mask, want_left = naive_commit(canvas, mask, token, prob, threshold, *lists)
    left = K.commit(canvas, mask, token, prob, threshold, *args)
    assert left.dtype == torch.int32 and left.tolist() == want_left
    assert torch.equal(canvas, want_canvas) and torch.equal(mask, want_mask)
    assert left.tolist() == mask.sum(1).tolist()


def test_commit_rules_by_example():
    prob = torch.tensor([[0.95, 0.2, 0.97, 0.5, 0.95]])
    token = torch.tensor([[11, 12, 13, 14, 15]])

    def run(mask, threshold=0.9, **kw):
        canvas, mask = torch.zeros(1, 5, dtype=torch.long), torch.tensor([mask])
        left = K.commit(canvas, mask, token, prob, threshold, **kw)
        return canvas[0].tolist(), int(left[0])

    everyone = [True] * 5
    assert run(everyone) == ([11, 0, 13, 0, 15], 2)  # every position >= threshold
    assert run(everyone, max_commit=2) == ([11, 0, 13, 0, 0], 3)  # cap: top 2, tie -> lower index
    assert run(everyone, threshold=0.99) == ([0, 0, 13, 0, 0], 4)  # none passes: at least one
    assert run(everyone, threshold=0.99, min_commit=0) == ([0] * 5, 5)
    assert run(everyone, threshold=0.99, min_commit=3) == ([11, 0, 13, 0, 15], 2)
    assert run(everyone, threshold=0.99, commit_all=True) == ([11, 12, 13, 14, 15], 0)
    assert run([False, True, False, True, False]) == ([0, 0, 0, 14, 0], 1)  # only masked compete
    assert run([False] * 5, commit_all=True) == ([0] * 5, 0)  # nothing masked: nothing changes


def test_commit_writes_through_a_view_of_the_canvas():
    canvas = torch.full((2, 10), 7)  # prefix 3, middle 4, suffix 3
    mask = torch.ones(2, 4, dtype=torch.bool)
    token = torch.arange(8).reshape(2, 4)
    prob = torch.tensor([[1.0, 0.1, 0.1, 1.0], [0.1, 0.1, 0.1, 0.1]])
    left = K.commit(canvas[:, 3:7], mask, token, prob, 0.9)
    assert left.tolist() == [2, 3]
    assert canvas.tolist() == [[7, 7, 7, 0, 7, 7, 3, 7, 7, 7], [7, 7, 7, 4, 7, 7, 7, 7, 7, 7]]


def test_commit_rejects_mismatched_shapes():
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="prob"):
        K.commit(torch.zeros(2, 4, dtype=torch.long), mask, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5), 0.9)
    with pytest.raises(ValueError, match="bool"):
        K.commit(torch.zeros(2, 4, dtype=torch.long), mask.long(), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4), 0.9)


def test_a_decode_loop_of_confidence_and_commit_settles():
    """The sampler's step: confidence over the masked logits, commit, until no mask is left."""
    g = torch.Generator().manual_seed(1)
    canvas = torch.zeros(3, 16, dtype=torch.long)
    mask = torch.ones(3, 16, dtype=torch.bool)
    steps = 0
    while True:
        token, prob = K.confidence(torch.randn(3, 16, 50, generator=g) * 4)
        left = K.commit(canvas, mask, token, prob, 0.9, min_commit=1, max_commit=4, commit_all=steps == 9)
        steps += 1
        if int(left.max()) == 0:
            break
    assert 4 <= steps <= 10  # at most 4 a step, so at least 4 steps; forced out at step 10
    assert not mask.any() and (canvas > 0).float().mean() > 0.9


# ---- fused model ops ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rmsnorm_is_the_model_residual_and_norm(dtype):
    g = torch.Generator().manual_seed(2)
    norm = RMSNorm(96, 1e-6)
    norm.weight.data = torch.randn(96, generator=g)
    norm = norm.to(dtype)
    x, residual = torch.randn(2, 5, 96, generator=g).to(dtype), torch.randn(2, 5, 96, generator=g).to(dtype)
    with torch.no_grad():
        out, residual_out = K.add_rmsnorm(x, residual, norm.weight, 1e-6)
        assert torch.equal(residual_out, x + residual)
        assert torch.equal(out, norm(x + residual))
    naive = (x + residual).double()
    naive = naive / naive.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * norm.weight.double()
    torch.testing.assert_close(out.double(), naive, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_qk_rotates_pairs_by_position(dtype):
    g = torch.Generator().manual_seed(3)
    B, Hq, Hk, L, D = 2, 4, 2, 7, 16
    q = torch.randn(B, L, Hq, D, generator=g).to(dtype).transpose(1, 2)  # the model's strided view
    k = torch.randn(B, Hk, L, D, generator=g).to(dtype)
    positions = torch.arange(3, 3 + L).expand(B, L)
    cos, sin = rope_tables(positions, D, 10000.0, dtype)
    q_out, k_out = K.rope_qk(q, k, cos, sin)
    # Naive: pair (i, i + D/2) rotated by angle position * theta^(-2i/D), in float64.
    angle = positions.double()[..., None] * 10000.0 ** (-torch.arange(0, D, 2).double() / D)
    c, s = angle.cos()[:, None], angle.sin()[:, None]
    for x, out in ((q, q_out), (k, k_out)):
        x1, x2 = x.double()[..., : D // 2], x.double()[..., D // 2:]
        naive = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)
        tol = dict(rtol=3e-2, atol=3e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.double(), naive, **tol)
        assert out.shape == x.shape and out.dtype == dtype


# ---- backend choice ----------------------------------------------------------------------------


def test_cpu_and_auto_choose_torch_here():
    assert K.get_backend("cpu").name == "torch"
    if not torch.cuda.is_available():
        assert K.get_backend("auto").name == "torch"
        assert K.get_backend(None).name == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_says_why():
    with pytest.raises(K.KernelsUnavailable, match="NVIDIA GPU"):
        K.get_backend("cuda")
    with pytest.raises(K.KernelsUnavailable):
        K.get_backend("cuda:0")


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        K.get_backend("tpu")


def test_backends_share_the_reference_signatures():
    torch_backend = K.TorchBackend()
    for name in ("confidence", "commit", "add_rmsnorm", "rope_qk"):
        assert getattr(torch_backend, name) is getattr(K, name)
        assert callable(getattr(K.CudaBackend, name))


def test_importing_the_kernels_module_loads_no_cupy():
    code = "import sys, mercury_engine.kernels as k; k.get_backend('auto'); print('cupy' in sys.modules)"
    if torch.cuda.is_available():
        code = "import sys, mercury_engine.kernels; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_checkouts_cuda_folder_does_not_hide_nvidias_cuda_namespace(tmp_path):
    """CuPy 14 imports cuda.pathfinder from NVIDIA's `cuda` namespace package, which the
    checkout's cuda/ package shadows when the checkout root is on sys.path."""
    (tmp_path / "cuda" / "probe").mkdir(parents=True)  # a namespace package, like cuda-pathfinder's
    (tmp_path / "cuda" / "probe" / "__init__.py").write_text("FOUND = True\n")
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); sys.path.append({str(tmp_path)!r})\n"
        "import torch, cuda\n"
        "assert cuda.__file__.endswith('__init__.py'), cuda  # shadowed: the checkout's folder\n"
        "from mercury_engine import kernels\n"
        "kernels._import_real_cuda_namespace()\n"
        "import cuda.probe; assert cuda.probe.FOUND\n"
        "from mercury_engine.kernels import kernel_source; assert 'confidence_f32' in kernel_source('confidence')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
