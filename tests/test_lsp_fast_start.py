"""The early `initialize` answer (mercury_lsp/fast_start.py) must equal pygls's own, and the
server must behave when the first message is something else."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mercury_lsp.fast_start import DropReply, Replay, frame, initialize_result, read_message

SERVER = [str(Path(sys.executable).parent / "mercury-lsp"), "--stdio"]

CLIENT_CAPABILITIES = [
    {},
    {"general": {"positionEncodings": ["utf-8", "utf-16"]}},
    {"general": {"positionEncodings": ["utf-32"]}},
    {"general": {"positionEncodings": ["latin-1", "utf-16"]}},
    {"textDocument": {"inlineCompletion": {}}, "window": {"workDoneProgress": True}},
]


def pygls_initialize_result(capabilities: dict) -> dict:
    """What pygls itself answers for our server, computed in-process."""
    from mercury_lsp.server import create_server

    class Capture:
        def __init__(self):
            self.data = []

        def write(self, data):
            self.data.append(data)

        def close(self):
            pass

    server = create_server()
    out = Capture()
    server.protocol.set_writer(out)
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"processId": None, "rootUri": None, "capabilities": capabilities,
                          "initializationOptions": {"engine_autostart": False}}}
    server.protocol.handle_message(server.protocol.structure_message(request))
    return json.loads(out.data[0].partition(b"\r\n\r\n")[2])["result"]


@pytest.mark.parametrize("capabilities", CLIENT_CAPABILITIES)
def test_early_answer_equals_pygls_answer(capabilities):
    assert initialize_result({"capabilities": capabilities}) == pygls_initialize_result(capabilities)


def test_read_message_and_replay_give_back_the_same_bytes():
    first = frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    rest = frame({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    stream = io.BytesIO(first + rest)
    raw, message = read_message(stream)
    assert raw == first and message["method"] == "initialize"
    replay = Replay(raw, stream)
    assert replay.readline().startswith(b"Content-Length: ")
    assert replay.readline() == b"\r\n"
    body = replay.read(len(first) - len(first.partition(b"\r\n\r\n")[0]) - 4)
    assert json.loads(body)["id"] == 1
    assert replay.readline().startswith(b"Content-Length: ") and replay.read() .endswith(b"{}}")


def test_read_message_leaves_broken_input_to_pygls():
    assert read_message(io.BytesIO(b"Content-Length: 5\r\n\r\n[1,2]"))[1] is None
    assert read_message(io.BytesIO(b"Content-Length: 3\r\n\r\n{x}"))[1] is None
    assert read_message(io.BytesIO(b""))[1] is None


def test_drop_reply_drops_only_that_reply():
    out = io.BytesIO()
    sink = DropReply(out, 1)
    sink.write(frame({"jsonrpc": "2.0", "method": "window/logMessage", "params": {"id": 1}}))
    sink.write(frame({"jsonrpc": "2.0", "id": 1, "result": {}}))
    sink.write(frame({"jsonrpc": "2.0", "id": 1, "result": {"again": True}}))
    written = out.getvalue()
    assert written.count(b"Content-Length") == 2 and b"again" in written


def exchange(messages: list[bytes], until_id) -> list[dict]:
    """Everything the server writes until its reply to request `until_id`."""
    proc = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(b"".join(messages))
        proc.stdin.flush()
        out = []
        while not out or not (out[-1] and out[-1].get("id") == until_id and "method" not in out[-1]):
            raw, message = read_message(proc.stdout)
            assert raw and len(out) < 50, f"no reply to {until_id!r}: {out}"
            out.append(message)
        return out
    finally:
        proc.kill()
        proc.wait()


def test_one_initialize_answer_then_pygls_serves():
    init = frame({"jsonrpc": "2.0", "id": "a", "method": "initialize",
                  "params": {"processId": None, "rootUri": None, "capabilities": {},
                             "initializationOptions": {"engine_autostart": False}}})
    initialized = frame({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    stats = frame({"jsonrpc": "2.0", "id": "b", "method": "mercury/stats", "params": {}})
    replies = [m for m in exchange([init, initialized, stats], "b") if "id" in m]
    ids = [m["id"] for m in replies]
    assert ids.count("a") == 1 and "b" in ids
    assert next(m for m in replies if m["id"] == "b")["result"]["requests"] == 0


def test_garbage_first_message_does_not_stop_the_server():
    garbage = b"Content-Length: 7\r\n\r\nnotjson"
    init = frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"processId": None, "rootUri": None, "capabilities": {},
                             "initializationOptions": {"engine_autostart": False}}})
    replies = [m for m in exchange([garbage, init], 1) if m and m.get("id") == 1]
    assert replies and "capabilities" in replies[0]["result"]


def test_tcp_mode_and_version_flag():
    import socket
    import time

    version = subprocess.run([SERVER[0], "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("mercury-lsp ")
    assert subprocess.run([SERVER[0], "--tcp", "no-port"], capture_output=True).returncode == 2

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([SERVER[0], "--tcp", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        with conn:
            conn.sendall(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"processId": None, "rootUri": None, "capabilities": {},
                                           "initializationOptions": {"engine_autostart": False}}}))
            stream = conn.makefile("rb")
            _, reply = read_message(stream)
            assert reply["id"] == 1 and "inlineCompletionProvider" in reply["result"]["capabilities"]
    finally:
        proc.kill()
        proc.wait()
