"""Counters and latency percentiles the server reports through `mercury/stats`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[i], 2)


@dataclass
class Stats:
    requests: int = 0  # inline/completion requests received
    served: int = 0  # answered with a suggestion
    empty: int = 0  # answered with nothing (no context, engine not ready, nothing useful left...)
    cache_hits: int = 0  # served from the cache at the same position
    typed_through: int = 0  # served from the cache after the user typed part of a suggestion
    engine_calls: int = 0
    engine_errors: int = 0  # engine not ready, down, slow or answering an error
    low_confidence: int = 0  # engine answers hidden because their confidence was under minConfidence
    superseded: int = 0  # dropped because a newer request for the same document arrived
    cancelled: int = 0  # cancelled by the client ($/cancelRequest)
    prefetch_calls: int = 0  # engine requests for the position after an acceptance
    prefetched: int = 0  # suggestions they put in the cache
    last_ms: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # suggestions served
    engine_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # engine round trips

    def record_served(self, ms: float) -> None:
        self.served += 1
        self.last_ms = round(ms, 2)
        self.latencies_ms.append(ms)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        eng = sorted(self.engine_ms)
        return {
            "requests": self.requests,
            "served": self.served,
            "empty": self.empty,
            "cache_hits": self.cache_hits,
            "typed_through": self.typed_through,
            "engine_calls": self.engine_calls,
            "engine_errors": self.engine_errors,
            "low_confidence": self.low_confidence,
            "superseded": self.superseded,
            "cancelled": self.cancelled,
            "prefetch_calls": self.prefetch_calls,
            "prefetched": self.prefetched,
            "latency_ms": {"p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95),
                           "p99": percentile(lat, 0.99), "last": self.last_ms, "count": len(lat)},
            "engine_ms": {"p50": percentile(eng, 0.5), "p95": percentile(eng, 0.95),
                          "p99": percentile(eng, 0.99), "count": len(eng)},
        }
