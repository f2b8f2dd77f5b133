"""A minimal LSP client over a subprocess' stdio: JSON-RPC with Content-Length framing, asyncio.

Enough to drive a language server the way an editor does and time its answers; requests the
server sends to the client (configuration, capability registration, progress) get a null reply.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any


class LspError(Exception):
    def __init__(self, error: dict):
        super().__init__(f"{error.get('message')} (code {error.get('code')})")
        self.error = error


class LspClient:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.log_messages: list[str] = []
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def start(cls, command: list[str], env: dict | None = None, stderr=None) -> "LspClient":
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=stderr, env=env, limit=1 << 24)
        return cls(proc)

    async def _send(self, message: dict) -> None:
        body = json.dumps(message, separators=(",", ":")).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await self.proc.stdin.drain()

    async def request(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        req_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        await self._send({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(req_id, None)

    async def notify(self, method: str, params: Any = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _read_loop(self) -> None:
        reader = self.proc.stdout
        try:
            while True:
                length = None
                while True:
                    line = await reader.readline()
                    if not line:
                        raise EOFError("the language server closed its stdout")
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.decode("ascii", "replace").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length is None:
                    continue
                self._dispatch(json.loads(await reader.readexactly(length)))
        except (EOFError, asyncio.IncompleteReadError, ConnectionError) as e:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(EOFError(str(e)))

    def _dispatch(self, msg: dict) -> None:
        if "method" in msg:
            if msg["method"] == "window/logMessage":
                self.log_messages.append(str(msg.get("params", {}).get("message")))
            if "id" in msg:  # a request from the server: answer so it never waits on us
                asyncio.create_task(self._send({"jsonrpc": "2.0", "id": msg["id"], "result": None}))
            return
        future = self._pending.get(msg.get("id"))
        if future is None or future.done():
            return
        if "error" in msg:
            future.set_exception(LspError(msg["error"]))
        else:
            future.set_result(msg.get("result"))

    async def initialize(self, options: dict, root_uri: str | None = None) -> dict:
        caps = {"textDocument": {"inlineCompletion": {"dynamicRegistration": False},
                                 "synchronization": {"didSave": False}},
                "general": {"positionEncodings": ["utf-16"]}}
        result = await self.request("initialize", {"processId": None, "rootUri": root_uri, "capabilities": caps,
                                                   "initializationOptions": options, "clientInfo": {"name": "mercury-bench"}})
        await self.notify("initialized", {})
        return result

    async def shutdown(self, timeout: float = 10.0) -> None:
        try:
            if self.proc.returncode is None:
                await self.request("shutdown", None, timeout)
                await self.notify("exit")
                await asyncio.wait_for(self.proc.wait(), timeout)
        except (asyncio.TimeoutError, EOFError, ConnectionError, LspError):
            pass
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self._reader.cancel()


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def position_at(text: str) -> dict:
    """LSP position (UTF-16 columns) of the end of `text`."""
    line = text.count("\n")
    return {"line": line, "character": utf16_len(text[text.rfind("\n") + 1:])}
