"""Sampler behaviour on a model that has memorized a few infilling examples.

The model is trained for a few seconds in the fixture (the project's own diffusion objective), so
its answers are known: that makes length, threshold, budget and batching observable. Most checks
go through a real `mercury-engine serve` process; the cache comparison runs in-process. The
commit order is checked on the random model, whose confidences are scattered.
"""

import time

import numpy as np
import pytest
import torch

from mercury_engine import kernels
from mercury_engine.client import EngineClient
from mercury_engine.config import ModelConfig
from mercury_engine.healing import Healer
from mercury_engine.loader import load_model, save_model
from mercury_engine.model import Transformer
from mercury_engine.sampler import InfillParams, Sampler
from mercury_engine.tokenizer import Tokenizer
from mercury_engine.train import batch_loss, diffusion_batch

EXAMPLES = [
    ("def add(a, b):\n    return ", "a + b", "\n\n\ndef sub(a, b):\n"),
    ("class Point:\n    def __init__(self, x, y):\n", "        self.x = x\n        self.y = y", "\n\n    def norm(self):\n"),
    ("for item in items:\n    ", "print(item)", "\nprint('done')\n"),
]
# the cursor after "pri": the engine gives " pri" back and the middle writes it again; memorized
# as the engine cuts it (a toy model does not generalise from the example above)
TYPING = ("for item in items:\n    pri", "nt(item)", "\nprint('done')\n")
K = 16


@pytest.fixture(scope="session")
def memorized_model_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("memorized")
    tok = Tokenizer(tiny_model_dir / "tokenizer.json", 0, 1, 2)
    healer = Healer(tok, tok.vocab_size)  # the engine heals a prefix ending in a word or a space
    examples = []
    for p, m, s in EXAMPLES + [TYPING]:
        pre, heal = healer.split(tok.encode(p))
        examples.append((pre, tok.encode(heal + m), tok.encode(s), ""))
    assert all(len(m) < K for _, m, _, _ in examples)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: more threads only contend with the engines under test
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        loss, _, _ = batch_loss(model, diffusion_batch(examples * 4, K, rng, 2, 0, 1), "cpu")
        loss.backward()
        opt.step()
        opt.zero_grad()
    save_model(model, tiny_model_dir / "tokenizer.json", out)
    return out


@pytest.fixture(scope="session")
def sampler(memorized_model_dir):
    return Sampler(load_model(memorized_model_dir, device="cpu"))


@pytest.fixture
def memorized_engine(start_engine, memorized_model_dir):
    proc = start_engine(model_dir=memorized_model_dir)
    with EngineClient(proc.socket_path, timeout=60) as client:
        yield client


def test_length_comes_from_end_of_middle(memorized_engine):
    for prefix, middle, suffix in EXAMPLES:
        r = memorized_engine.infill(prefix, suffix, max_tokens=K, threshold=0.9, budget_ms=10_000)
        best = r["completions"][0]
        assert best["text"] == middle
        assert best["tokens"] < K  # the canvas was longer; end-of-middle tokens were stripped


def test_lower_threshold_takes_fewer_forwards(memorized_engine):
    prefix, middle, suffix = EXAMPLES[1]
    forwards = {}
    for threshold in (0.0, 0.9, 1.0):
        r = memorized_engine.infill(prefix, suffix, max_tokens=K, threshold=threshold, budget_ms=10_000)
        forwards[threshold] = r["timings"]["forwards"]
        assert r["completions"][0]["text"] == middle
    assert forwards[0.0] == 1  # everything committed in one step
    assert forwards[0.0] <= forwards[0.9] <= forwards[1.0]
    assert forwards[1.0] >= 4  # one token per step needs a step per token of the middle


def test_budget_commits_everything_when_time_is_up(memorized_engine):
    prefix, middle, suffix = EXAMPLES[1]
    r = memorized_engine.infill(prefix, suffix, max_tokens=K, threshold=1.0, budget_ms=0.5)
    assert r["timings"]["forwards"] == 1 and r["truncated"]
    assert r["completions"][0]["text"]  # a greedy answer, not nothing


def test_single_line_and_stop_strings(memorized_engine):
    prefix, middle, suffix = EXAMPLES[1]
    r = memorized_engine.infill(prefix, suffix, max_tokens=K, single_line=True, budget_ms=10_000)
    assert r["completions"][0]["text"] == middle.split("\n")[0]
    prefix, middle, suffix = EXAMPLES[0]
    r = memorized_engine.infill(prefix, suffix, max_tokens=K, stop=[" +"], budget_ms=10_000)
    assert r["completions"][0]["text"] == "a"


def test_context_cache_gives_the_same_answers(sampler, memorized_model_dir):
    uncached = Sampler(load_model(memorized_model_dir, device="cpu"), context_cache=False)
    for prefix, middle, suffix in EXAMPLES:
        p = InfillParams(prefix=prefix, suffix=suffix, max_tokens=K, budget_ms=10_000)
        assert sampler.infill(p).completions[0].text == uncached.infill(p).completions[0].text == middle


def test_batched_requests_get_their_own_answers(sampler):
    # prefixes of different lengths (left padding) and different thresholds share the forwards;
    # the memorized model only knows a canvas of K slots, so every job asks for K
    jobs = [InfillParams(prefix=p, suffix=s, max_tokens=K, budget_ms=10_000, threshold=t)
            for (p, m, s), t in zip(EXAMPLES, (0.9, 0.5, 1.0))]
    cancelled = {1}
    out = sampler.infill_batch(jobs, [time.monotonic() + 10] * 3, is_cancelled=lambda i: i in cancelled)
    assert out[1] is None
    assert out[0].completions[0].text == EXAMPLES[0][1]
    assert out[2].completions[0].text == EXAMPLES[2][1]


def test_sampler_finishes_a_word_the_user_is_typing(sampler):
    # the healed canvas is memorized: what is checked is that the given-back " pri" is written
    # again first and only the new text comes back
    r = sampler.infill(InfillParams(prefix=TYPING[0], suffix=TYPING[2], max_tokens=16, budget_ms=10_000))
    assert r.completions[0].text == TYPING[1]
    plain = sampler.infill(InfillParams(prefix="for item in items:\n    ", suffix="\nprint('done')\n",
                                        max_tokens=16, budget_ms=10_000))
    assert plain.completions[0].text == "print(item)"


class RecordingBackend(kernels.TorchBackend):
    """The real torch backend, noting what each commit call took: (candidates before, after)."""

    def __init__(self):
        self.calls = []

    def commit(self, canvas_mid, mask, *args, **kwargs):
        before = mask.clone()
        out = super().commit(canvas_mid, mask, *args, **kwargs)
        self.calls.append((before, mask.clone()))
        return out


def test_commits_grow_left_to_right_from_the_first_masked_slot(tiny_model_dir):
    # The random model's confidences are scattered: at threshold 0.3 many slots pass, in no order.
    backend = RecordingBackend()
    sampler = Sampler(load_model(tiny_model_dir, device="cpu"), backend=backend, token_healing=False)
    jobs = [InfillParams(prefix=p, suffix=s, max_tokens=K, budget_ms=10_000, threshold=0.3) for p, _, s in EXAMPLES]
    sampler.infill_batch(jobs, [time.monotonic() + 10] * len(jobs))
    multi = 0
    for before, after in backend.calls:
        for row_before, row_after in zip(before, after):
            taken = (row_before & ~row_after).nonzero().flatten().tolist()
            left = row_after.nonzero().flatten().tolist()
            if taken:
                assert taken == list(range(taken[0], taken[0] + len(taken)))  # one run
                assert taken[0] == row_before.nonzero()[0, 0]  # from the first masked slot
                assert not left or max(taken) < min(left)  # nothing committed behind a mask
                multi += len(taken) > 1
    assert multi > 0  # a confident run is still committed in one step
