"""Autoregressive infilling with a KV cache: the baseline the diffusion sampler is measured against.

The causal model (ModelConfig.causal=True, same Transformer) is trained on
`<|fim_suffix|> suffix <|fim_prefix|> prefix <|fim_middle|> middle <|eom|>`, so infilling is plain
left-to-right generation after `<|fim_middle|>`: one forward pass per generated token, each pass
feeding only the newest token against the cached keys/values of everything before it. Token
healing as in the Sampler: the first tokens must write the given-back end of the prefix again.
"""

from __future__ import annotations

import math
import time

import torch

from .healing import Healer
from .sampler import Completion, InfillParams, InfillResult

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


class AutoregressiveDecoder:
    """Same call shape as `Sampler.infill`, so the bench can swap one for the other."""

    def __init__(self, loaded, max_prefix_tokens: int = 128, max_suffix_tokens: int = 48, token_healing: bool = True):
        if not loaded.config.causal:
            raise ValueError(f"{loaded.path} is not a causal model (config.json has causal=false)")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        # The diffusion Sampler's context window (and training's), so the comparison is fair.
        self.max_prefix, self.max_suffix = max_prefix_tokens, max_suffix_tokens
        self.fim_prefix, self.fim_suffix, self.fim_middle = (self._special_id(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))
        self.healer = Healer(self.tokenizer, loaded.config.vocab_size) if token_healing else None

    def _special_id(self, token: str) -> int:
        tid = self.tokenizer.hf.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer of {self.loaded.path} has no {token} token; the causal baseline needs it")
        return tid

    def prompt_ids(self, prefix: str, suffix: str) -> tuple[list[int], str]:
        """Suffix-prefix-middle prompt, keeping the context nearest the cursor when it is too long,
        and the text token healing gave back from the prefix's end."""
        pre = self.tokenizer.encode(prefix)[-self.max_prefix:] if self.max_prefix else []
        heal = ""
        if self.healer:
            pre, heal = self.healer.split(pre)
        suf = self.tokenizer.encode(suffix)[: self.max_suffix]
        return [self.fim_suffix, *suf, self.fim_prefix, *pre, self.fim_middle], heal

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float = 0.0,
        should_stop=lambda tokens: False,
        deadline: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        heal: str = "",
    ) -> tuple[list[int], list[float], int, bool]:
        """Tokens (without <|eom|>), their probabilities, forward passes, and whether the deadline cut it.
        `use_cache=False` recomputes the whole sequence every step (only to check the cache)."""
        eom = self.loaded.config.eom_token_id
        ids = torch.tensor([prompt], device=self.device)
        logits, past = self.model(ids, return_kv=True)
        forwards, out, probs, truncated = 1, [], [], False
        while True:
            last = logits[0, -1]
            if heal:  # still writing the given-back text: only tokens that agree with it
                last = last.masked_fill(self.healer.blocked(heal, last.shape[-1], last.device), -math.inf)
            token, p = self._pick(last, temperature, generator)
            if heal:
                heal = self.healer.advance(heal, token)
            if token == eom:
                break
            out.append(token)
            probs.append(p)
            if len(out) >= max_tokens or should_stop(out):
                break
            if deadline is not None and time.monotonic() >= deadline:
                truncated = True
                break
            if use_cache:
                position = torch.tensor([[len(prompt) + len(out) - 1]], device=self.device)
                logits, new = self.model(torch.tensor([[token]], device=self.device), positions=position, past_kv=past, return_kv=True)
                past = [(torch.cat([pk, nk], dim=2), torch.cat([pv, nv], dim=2)) for (pk, pv), (nk, nv) in zip(past, new)]
            else:
                logits = self.model(torch.tensor([prompt + out], device=self.device))
            forwards += 1
        return out, probs, forwards, truncated

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> tuple[int, float]:
        if temperature <= 0:
            probs = torch.softmax(logits.float(), dim=-1)
            token = int(probs.argmax())
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        return token, float(probs[token])

    def infill(self, params: InfillParams, deadline: float | None = None) -> InfillResult:
        start = time.monotonic()
        if deadline is None:
            deadline = start + params.budget_ms / 1000
        prompt, heal = self.prompt_ids(params.prefix, params.suffix)
        completions, forwards, truncated = [], 0, False
        for _ in range(max(1, params.n)):
            tokens, probs, f, cut = self.generate(
                prompt, params.max_tokens, params.temperature, self._stopper(params, heal), deadline, heal=heal
            )
            forwards += f
            truncated |= cut
            text = self.tokenizer.decode(tokens)
            text = text[len(heal):] if text.startswith(heal) else ""  # cut short before healing: nothing
            text = trim_text(text, params.stop, params.single_line)
            confidence = math.exp(sum(map(math.log, probs)) / len(probs)) if probs else 0.0  # as the Sampler
            completions.append(Completion(text=text, tokens=len(tokens), confidence=confidence))
        model_ms = (time.monotonic() - start) * 1000
        return InfillResult(completions=completions, steps=forwards, forwards=forwards, model_ms=model_ms, truncated=truncated)

    def _stopper(self, params: InfillParams, heal: str = ""):
        stops = list(params.stop) + (["\n"] if params.single_line else [])
        if not stops:
            return lambda tokens: False
        return lambda tokens: any(s in self.tokenizer.decode(tokens)[len(heal):] for s in stops)


def trim_text(text: str, stop: list[str], single_line: bool) -> str:
    """Cut the text at the first stop string (and at the first newline for a single-line request)."""
    cuts = [text.find(s) for s in list(stop) + (["\n"] if single_line else []) if s]
    cuts = [c for c in cuts if c >= 0]
    return text[: min(cuts)] if cuts else text
