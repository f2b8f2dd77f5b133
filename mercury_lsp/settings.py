"""User settings from initializationOptions and workspace/didChangeConfiguration."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields


@dataclass
class Settings:
    enabled: bool = True
    budget_ms: float = 250.0  # whole request, from arrival to answer
    max_tokens: int = 48
    debounce_ms: float = 15.0  # automatic triggers only
    context_chars: int = 6000  # text sent around the cursor, 3/4 before, 1/4 after
    engine_socket: str | None = None  # Unix socket path or tcp://127.0.0.1:PORT; default: the user's runtime dir
    engine_command: list[str] | None = None  # default: mercury-engine next to this interpreter
    engine_autostart: bool = True
    model: str | None = None  # model folder for an engine this server starts
    engine_device: str | None = None  # --device for an engine this server starts
    prefetch: bool = True  # after a suggestion, ask for the next one as if it were accepted
    # Hide a completion whose confidence (the engine's geometric mean of its tokens' probabilities)
    # is below this: no ghost text beats a wrong one. `mercury-bench decode` prints what each value
    # would show and hide; re-read it when the model changes. 0 shows everything.
    min_confidence: float = 0.3

    def update(self, options) -> list[str]:
        """Apply a settings map (flat, or under a "mercury" key; camelCase or snake_case keys).
        Returns one message per value that was ignored."""
        if not isinstance(options, dict):
            return [] if options is None else [f"settings must be an object, got {type(options).__name__}"]
        if isinstance(options.get("mercury"), dict):
            options = options["mercury"]
        problems = []
        known = {f.name: f for f in fields(self)}
        for raw_key, value in options.items():
            key = ALIASES.get(snake_case(str(raw_key)), snake_case(str(raw_key)))
            if key not in known:
                continue  # other tools' settings may share the map
            try:
                setattr(self, key, coerce(key, value))
            except (TypeError, ValueError) as e:
                problems.append(f"setting {raw_key!r} ignored: {e}")
        return problems


ALIASES = {"model_dir": "model", "socket": "engine_socket", "debounce": "debounce_ms", "budget": "budget_ms"}
DEVICES = ("auto", "cpu", "cuda")
LIMITS = {"budget_ms": (10, 60_000), "max_tokens": (1, 256), "debounce_ms": (0, 5_000), "context_chars": (64, 200_000),
          "min_confidence": (0, 1)}


def snake_case(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def coerce(key: str, value):
    if key in ("enabled", "engine_autostart", "prefetch"):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if key in LIMITS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number")
        low, high = LIMITS[key]
        if not low <= value <= high:
            raise ValueError(f"expected {low}..{high}")
        return int(value) if key in ("max_tokens", "context_chars") else float(value)
    if key == "engine_command":
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return shlex.split(value)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise TypeError("expected a command string or a list of strings")
    if value is None or value == "":
        return None  # back to the default
    if not isinstance(value, str):
        raise TypeError("expected a string")
    if key == "engine_device" and value not in DEVICES:
        raise ValueError(f"expected one of {', '.join(DEVICES)}")
    return value
