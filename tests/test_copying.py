"""The context copy prior (copying.py): the lookup itself, the mixing, and what it does inside the
real Sampler with a model that cannot know the answer (random weights)."""

import math

import pytest
import torch

from mercury_engine import copying
from mercury_engine.loader import load_model
from mercury_engine.sampler import InfillParams, Sampler


def test_followers_takes_the_longest_match_and_every_occurrence():
    prefix = [5, 6, 7, 8, 9, 6, 7, 3, 1, 7, 4]
    # known ends with 6, 7: the two-token match (6 7 -> 8, 6 7 -> 3) wins over the one-token one
    # (7 -> 8, 3, 4); the matches' followers all count
    assert copying.followers([2, 6, 7], [prefix]) == ([8, 3], 2)
    assert copying.followers([2, 5, 6, 7], [prefix]) == ([8], 3)
    assert copying.followers([42], [prefix]) == ([], 0)
    assert copying.followers([], [prefix]) == ([], 0)


def test_a_match_never_runs_across_the_cursor():
    # prefix and suffix are not contiguous: the prefix's own end is no match whose follower is the
    # suffix's first token
    prefix, suffix = [4, 5, 6], [9, 9]
    assert copying.followers(prefix, [prefix, suffix]) == ([], 0)
    assert copying.followers([1, 9], [prefix, suffix]) == ([9], 1)  # inside the suffix it counts


EOM = 0


def test_mix_copy_reshapes_content_but_not_the_decision_to_end():
    logits = torch.tensor([1.5, 0.0, 1.6, -math.inf, 1.0])  # no token above 1/2: the full weight
    # token 3 is banned (-inf): never copied in; end-of-middle in the context is not copied either
    mixed = copying.mix_copy(logits, [3, 4, 4, EOM], 2, EOM)
    p, model_p = mixed.exp(), torch.softmax(logits, -1)
    w, end = copying.COPY_WEIGHTS[1], model_p[EOM].item()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert p[3].item() == 0.0
    assert p[EOM].item() == pytest.approx(end, abs=1e-6)
    assert p[4].item() == pytest.approx((1 - w) * model_p[4].item() + w * (1 - end), abs=1e-6)
    assert p[2].item() == pytest.approx((1 - w) * model_p[2].item(), abs=1e-6)
    assert torch.equal(copying.mix_copy(logits, [3, EOM], 1, EOM), logits)  # nothing to copy: unchanged


def test_a_sure_model_keeps_its_answer():
    logits = torch.tensor([0.0, 6.0, 0.0, 0.0])  # token 1 at about 99%
    p = copying.mix_copy(logits, [2] * 5, len(copying.COPY_WEIGHTS), EOM).exp()
    assert p[1] > 0.9 and p[2] < 0.1


def test_the_sampler_copies_a_call_it_has_seen(tiny_model_dir):
    # random weights know nothing; the argument list can only come from the prefix
    loaded = load_model(tiny_model_dir, device="cpu")
    params = InfillParams(prefix="total = weighted(alpha, beta)\nprint(weighted(", suffix="\n", max_tokens=12,
                          budget_ms=60_000, threshold=0.999, single_line=True)
    with_copy = Sampler(loaded).infill(params).completions[0].text
    without = Sampler(loaded, copy_prior=False).infill(params).completions[0].text
    assert with_copy.startswith("alpha, beta)")
    assert not without.startswith("alpha, beta)")
