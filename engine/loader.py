"""Load a model folder (config.json, *.safetensors, tokenizer.json) onto a device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import ModelConfig
from .model import Transformer
from .paths import DEFAULT_MODEL_DIR
from .tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    device: torch.device
    path: Path


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 matmuls run about 2.5x fp32 on CPUs with AVX-512 BF16 (measured on this EPYC; an engine
    forward 13.4 -> 10.1 ms), and much slower than fp32 on CPUs without it."""
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_state(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_model(model_dir: str | Path | None = None, device: str = "auto", dtype: torch.dtype | None = None) -> LoadedModel:
    path = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    if not (path / "config.json").exists():
        hint = "pass --model DIR with config.json, model.safetensors and tokenizer.json"
        raise FileNotFoundError(f"no model at {path} ({hint})")
    cfg = ModelConfig.load(path / "config.json")
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if bf16_is_fast(dev) else torch.float32
    model = Transformer(cfg)
    state = load_state(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model = model.to(device=dev, dtype=dtype).eval()
    tok = Tokenizer(path / "tokenizer.json", cfg.mask_token_id, cfg.eom_token_id, cfg.pad_token_id)
    return LoadedModel(model, tok, cfg, dev, path)


def save_model(model: Transformer, tokenizer_json: str | Path, out_dir: str | Path, card: dict | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Write a folder `load_model` reads: config.json, model.safetensors (in `dtype`, default the
    model's own), tokenizer.json (+ card)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save(out / "config.json")
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tmp = out / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    if Path(tokenizer_json).resolve() != (out / "tokenizer.json").resolve():
        (out / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    if card is not None:
        (out / "training_card.json").write_text(json.dumps(card, indent=2) + "\n")
