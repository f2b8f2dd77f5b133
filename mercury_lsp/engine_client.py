"""Async client for the engine socket: one multiplexed connection, started on demand.

If nothing answers on the socket, the client starts `mercury-engine serve` detached, holding an
flock on the socket's lock file so two editors starting at once start one engine. Requests never
wait for start-up: they fail fast ("not ready") while a background task connects, starts and polls
`health` until the model is loaded.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

from mercury_engine.paths import default_socket_path, lock_path

NOT_READY = -32002
CANCELLED = -32800
CONNECT_TIMEOUT_S = 1.0
START_TIMEOUT_S = 60.0  # spawn until the socket answers (model loading comes after)
LOAD_TIMEOUT_S = 600.0  # socket answers until health says ready
POLL_S = 0.2
RETRY_AFTER_FAILURE_S = 10.0  # do not respawn a crashing engine on every keystroke

# Engine states, as shown in stats and progress messages.
DISCONNECTED, CONNECTING, STARTING, LOADING, READY, FAILED = (
    "disconnected", "connecting", "starting", "loading", "ready", "failed")


class EngineError(Exception):
    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def default_engine_command() -> list[str]:
    """`mercury-engine` installed next to this interpreter, else on PATH, else via `-m`-less import."""
    beside = Path(sys.executable).parent / "mercury-engine"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mercury-engine")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from mercury_engine.cli import main; sys.exit(main())"]


class EngineClient:
    def __init__(
        self,
        socket_path: str | None = None,
        command: list[str] | None = None,
        model: str | None = None,
        device: str | None = None,
        autostart: bool = True,
        log: Callable[[str], None] = lambda msg: None,
        on_state: Callable[[str, str], None] = lambda state, detail: None,
    ):
        self.socket_path = str(socket_path or default_socket_path())
        self.command = command
        self.model = model
        self.device = device
        self.autostart = autostart
        self.log = log
        self.on_state = on_state
        self.state = DISCONNECTED
        self.health: dict[str, Any] = {}
        self.last_error = ""
        self.restarts = 0  # engines this client started
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._read_task: asyncio.Task | None = None
        self._bring_up: asyncio.Task | None = None
        self._failed_at = 0.0
        self._spawned: subprocess.Popen | None = None  # started by the current bring-up

    # ----- public API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def ensure_started(self) -> None:
        """Connect (starting the engine if needed) in the background, unless that is under way
        or failed moments ago."""
        if self.state == READY and self.connected:
            return
        if self._bring_up and not self._bring_up.done():
            return
        if self.state == FAILED and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_S:
            return
        self._bring_up = asyncio.get_running_loop().create_task(self._bring_up_engine())

    async def infill(self, params: dict, timeout_s: float, abandon: asyncio.Event | None = None) -> dict:
        """The engine's infill result. Raises EngineError when the engine is not ready, answers an
        error, or does not answer within `timeout_s`; returns None if `abandon` is set first. A
        request given up on (timeout, abandon, task cancelled) is cancelled in the engine too."""
        if not (self.state == READY and self.connected):
            self.ensure_started()
            raise EngineError(f"engine {self.state}", NOT_READY)
        req_id, fut = self._send("infill", params)
        waiters = [fut]
        abandon_wait = None
        if abandon is not None:
            abandon_wait = asyncio.ensure_future(abandon.wait())
            waiters.append(abandon_wait)
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if fut in done:
                try:
                    return self._result_of(fut.result())
                except EngineError as e:
                    if e.code == NOT_READY:  # restarted behind our back: watch it load again
                        self._set_state(LOADING, "engine reloading")
                        self.ensure_started()
                    raise
            self._cancel_in_engine(req_id)
            if abandon_wait is not None and abandon_wait in done:
                return None
            raise EngineError(f"no answer within {timeout_s * 1000:.0f} ms")
        except asyncio.CancelledError:
            self._cancel_in_engine(req_id)
            raise
        finally:
            if abandon_wait is not None:
                abandon_wait.cancel()
            self._pending.pop(req_id, None)

    async def call(self, method: str, params: dict | None = None, timeout_s: float = 2.0) -> Any:
        """A plain request (health, stats, shutdown) on the current connection."""
        if not self.connected:
            raise EngineError("engine not connected")
        req_id, fut = self._send(method, params or {})
        try:
            return self._result_of(await asyncio.wait_for(fut, timeout_s))
        except asyncio.TimeoutError:
            raise EngineError(f"{method}: no answer within {timeout_s:.1f} s") from None
        finally:
            self._pending.pop(req_id, None)

    async def restart(self) -> None:
        """Stop the engine on this socket (whoever started it) and start a fresh one."""
        if self._bring_up and not self._bring_up.done():
            self._bring_up.cancel()
        self._set_state(DISCONNECTED, "restarting")  # so the coming close is not taken for a crash
        if self.connected:
            try:
                await self.call("shutdown", timeout_s=2.0)
            except EngineError as e:
                self.log(f"engine shutdown: {e}")
            # The engine closes the socket when it exits; wait for that so we do not reconnect to it.
            deadline = time.monotonic() + 5.0
            while self.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._disconnect("restart requested")
        self._failed_at = 0.0
        self.ensure_started()

    async def close(self) -> None:
        if self._bring_up and not self._bring_up.done():
            self._bring_up.cancel()
        self._disconnect("client closed")

    # ----- connection -------------------------------------------------------------------------

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            self.on_state(state, detail)

    def _send(self, method: str, params: dict) -> tuple[int, asyncio.Future]:
        req_id = next(self._ids)
        try:
            frame = msgpack.packb({"id": req_id, "method": method, "params": params}, use_bin_type=True)
        except (TypeError, ValueError) as e:  # a lone surrogate is a UnicodeEncodeError
            raise EngineError(f"{method}: the request cannot be encoded ({e})") from None
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self._writer.write(frame)
        return req_id, fut

    def _cancel_in_engine(self, req_id: int) -> None:
        if self.connected:
            self._writer.write(msgpack.packb({"id": next(self._ids), "method": "cancel", "params": {"id": req_id}}))

    @staticmethod
    def _result_of(reply: dict) -> Any:
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise EngineError(str(err.get("message", "engine error")), err.get("code"))
        return reply.get("result")

    async def _connect(self) -> bool:
        try:
            if self.socket_path.startswith("tcp://"):
                host, _, port = self.socket_path[len("tcp://"):].rpartition(":")
                conn = asyncio.open_connection(host or "127.0.0.1", int(port))
            else:
                conn = asyncio.open_unix_connection(self.socket_path)
            self._reader, self._writer = await asyncio.wait_for(conn, CONNECT_TIMEOUT_S)
        except (OSError, ValueError, asyncio.TimeoutError):
            return False
        self._read_task = asyncio.get_running_loop().create_task(self._read_replies(self._reader))
        return True

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 22)
        try:
            while data := await reader.read(1 << 16):
                unpacker.feed(data)
                for reply in unpacker:
                    if not isinstance(reply, dict):
                        continue
                    # an error for no request in particular (too many connections): every request's
                    waiting = list(self._pending) if reply.get("id") is None and "error" in reply else [reply.get("id")]
                    for req_id in waiting:
                        fut = self._pending.pop(req_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(reply)
        except (OSError, ValueError, msgpack.UnpackException) as e:
            self.log(f"engine connection: {e}")
        if self._reader is reader:
            self._disconnect("engine closed the connection")
            if self.state == READY:
                self._set_state(DISCONNECTED, "engine went away")
                self.ensure_started()  # bring it back before the next request needs it

    def _disconnect(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(EngineError(reason))
        self._pending.clear()

    # ----- start-up ---------------------------------------------------------------------------

    async def _bring_up_engine(self) -> None:
        error: Exception | None = None
        for attempt in range(3):  # a dying engine may still accept a connection, then drop it
            self._spawned = None  # the engine this attempt starts, if any
            try:
                if not self.connected:
                    self._set_state(CONNECTING, self.socket_path)
                    if not await self._connect():
                        if not self.autostart or self.socket_path.startswith("tcp://"):
                            raise EngineError(f"no engine answers on {self.socket_path}")
                        await self._start_engine()
                await self._wait_ready()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # start-up problems are reported, never raised into the server
                error = e
                self._disconnect(str(e))
                crashed = self._spawned is not None and self._spawned.poll() is not None
                if not self.autostart or isinstance(e, OSError) or crashed:
                    break  # nothing to start, no way to start it, or it crashed: do not loop
                await asyncio.sleep(0.5)
        self.last_error = str(error)
        self._failed_at = time.monotonic()
        self._set_state(FAILED, str(error))

    async def _start_engine(self) -> None:
        lock = lock_path(self.socket_path)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:  # another editor may be starting the engine: wait for its lock
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EngineError(f"lock {lock} held for {START_TIMEOUT_S:.0f} s") from None
                    await asyncio.sleep(POLL_S)
            if await self._connect():
                return  # started by whoever held the lock
            self._set_state(STARTING, "starting mercury-engine")
            self._spawn()
            while not await self._connect():
                if self._spawned.poll() is not None:
                    raise EngineError(f"engine exited with code {self._spawned.returncode}: {self._log_tail()}")
                if time.monotonic() > deadline:
                    raise EngineError(f"engine did not open {self.socket_path} in {START_TIMEOUT_S:.0f} s")
                await asyncio.sleep(POLL_S)
        finally:
            os.close(fd)  # releases the flock

    def _spawn(self) -> None:
        cmd = list(self.command or default_engine_command()) + ["serve", "--socket", self.socket_path,
                                                                  "--log-file", str(self._log_path())]
        if self.model:
            cmd += ["--model", self.model]
        if self.device:
            cmd += ["--device", self.device]
        self.log("starting engine: " + " ".join(cmd))
        # The engine rotates its own log; its stderr (a traceback before logging starts) is kept
        # for this engine only.
        with open(self._stderr_path(), "wb") as log_file:
            # Own session: the engine outlives this editor and is shared with the next one.
            self._spawned = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
            )
        self.restarts += 1

    def _log_path(self) -> Path:
        return Path(self.socket_path + ".log")

    def _stderr_path(self) -> Path:
        return Path(self.socket_path + ".stderr")

    def _log_tail(self, n: int = 600) -> str:
        """The last `n` bytes of what the engine wrote: its log, then its stderr."""
        tail = b""
        for path in (self._log_path(), self._stderr_path()):
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - n))
                    tail += f.read()
            except OSError:
                pass
        return tail[-n:].decode(errors="replace").strip()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            health = await self.call("health")
            self.health = health if isinstance(health, dict) else {}
            if self.health.get("ready"):
                self._set_state(READY, str(self.health.get("model", "")))
                return
            self._set_state(LOADING, "loading the model")
            if time.monotonic() > deadline:
                raise EngineError(f"engine not ready after {LOAD_TIMEOUT_S:.0f} s")
            if self._spawned is not None and self._spawned.poll() is not None:
                raise EngineError(f"engine exited with code {self._spawned.returncode}: {self._log_tail()}")
            await asyncio.sleep(POLL_S)
