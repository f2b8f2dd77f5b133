"""Token healing with the bundled tokenizer (through the sampler: tests/test_sampler.py)."""

import pytest

from mercury_engine.healing import Healer
from mercury_engine.paths import DEFAULT_MODEL_DIR
from mercury_engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json", 0, 1, 2)


@pytest.fixture(scope="module")
def healer(tok):
    return Healer(tok, tok.vocab_size)


@pytest.mark.parametrize("prefix, given_back", [
    ("self._callback = callbac", " callbac"),  # ' call' 'b' 'ac': the whole partial word
    ("import sy", " sy"),
    ("x = ", " "),  # a space the next word's token would carry
    ("    foo.bar(ab", "ab"),
    ("foo(", ""),  # punctuation: a natural token boundary
    ("if x:\n    ", ""),  # indentation is its own token in natural text too
    ("", ""),
])
def test_split_gives_back_the_partial_word(tok, healer, prefix, given_back):
    ids = tok.encode(prefix)
    kept, heal = healer.split(ids)
    assert heal == given_back
    assert tok.decode(kept) + heal == prefix


def test_allowed_tokens_agree_with_the_text_left(tok, healer):
    rest = " callbac"
    allowed = healer.allowed(rest)
    texts = {tok.decode([i]) for i in allowed}
    assert " call" in texts and " " in texts
    assert all(t.startswith(rest) or rest.startswith(t) for t in texts)
    assert " cat" not in texts and "" not in texts
    assert healer.advance(rest, tok.encode(" call")[0]) == "bac"
    assert healer.advance("bac", tok.encode("back")[0]) == ""



def test_blocked_mask_is_the_complement_of_allowed_and_cached(tok, healer):
    mask = healer.blocked(" sy", tok.vocab_size, "cpu")
    assert mask.shape == (tok.vocab_size,)
    assert sorted((~mask).nonzero().flatten().tolist()) == list(healer.allowed(" sy"))
    assert healer.blocked(" sy", tok.vocab_size, "cpu") is mask
