"""A tiny synchronous engine client for the CLI, tests and the bench (torch-free)."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

from .paths import default_socket_path
from .protocol import make_unpacker, pack


class EngineError(Exception):
    """The engine answered with an error reply."""

    def __init__(self, code: int, message: str, req_id: Any = None):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.req_id = req_id


class EngineUnavailable(ConnectionError):
    """No engine answers at that address."""


class EngineClient:
    """One connection. `request` sends and waits for its own reply; `send`/`receive` let a caller
    pipeline requests and read replies in whatever order they come."""

    def __init__(self, socket_path: str | Path | None = None, tcp_port: int | None = None, timeout: float | None = 30.0):
        if tcp_port is not None:
            self.address = f"127.0.0.1:{tcp_port}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target: Any = ("127.0.0.1", tcp_port)
        else:
            self.address = str(socket_path or default_socket_path())
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = self.address
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            raise EngineUnavailable(f"no engine answers at {self.address}: {exc.strerror or exc}") from None
        self.sock = sock
        self.unpacker = make_unpacker()
        self._ids = itertools.count(1)
        self.unclaimed: dict[Any, dict] = {}  # replies that arrived while waiting for another id

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, method: str, params: dict | None = None, req_id: Any = None) -> Any:
        """Send one request; returns its id."""
        if req_id is None:
            req_id = self.next_id()
        self.send_raw(pack({"id": req_id, "method": method, "params": params or {}}))
        return req_id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> dict:
        """The next reply frame, whatever its id. EOFError if the engine closed the connection."""
        if self.unclaimed:
            return self.unclaimed.pop(next(iter(self.unclaimed)))
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            for frame in self.unpacker:
                return frame
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"the engine at {self.address} closed the connection")
            self.unpacker.feed(data)

    def wait_for(self, req_id: Any, timeout: float | None = None) -> dict:
        """The reply frame for `req_id`; replies to other ids are kept for later."""
        if req_id in self.unclaimed:
            return self.unclaimed.pop(req_id)
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            for frame in self.unpacker:
                if isinstance(frame, dict) and frame.get("id") == req_id:
                    return frame
                self.unclaimed[frame.get("id") if isinstance(frame, dict) else None] = frame
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"the engine at {self.address} closed the connection")
            self.unpacker.feed(data)

    def request(self, method: str, params: dict | None = None, timeout: float | None = None) -> Any:
        """Send and wait: the result, or EngineError."""
        reply = self.wait_for(self.send(method, params), timeout)
        if "error" in reply:
            err = reply["error"]
            raise EngineError(err.get("code"), err.get("message", ""), reply.get("id"))
        return reply["result"]

    def infill(self, prefix: str, suffix: str = "", **params: Any) -> dict:
        return self.request("infill", {"prefix": prefix, "suffix": suffix, **params})


def call(method: str, params: dict | None = None, socket_path: str | Path | None = None, tcp_port: int | None = None, timeout: float = 30.0) -> Any:
    """One request on a fresh connection."""
    with EngineClient(socket_path, tcp_port, timeout) as client:
        return client.request(method, params)


__all__ = ["EngineClient", "EngineError", "EngineUnavailable", "call"]
