"""Model configuration, read from and written to a Hugging Face style config.json (Qwen2 keys)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = True  # Qwen2 has q/k/v biases; o_proj never does
    tie_word_embeddings: bool = True
    # Diffusion conventions. Dream-family checkpoints predict token i at position i-1.
    logits_shift: bool = False
    mask_token_id: int = 0
    eom_token_id: int = 1  # end-of-middle: pads a middle shorter than the canvas
    pad_token_id: int = 2
    bos_token_id: int | None = None
    causal: bool = False  # autoregressive baseline trained with the same architecture
    model_type: str = "qwen2"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "rope_theta" not in d and isinstance(d.get("rope_parameters"), dict):  # transformers >= 5
            kw["rope_theta"] = d["rope_parameters"].get("rope_theta", cls.rope_theta)
        # Hugging Face configs of the Dream family: shifted logits, mask id, eos as end-of-middle.
        if "logits_shift" not in d and str(d.get("model_type", "")).lower().startswith("dream"):
            kw["logits_shift"] = True
        if "mask_token_id" not in d and "mask_token_id" in d.get("mercury", {}):
            kw["mask_token_id"] = d["mercury"]["mask_token_id"]
        if "eom_token_id" not in d and d.get("eos_token_id") is not None:
            eos = d["eos_token_id"]
            kw["eom_token_id"] = eos[0] if isinstance(eos, list) else eos
        if "pad_token_id" not in d or d.get("pad_token_id") is None:
            kw["pad_token_id"] = kw.get("eom_token_id", cls.pad_token_id)
        if "attention_bias" not in d and d.get("model_type") in ("qwen2", "Dream", "dream"):
            kw["attention_bias"] = True
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["architectures"] = ["Qwen2ForCausalLM"]
        d["eos_token_id"] = self.eom_token_id
        d["hidden_act"] = "silu"
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
