"""Turn the in-process decoders (diffusion Sampler, autoregressive baseline) into task completers."""

from __future__ import annotations

import time
from typing import Callable

from .quality import Generation

NO_DEADLINE_MS = 600_000.0  # decode/quality measure decoding itself, not the latency budget


def infill_params(task: dict, threshold: float, max_tokens: int | None = None, budget_ms: float = NO_DEADLINE_MS):
    from mercury_engine.sampler import InfillParams

    return InfillParams(
        prefix=task["prompt"], suffix=task["suffix"], language="python",
        max_tokens=max_tokens or int(task.get("max_tokens") or 64), budget_ms=budget_ms,
        threshold=threshold, single_line=task.get("kind") == "single_line",
    )


def _completer(decoder, threshold: float, max_tokens: int | None) -> Callable[[dict], Generation]:
    def complete(task: dict) -> Generation:
        params = infill_params(task, threshold, max_tokens)
        start = time.perf_counter()
        result = decoder.infill(params)
        ms = (time.perf_counter() - start) * 1000
        best = result.completions[0] if result.completions else None
        return Generation(text=best.text if best else "", ms=ms, tokens=best.tokens if best else 0, forwards=result.forwards,
                          confidence=best.confidence if best else 0.0)

    return complete


def diffusion_completer(sampler, threshold: float, max_tokens: int | None = None):
    return _completer(sampler, threshold, max_tokens)


def autoregressive_completer(decoder, max_tokens: int | None = None):
    return _completer(decoder, 0.0, max_tokens)


def load_diffusion(model_dir: str | None, device: str = "auto", context_cache: bool = True):
    """(Sampler, LoadedModel) for a diffusion model folder, warmed up."""
    from mercury_engine.loader import load_model
    from mercury_engine.sampler import Sampler

    loaded = load_model(model_dir, device=device)
    if loaded.config.causal:
        raise ValueError(f"{loaded.path} is a causal model: pass it as --ar-model, not --model")
    sampler = Sampler(loaded, context_cache=context_cache)
    sampler.warmup()
    return sampler, loaded


def load_autoregressive(model_dir: str, device: str = "auto"):
    from mercury_engine.autoregressive import AutoregressiveDecoder
    from mercury_engine.loader import load_model

    decoder = AutoregressiveDecoder(load_model(model_dir, device=device))
    decoder.infill(infill_params({"prompt": "x = ", "suffix": "\n"}, 0.0, 4))  # warm up like the sampler
    return decoder
