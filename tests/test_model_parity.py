"""Our Qwen2-style model against Hugging Face transformers, run with full bidirectional attention."""

from pathlib import Path

import pytest
import torch

from mercury_engine.config import ModelConfig
from mercury_engine.loader import load_state
from mercury_engine.model import Transformer

transformers = pytest.importorskip("transformers")


def random_hf_model(tmp_path: Path, tie: bool):
    torch.manual_seed(1)
    hc = transformers.Qwen2Config(
        vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tie, rope_theta=50000.0,
        rms_norm_eps=1e-6,
    )
    hf = transformers.Qwen2ForCausalLM(hc).eval()
    with torch.no_grad():  # random biases, so a missing q/k/v bias would show
        for layer in hf.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    hf.save_pretrained(tmp_path)
    return hf


def load_ours(path: Path) -> Transformer:
    cfg = ModelConfig.load(path / "config.json")
    model = Transformer(cfg)
    missing, unexpected = model.load_state_dict(load_state(path), strict=False)
    assert not unexpected
    assert missing in ([], ["lm_head.weight"])
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_transformers_bidirectional(tmp_path, tie):
    hf = random_hf_model(tmp_path, tie)
    ours = load_ours(tmp_path)
    assert ours.config.rope_theta == 50000.0 and ours.config.attention_bias
    ids = torch.randint(0, 320, (2, 23))
    full_attention = torch.zeros(2, 1, 23, 23)  # additive 4D mask: everyone sees everyone
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=full_attention).logits
        causal = hf(input_ids=ids).logits
        out = ours(ids)
    assert (ref - out).abs().max().item() <= 1e-4
    assert (causal - out).abs().max().item() > 1e-2  # the comparison can tell the two apart


def test_causal_config_matches_transformers_causal(tmp_path):
    hf = random_hf_model(tmp_path, tie=False)
    ours = load_ours(tmp_path)
    ours.config.causal = True
    ids = torch.randint(0, 320, (1, 19))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - ours(ids)).abs().max().item() <= 1e-4


def test_cached_context_step_equals_full_forward(tmp_path):
    """The sampler's cached step (active tokens against stored context keys/values) reproduces
    the full forward on an unchanged canvas, with left padding and per-row positions."""
    random_hf_model(tmp_path, tie=True)
    model = load_ours(tmp_path)
    B, L, a, b = 2, 30, 12, 20  # active columns [a, b)
    ids = torch.randint(3, 320, (B, L))
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, :5] = False  # row 1 is left-padded
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full, kv = model(ids, positions, valid, return_kv=True)
        ctx = torch.cat([torch.arange(0, a), torch.arange(b, L)])
        past = [(k[:, :, ctx], v[:, :, ctx]) for k, v in kv]
        key_valid = torch.cat([valid[:, ctx], valid[:, a:b]], 1)
        step = model(ids[:, a:b], positions[:, a:b], key_valid, past_kv=past)
    assert (full[:, a:b] - step).abs().max().item() <= 1e-4


def test_dream_family_config_conventions():
    cfg = ModelConfig.from_dict({
        "model_type": "Dream", "vocab_size": 152064, "hidden_size": 896, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
        "rope_theta": 1000000.0, "mask_token_id": 151666, "eos_token_id": 151643, "pad_token_id": 151643,
        "tie_word_embeddings": False,
    })
    assert cfg.logits_shift and cfg.attention_bias
    assert (cfg.mask_token_id, cfg.eom_token_id, cfg.pad_token_id) == (151666, 151643, 151643)
    assert cfg.rope_theta == 1e6 and cfg.head_dim == 64
