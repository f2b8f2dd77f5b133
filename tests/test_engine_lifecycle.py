"""Engine process lifecycle: start, not-ready answers, idle exit, shutdown, signals, socket
ownership, the CLI's health/stats/stop and its errors."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from mercury_engine.client import EngineClient, EngineError, EngineUnavailable
from mercury_engine.protocol import NOT_READY

TIMEOUT = 60.0


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mercury_engine.cli", *args], capture_output=True, text=True, timeout=timeout)


def wait_for_socket(path, proc, timeout: float = TIMEOUT) -> EngineClient:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "engine exited early"
        try:
            return EngineClient(path, timeout=TIMEOUT)
        except EngineUnavailable:
            time.sleep(0.01)
    raise AssertionError("engine socket never appeared")


def test_not_ready_is_answered_at_once_while_the_model_loads(start_engine, tiny_model_dir, tmp_path):
    """config.json is a FIFO here, so loading blocks until the test writes it: a window in which
    the engine must answer infill with -32002 and health with ready=false."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (model / name).symlink_to(tiny_model_dir / name)
    os.mkfifo(model / "config.json")
    eng = start_engine(ready=False, model_dir=model)
    with wait_for_socket(eng.socket_path, eng.proc) as c:
        h = c.request("health")
        assert h["ready"] is False
        with pytest.raises(EngineError) as err:
            c.request("infill", {"prefix": "def f("}, timeout=10)  # generous; a loading engine answers in ms
        assert err.value.code == NOT_READY
        assert c.request("stats")["ready"] is False
        with open(model / "config.json", "w") as fifo:  # unblocks the loader
            fifo.write((tiny_model_dir / "config.json").read_text())
        eng.wait_ready()
        assert c.infill("def f(", max_tokens=4)["completions"]


def test_socket_and_its_new_folder_are_private(start_engine, tmp_path_factory):
    nested = tmp_path_factory.mktemp("priv") / "run" / "engine.sock"
    start_engine(socket_path=nested)
    assert stat.S_IMODE(os.stat(nested.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(nested).st_mode) == 0o600


def test_shutdown_request_exits_cleanly_and_removes_the_socket(start_engine):
    eng = start_engine()
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
        assert c.request("shutdown") == {"ok": True}
    assert eng.wait_exit() == 0
    assert not eng.socket_path.exists()


def test_shutdown_cancels_infills_in_flight(start_engine):
    eng = start_engine()
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c, EngineClient(eng.socket_path, timeout=TIMEOUT) as admin:
        rid = c.send("infill", {"prefix": "x", "max_tokens": 256, "threshold": 1.0, "budget_ms": 120000, "n": 8})
        assert admin.request("shutdown") == {"ok": True}
        reply = c.wait_for(rid)
        assert reply.get("error", {}).get("code") == -32800 or "result" in reply
    assert eng.wait_exit() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_exit_cleanly(start_engine, sig):
    eng = start_engine()
    eng.proc.send_signal(sig)
    assert eng.wait_exit() == 0
    assert not eng.socket_path.exists()


def test_idle_timeout_exits_only_without_clients(start_engine):
    eng = start_engine("--idle-timeout", "1")
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
        time.sleep(3)  # three idle periods with a client connected
        assert eng.proc.poll() is None
        assert c.request("health")["ready"]
    assert eng.wait_exit(TIMEOUT) == 0
    assert not eng.socket_path.exists()
    assert "no clients for 1 s" in eng.stderr()


def test_a_second_engine_on_the_same_socket_refuses_to_start(start_engine, tiny_model_dir):
    eng = start_engine()
    second = cli("serve", "--model", str(tiny_model_dir), "--socket", str(eng.socket_path), "--device", "cpu")
    assert second.returncode == 1
    assert "another engine" in second.stderr
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
        assert c.request("health")["pid"] == eng.proc.pid


def test_a_stale_socket_file_is_replaced(start_engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("stale") / "engine.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file nobody listens on, as a crashed engine leaves behind
    dead.close()
    assert path.exists()
    eng = start_engine(socket_path=path)
    assert "removing stale socket" in eng.stderr()


def test_a_regular_file_at_the_socket_path_is_left_alone(tmp_path, tiny_model_dir):
    path = tmp_path / "engine.sock"
    path.write_text("precious")
    out = cli("serve", "--model", str(tiny_model_dir), "--socket", str(path), "--device", "cpu")
    assert out.returncode == 1
    assert "not a socket" in out.stderr
    assert path.read_text() == "precious"


def test_a_model_that_fails_to_load_exits_with_an_error(tmp_path, tiny_model_dir):
    model = tmp_path / "broken"
    model.mkdir()
    (model / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (model / "tokenizer.json").write_text((tiny_model_dir / "tokenizer.json").read_text())
    (model / "model.safetensors").write_bytes(b"not weights")
    out = cli("serve", "--model", str(model), "--socket", str(tmp_path / "e.sock"), "--device", "cpu")
    assert out.returncode == 1
    assert "could not load the model" in out.stderr
    assert not (tmp_path / "e.sock").exists()


def test_missing_model_names_the_flag(tmp_path):
    out = cli("serve", "--model", str(tmp_path / "nowhere"), "--socket", str(tmp_path / "e.sock"))
    assert out.returncode == 2
    assert "--model" in out.stderr and "config.json" in out.stderr


def test_missing_bundled_model_names_the_flag(tmp_path):
    from mercury_engine.paths import DEFAULT_MODEL_DIR

    if (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("the bundled model is installed")
    out = cli("serve", "--socket", str(tmp_path / "e.sock"))
    assert out.returncode == 2
    assert "--model" in out.stderr


def test_cli_health_stats_stop(start_engine, tmp_path):
    eng = start_engine()
    sock = str(eng.socket_path)
    health = cli("health", "--socket", sock)
    assert health.returncode == 0
    assert json.loads(health.stdout)["ready"] is True
    stats = cli("stats", "--socket", sock)
    assert stats.returncode == 0
    assert {"requests", "completed", "latency_ms", "clients"} <= set(json.loads(stats.stdout))
    stop = cli("stop", "--socket", sock)
    assert stop.returncode == 0 and json.loads(stop.stdout) == {"ok": True}
    assert eng.wait_exit() == 0
    gone = cli("health", "--socket", sock)
    assert gone.returncode == 1
    assert "no engine answers" in gone.stderr
    assert cli("stats", "--socket", str(tmp_path / "none.sock")).returncode == 1


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "mercury-engine")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for word in ("serve", "health", "stats", "stop", "train"):
        assert word in out.stdout


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_on_localhost(start_engine):
    port = free_port()
    eng = start_engine("--tcp", str(port))
    with EngineClient(tcp_port=port, timeout=TIMEOUT) as c:
        assert c.request("health")["ready"]
        assert c.infill("t = ", max_tokens=2)["completions"]
    assert cli("health", "--tcp", str(port)).returncode == 0
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:  # the Unix socket serves as well
        assert c.request("stats")["clients"] >= 1


def test_many_clients_connect_and_disconnect_while_requests_run(engine):
    """Clients that come and go (some mid-request) never disturb a steady one."""
    stop = threading.Event()
    errors = []

    def churn():
        i = 0
        while not stop.is_set():
            try:
                c = EngineClient(engine, timeout=TIMEOUT)
                c.send("infill", {"prefix": f"churn_{i} = ", "max_tokens": 8})
                if i % 2:
                    c.receive()
                c.close()
            except Exception as exc:
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with EngineClient(engine, timeout=TIMEOUT) as steady:
            for i in range(5):
                assert steady.infill(f"steady_{i} = ", max_tokens=4)["completions"]
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not errors


def test_cuda_asked_for_without_a_gpu_is_a_clear_error(tmp_path, tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = cli("serve", "--model", str(tiny_model_dir), "--socket", str(tmp_path / "e.sock"), "--device", "cuda")
    assert out.returncode == 1
    assert "no CUDA GPU" in out.stderr


def test_complete_prints_one_completion_without_a_running_engine(tiny_model_dir):
    from mercury_engine.cli import unescape

    assert unescape(r"def f():\n\treturn '\\n'") == "def f():\n\treturn '\\n'"
    proc = subprocess.run([sys.executable, "-m", "mercury_engine.cli", "complete", r"def add(a, b):\n    return ",
                           "--model", str(tiny_model_dir), "--device", "cpu", "--max-tokens", "3", "--raw"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tokens in" in proc.stderr and "forwards" in proc.stderr
    assert proc.stdout.endswith("\n")
