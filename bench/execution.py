"""Run an untrusted candidate program in a child process: time limit, memory limit, no network.

The program is executed as a module named `__mercury_task__` (not `__main__`), so a source file's
`if __name__ == "__main__":` block does not start its own test runner.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Without a private network namespace, refuse outgoing connections from inside the child.
HARNESS = r"""
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
if sys.argv[2] == "guard":
    def _refuse(*args, **kwargs):
        raise OSError("network access is disabled while running a candidate")
    _connect = socket.socket.connect
    def _connect_local(self, address):
        if self.family != socket.AF_UNIX:
            _refuse()
        return _connect(self, address)
    socket.socket.connect = _connect_local
    socket.socket.connect_ex = _connect_local
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    source = f.read()
namespace = {"__name__": "__mercury_task__", "__file__": path, "__builtins__": __builtins__}
exec(compile(source, path, "exec"), namespace)
"""

@dataclass
class RunResult:
    status: str  # "passed", "failed" or "timeout"
    detail: str  # last line of stderr for a failure


@functools.cache
def can_unshare_network() -> bool:
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_program(source: str, timeout: float = 10.0) -> RunResult:
    """Run `source` in a fresh interpreter in an empty temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mercury-task-") as tmp:
        path = Path(tmp) / "task.py"
        path.write_text(source, encoding="utf-8")
        isolated = can_unshare_network()
        cmd = [sys.executable, "-I", "-c", HARNESS, str(path), "netns" if isolated else "guard"]
        if isolated:
            cmd = ["unshare", "--net", *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp, "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the candidate may have forked
            proc.communicate()
            return RunResult("timeout", f"ran past {timeout:g} s")
        if proc.returncode == 0:
            return RunResult("passed", "")
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return RunResult("failed", lines[-1][:300] if lines else f"exit status {proc.returncode}")


def build_program(prompt: str, completion: str, suffix: str, test: str, entry_point: str) -> str:
    """The HumanEval-infilling program: prompt + completion + suffix + test + check(entry_point)."""
    return f"{prompt}{completion}{suffix}\n\n{test}\n\ncheck({entry_point})\n"
