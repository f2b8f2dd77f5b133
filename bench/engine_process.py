"""Start a `mercury-engine serve` for a bench run (unless one is given) and stop it afterwards."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class BenchEngine:
    """An engine on a private socket in a temporary folder; its log is kept for error messages."""

    def __init__(self, model: str | None = None, device: str = "auto", extra: list[str] | None = None):
        self.tmp = tempfile.TemporaryDirectory(prefix="mercury-bench-")
        self.socket_path = Path(self.tmp.name) / "engine.sock"
        self.log_path = Path(self.tmp.name) / "engine.log"
        cmd = [sys.executable, "-m", "mercury_engine.cli", "serve", "--socket", str(self.socket_path), "--device", device]
        if model:
            cmd += ["--model", str(model)]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd + list(extra or []), stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> "BenchEngine":
        from mercury_engine.client import EngineUnavailable, call

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the engine exited with status {self.proc.returncode}:\n{self.log_text()}")
            try:
                if call("health", socket_path=self.socket_path, timeout=5)["ready"]:
                    return self
            except (EngineUnavailable, EOFError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the engine was not ready after {timeout:g} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()

    def __enter__(self) -> "BenchEngine":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def engine_stats(socket_path) -> dict:
    from mercury_engine.client import call

    return call("stats", socket_path=socket_path, timeout=30)
