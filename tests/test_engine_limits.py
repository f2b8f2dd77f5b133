"""Bounded resources on a live engine: a connection cap (an error reply, then a close), idle
connections closed, a low file-descriptor limit that never locks new clients out, and a log that
a storm cannot fill."""

import socket
import time

import pytest

from mercury_engine.client import EngineClient
from mercury_engine.protocol import TOO_MANY_CONNECTIONS

TIMEOUT = 30.0


def refused(path) -> bool:
    """True when a new client gets the too-many-connections reply and a close; False when its
    request is answered."""
    with EngineClient(path, timeout=TIMEOUT) as c:
        c.send("health")
        reply = c.receive()
        if "result" in reply:
            return False
        assert reply["error"]["code"] == TOO_MANY_CONNECTIONS, reply
        with pytest.raises((EOFError, ConnectionError)):
            c.receive(timeout=TIMEOUT)
        return True


def test_clients_over_the_cap_are_told_and_closed(start_engine):
    eng = start_engine("--max-connections", "3")
    time.sleep(0.2)  # the readiness probe's own connection is closed by now
    held = [EngineClient(eng.socket_path, timeout=TIMEOUT) for _ in range(3)]
    try:
        assert all(c.request("health")["ready"] for c in held)
        assert refused(eng.socket_path)
        held.pop().close()
        time.sleep(0.2)
        assert not refused(eng.socket_path)  # a place came free
    finally:
        for c in held:
            c.close()


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(start_engine):
    eng = start_engine("--connection-timeout", "1")
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as idle, EngineClient(eng.socket_path, timeout=TIMEOUT) as busy:
        assert idle.request("health")["ready"]
        for _ in range(4):  # keeps asking: never idle for a whole second
            assert busy.request("health")["ready"]
            time.sleep(0.5)
        with pytest.raises((EOFError, ConnectionError)):
            idle.receive(timeout=5)
        assert busy.request("health")["ready"]


def test_a_low_fd_limit_never_locks_new_clients_out(start_engine):
    eng = start_engine(nofile=256)
    idle = []
    try:
        for _ in range(300):  # more idle connections than the engine has file descriptors
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(eng.socket_path))
            idle.append(s)
        start = time.monotonic()
        assert refused(eng.socket_path)  # told at once, not left waiting in the backlog
        assert time.monotonic() - start < 1.0
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as c:
        assert c.request("health")["ready"]


def test_a_storm_of_refusals_logs_a_few_lines_into_the_log_file(start_engine, tmp_path):
    log_file = tmp_path / "engine.log"
    eng = start_engine("--max-connections", "1", "--log-file", str(log_file))
    time.sleep(0.2)  # the readiness probe's own connection is closed by now
    with EngineClient(eng.socket_path, timeout=TIMEOUT) as holder:
        assert holder.request("health")["ready"]
        for _ in range(100):
            assert refused(eng.socket_path)
    lines = log_file.read_text().splitlines()
    assert any("ready: model" in line for line in lines)
    assert 1 <= sum("refusing a connection" in line for line in lines) <= 10
