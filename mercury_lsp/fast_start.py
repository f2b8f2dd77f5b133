"""Answer `initialize` while pygls is still importing.

Importing pygls means importing lsprotocol, which builds ~600 attrs classes: most of the server's
start-up time. Over stdio the first message is `initialize`, and its answer is fixed (the features
are static), so it is answered from the constant below while the import runs in a thread; the same
request is then replayed into pygls, whose own (identical) reply is dropped. Everything after it is
pygls's job. tests/test_lsp_fast_start.py checks that this answer equals what pygls computes.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
from importlib import import_module
from typing import BinaryIO

from . import __version__

CAPABILITIES = {
    "textDocumentSync": {"openClose": True, "change": 2, "save": False},  # 2: incremental
    "completionProvider": {},
    "executeCommandProvider": {"commands": ["mercury.stats", "mercury.toggle", "mercury.restartEngine"]},
    "inlineCompletionProvider": {},
    "workspace": {"workspaceFolders": {"supported": True, "changeNotifications": True}, "fileOperations": {}},
}
ENCODINGS = ("utf-8", "utf-16", "utf-32")
CONTENT_LENGTH = re.compile(rb"^Content-Length: *(\d+)\r?\n$", re.IGNORECASE)
MAX_FIRST_MESSAGE = 16 << 20


def initialize_result(params) -> dict:
    """pygls's choice of position encoding: the client's first supported one, else UTF-16."""
    encoding = "utf-16"
    caps = params.get("capabilities") if isinstance(params, dict) else None
    general = caps.get("general") if isinstance(caps, dict) else None
    offered = general.get("positionEncodings") if isinstance(general, dict) else None
    if isinstance(offered, list):
        encoding = next((e for e in offered if e in ENCODINGS), encoding)
    return {
        "capabilities": {"positionEncoding": encoding, **CAPABILITIES},
        "serverInfo": {"name": "mercury-lsp", "version": __version__},
    }


def read_message(stream: BinaryIO) -> tuple[bytes, dict | None]:
    """The raw bytes of the first message and its JSON body (None when it is not a JSON object
    with a sane Content-Length: pygls then sees the bytes and deals with them)."""
    raw = b""
    length = None
    while True:
        line = stream.readline()
        raw += line
        if not line:
            return raw, None
        if m := CONTENT_LENGTH.match(line):
            length = int(m.group(1))
        elif not line.strip():
            break
        if len(raw) > 4096:
            return raw, None
    if length is None or length > MAX_FIRST_MESSAGE:
        return raw, None
    body = stream.read(length)
    raw += body
    try:
        message = json.loads(body)
    except ValueError:
        return raw, None
    return raw, message if isinstance(message, dict) else None


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Replay:
    """A binary stream that yields `head` first, then reads on from `stream`."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head = io.BytesIO(head)
        self.stream = stream

    def readline(self) -> bytes:
        line = self.head.readline()
        if line.endswith(b"\n"):
            return line
        return line + self.stream.readline()

    def read(self, n: int = -1) -> bytes:
        data = self.head.read(n)
        if n < 0:
            return data + self.stream.read()
        return data if len(data) == n else data + self.stream.read(n - len(data))


class DropReply:
    """A binary stream that drops the one reply to request `request_id` (already answered)."""

    def __init__(self, stream: BinaryIO, request_id):
        self.stream = stream
        self.request_id = request_id
        self.dropped = False

    def write(self, data: bytes) -> int:
        if not self.dropped:
            _, _, body = data.partition(b"\r\n\r\n")
            try:
                message = json.loads(body)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("id") == self.request_id and "method" not in message:
                self.dropped = True
                return len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def serve_stdio(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    importer = threading.Thread(target=import_module, args=("mercury_lsp.server",), daemon=True)
    importer.start()
    raw, message = read_message(stdin)
    answered = None
    if message is not None and message.get("method") == "initialize" and "id" in message:
        stdout.write(frame({"jsonrpc": "2.0", "id": message["id"], "result": initialize_result(message.get("params"))}))
        stdout.flush()
        answered = message["id"]
    importer.join()
    from .server import create_server

    create_server().start_io(Replay(raw, stdin), stdout if answered is None else DropReply(stdout, answered))
