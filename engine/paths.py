"""Where the engine's socket and lock live. Torch-free: the language server imports it too."""

from __future__ import annotations

import os
from pathlib import Path


# The bundled model; here (torch-free) so `serve` can check for it before torch loads.
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"


def runtime_dir() -> Path:
    """A user-private (0700) directory: $XDG_RUNTIME_DIR/mercury, else the user cache dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        d = Path(base) / "mercury"
    else:
        d = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mercury"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def default_socket_path() -> Path:
    return runtime_dir() / "engine.sock"


def lock_path(socket_path: str | Path) -> Path:
    """Lock file held while an engine is being started for this socket, so two editors start one."""
    return Path(str(socket_path) + ".lock")
