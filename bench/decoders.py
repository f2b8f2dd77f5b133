"""Turn the in-process decoders (diffusion Sampler, autoregressive baseline) into task completers."""

from __future__ import annotations

import json
import time
from typing import Callable

from .quality import Decoder, Generation

NO_DEADLINE_MS = 600_000.0  # decode/quality measure decoding itself, not the latency budget


def infill_params(request: dict, threshold: float, budget_ms: float = NO_DEADLINE_MS):
    """InfillParams for an editor request (editor_view.editor_request)."""
    from mercury_engine.sampler import InfillParams

    return InfillParams(prefix=request["prefix"], suffix=request["suffix"], max_tokens=request["max_tokens"],
                        budget_ms=budget_ms, threshold=threshold, single_line=request["single_line"])


def _completer(decoder, threshold: float) -> Callable[[dict], Generation]:
    def complete(request: dict) -> Generation:
        params = infill_params(request, threshold)
        start = time.perf_counter()
        result = decoder.infill(params)
        ms = (time.perf_counter() - start) * 1000
        best = result.completions[0] if result.completions else None
        return Generation(text=best.text if best else "", ms=ms, tokens=best.tokens if best else 0, forwards=result.forwards,
                          confidence=best.confidence if best else 0.0)

    return complete


def diffusion_decoder(sampler, threshold: float, copy_prior: bool = True) -> Decoder:
    label = ("one token/step" if threshold > 1.0 else f"threshold {threshold:g}") + ("" if copy_prior else ", no copy prior")
    infill = _completer(sampler, threshold)

    def complete(request: dict) -> Generation:
        sampler.copy_prior = copy_prior
        try:
            return infill(request)
        finally:
            sampler.copy_prior = True

    return Decoder(label, complete, "diffusion", threshold, copy_prior)


def autoregressive_decoder(decoder) -> Decoder:
    return Decoder("autoregressive", _completer(decoder, 0.0), "autoregressive", None, False)


def given_decoder(path: str) -> Decoder:
    """Completions read from a JSONL file of task_id and completion (another tool's output)."""
    given = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                given[row["task_id"]] = row.get("completion", "")
    return Decoder("given completions", lambda request: Generation(text=given.get(request["task_id"], "")), "given", None, False)


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
    decoder.infill(infill_params({"prefix": "x = ", "suffix": "\n", "max_tokens": 4, "single_line": False}, 0.0))  # warm up like the sampler
    return decoder
