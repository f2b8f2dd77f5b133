"""A bidirectional Qwen2-style transformer in plain PyTorch (gpt-fast style).

Parameter names follow Hugging Face Qwen2 (`model.layers.0.self_attn.q_proj.weight`, ...), so the
open diffusion coders of that family (DiffuCoder, Dream-Coder, DreamOn, Open-dCoder) load as-is.
Attention is full (bidirectional) unless the config says `causal` (the autoregressive baseline).

The forward pass serves three callers:
- training: all positions in, logits only at `out_idx` (where there is loss);
- the sampler's first step: the whole canvas in, `return_kv=True` to keep the context keys/values;
- the sampler's cached steps: only the active (middle) tokens in, attending to `past_kv` + themselves.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (B, 1, L, head_dim) for integer positions (B, L); Hugging Face half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def math_attention(q, k, v, mask):
    """Attention as three plain ops: in bf16 on a CPU (training under autocast) this is about 3x
    faster than torch's CPU flash kernel, forward and backward, at these short lengths."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, past_kv=None):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        new_kv = (k, v)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        if self.n_kv != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        if q.device.type == "cpu" and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
            y = math_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, -1)), new_kv


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, past_kv=None):
        h, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_kv)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small normal init (as Qwen2): default nn.Embedding N(0, 1) would blow up tied logits.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        positions: torch.Tensor | None = None,  # (B, L) rotary positions; default 0..L-1
        key_valid: torch.Tensor | None = None,  # (B, P+L) bool: which keys may be attended (past first)
        past_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,  # per layer (B, n_kv, P, D)
        out_idx: torch.Tensor | None = None,  # (B, K) positions whose logits are wanted, or (N,)
        # indices into the flattened (B * L) positions (training: only where there is loss); default all
        return_kv: bool = False,
    ):
        B, L = input_ids.shape
        if positions is None:
            positions = torch.arange(L, device=input_ids.device).expand(B, L)
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        mask = self._mask(B, L, key_valid, past_kv, input_ids.device)
        kvs = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, cos, sin, mask, None if past_kv is None else past_kv[i])
            if return_kv:
                kvs.append(kv)
        if out_idx is not None and out_idx.dim() == 1:
            x = x.flatten(0, 1)[out_idx]
        elif out_idx is not None:
            x = x.gather(1, out_idx[..., None].expand(-1, -1, x.shape[-1]))
        logits = self.lm_head(self.model.norm(x))
        return (logits, kvs) if return_kv else logits

    def _mask(self, B, L, key_valid, past_kv, device):
        P = 0 if past_kv is None else past_kv[0][0].shape[2]
        if self.config.causal:
            causal = torch.ones(L, P + L, dtype=torch.bool, device=device).tril(P)
            mask = causal[None, None].expand(B, 1, L, P + L)
            return mask if key_valid is None else mask & key_valid[:, None, None, :]
        if key_valid is None:
            return None
        return key_valid[:, None, None, :]

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.model.embed_tokens.weight.numel() if exclude_embeddings else n
