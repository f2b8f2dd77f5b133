"""The autoregressive baseline decoder on a tiny random causal model with a real tokenizer."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mercury_engine.autoregressive import AutoregressiveDecoder, trim_text
from mercury_engine.config import ModelConfig
from mercury_engine.loader import load_model, save_model
from mercury_engine.model import Transformer
from mercury_engine.sampler import InfillParams

SPECIALS = ["<|mask|>", "<|eom|>", "<|pad|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
CODE = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n", "x = [1, 2, 3]\n"] * 20


def tiny_model_dir(path, causal=True):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CODE, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, causal=causal)
    save_model(Transformer(cfg), path / "tokenizer.json", path / "model")
    return path / "model"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return AutoregressiveDecoder(load_model(tiny_model_dir(tmp_path_factory.mktemp("ar")), device="cpu"))


def test_context_window_is_the_samplers(decoder):
    from mercury_engine.sampler import Sampler

    assert (decoder.max_prefix, decoder.max_suffix) == (Sampler(decoder.loaded).max_prefix, Sampler(decoder.loaded).max_suffix)


def test_prompt_is_suffix_prefix_middle(decoder):
    ids, heal = decoder.prompt_ids("def f(x):\n    return ", "\n\nx = 1\n")
    tok = decoder.tokenizer
    assert ids[0] == tok.hf.token_to_id("<|fim_suffix|>")
    assert ids[-1] == tok.hf.token_to_id("<|fim_middle|>")
    split = ids.index(tok.hf.token_to_id("<|fim_prefix|>"))
    assert tok.decode(ids[1:split]) == "\n\nx = 1\n"
    assert tok.decode(ids[split + 1:-1]) == "def f(x):\n    return"
    assert heal == " "  # token healing: the middle writes the space again with its next word


def test_long_context_keeps_text_nearest_the_cursor(decoder):
    saved = decoder.max_prefix, decoder.max_suffix
    decoder.max_prefix, decoder.max_suffix = 30, 10
    try:
        ids, heal = decoder.prompt_ids("x = [1, 2, 3]\n" * 50 + "HEAD", "TAIL" + "for i in range(10):\n" * 50)
    finally:
        decoder.max_prefix, decoder.max_suffix = saved
    assert len(ids) + len(decoder.tokenizer.encode(heal)) == 30 + 10 + 3
    text = decoder.tokenizer.decode(ids) + heal
    assert "TAIL" in text and "HEAD" in text


def test_kv_cache_decode_matches_recomputing(decoder):
    eom = decoder.loaded.config.eom_token_id
    decoder.loaded.config.eom_token_id = -1  # never stop early: compare the full 24 tokens
    try:
        prompt, _ = decoder.prompt_ids("def add(a, b):\n    ", "\nx = 1\n")
        cached, p1, f1, _ = decoder.generate(prompt, 24, use_cache=True)
        fresh, p2, f2, _ = decoder.generate(prompt, 24, use_cache=False)
    finally:
        decoder.loaded.config.eom_token_id = eom
    assert len(cached) == 24 and f1 == 24
    assert cached == fresh
    assert p1 == pytest.approx(p2, rel=1e-4)


def test_infill_respects_max_tokens_and_single_line(decoder):
    result = decoder.infill(InfillParams(prefix="for i in ", suffix=":\n    pass\n", max_tokens=8, budget_ms=60000))
    assert len(result.completions) == 1
    c = result.completions[0]
    assert c.tokens <= 8 and 0.0 <= c.confidence <= 1.0
    assert result.forwards == result.steps >= 1
    line = decoder.infill(InfillParams(prefix="x = ", max_tokens=30, single_line=True, budget_ms=60000))
    assert "\n" not in line.completions[0].text


def test_infill_stops_at_the_deadline(decoder):
    result = decoder.infill(InfillParams(prefix="x = ", max_tokens=200, budget_ms=60000), deadline=0.0)
    assert result.forwards == 1 and result.completions[0].tokens <= 1


def test_trim_text():
    assert trim_text("a = 1\nb = 2", [], single_line=True) == "a = 1"
    assert trim_text("a = 1\n\nb = 2", ["\n\n"], single_line=False) == "a = 1"
    assert trim_text("abc", ["x", ""], single_line=False) == "abc"


def test_refuses_a_bidirectional_model(tmp_path):
    with pytest.raises(ValueError, match="not a causal model"):
        AutoregressiveDecoder(load_model(tiny_model_dir(tmp_path, causal=False), device="cpu"))


def test_healing_rewrites_the_given_back_word(decoder):
    prompt, heal = decoder.prompt_ids("value = co", "\n")
    assert heal == " co"
    assert decoder.tokenizer.decode(prompt).endswith("value =<|fim_middle|>")
    tokens, _, _, _ = decoder.generate(prompt, 8, heal=heal)
    assert decoder.tokenizer.decode(tokens).startswith(" co")  # a random model, held to the typed text
