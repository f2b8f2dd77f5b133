"""Few-step infilling diffusion (work in progress: the API below is fixed, the body lands next)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class InfillParams:
    prefix: str
    suffix: str = ""
    language: str = ""
    max_tokens: int = 32
    budget_ms: float = 200.0
    threshold: float = 0.9
    temperature: float = 0.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    single_line: bool = False
    context: list[str] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    tokens: int
    confidence: float


@dataclass
class InfillResult:
    completions: list[Completion]
    steps: int  # denoising steps taken
    forwards: int  # model forward passes (a batch forward counts once for every row in it)
    model_ms: float
    truncated: bool  # the budget forced the remaining masks to be committed at once


class Sampler:
    def __init__(self, loaded, max_context_tokens: int = 512, context_cache: bool = True):
        self.loaded = loaded

    def infill(self, params: InfillParams, deadline: float | None = None) -> InfillResult:
        """One request. `deadline` is a time.monotonic() value; default now + budget_ms."""
        raise NotImplementedError

    def infill_batch(
        self,
        jobs: list[InfillParams],
        deadlines: list[float],
        is_cancelled: Callable[[int], bool] = lambda i: False,
    ) -> list[InfillResult | None]:
        """Requests decoded together in the same forward passes; None for a job cancelled midway.
        `is_cancelled(i)` is polled before every step; a cancelled job stops using steps."""
        raise NotImplementedError

    def warmup(self) -> None:
        raise NotImplementedError
