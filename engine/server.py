"""The engine process: one asyncio server on a Unix socket (optionally TCP on 127.0.0.1) that
loads the model once and answers msgpack requests from every editor on the machine."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import resource
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from . import __version__
from .protocol import (
    CANCELLED,
    INTERNAL_ERROR,
    MAX_FRAME,
    METHOD_NOT_FOUND,
    NOT_READY,
    READ_CHUNK,
    FatalFrameError,
    TOO_MANY_CONNECTIONS,
    ProtocolError,
    declares_oversize,
    error_reply,
    frame_error,
    is_valid_id,
    make_unpacker,
    oversize_error,
    pack,
    parse_cancel_params,
    parse_infill_params,
    parse_request,
    result_reply,
)
from .scheduler import RequestCancelled, Scheduler, Stats, Worker

log = logging.getLogger("mercury_engine")
MAX_LINGERING = 16


def default_max_connections() -> int:
    """Under the file-descriptor limit by enough that a client over the cap can still be accepted
    and told: room for the refusals lingering and the engine's own files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(4, min(1024, soft - 64))


class EngineAlreadyRunning(RuntimeError):
    pass


def socket_answers(path: Path) -> bool:
    """True when some process accepts connections on this Unix socket path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_unix_socket(path: Path) -> tuple[socket.socket, int]:
    """Bind a 0600 socket at `path` in a 0700 directory; (socket, fd of the held owner lock).

    The owner lock (a flock on PATH.owner, held for the engine's life) makes "is the socket file
    stale?" race-free when two engines start at once; a socket that still answers is never removed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(str(path) + ".owner", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise EngineAlreadyRunning(f"another engine is starting or serving on {path}") from None
    try:
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not touching it")
            if socket_answers(path):
                raise EngineAlreadyRunning(f"another engine already answers on {path}")
            log.info("removing stale socket %s", path)
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created 0600, never briefly wider
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock, lock_fd
    except BaseException:
        os.close(lock_fd)
        raise


class Connection:
    """One client. Replies may be written from several request tasks: one lock keeps frames whole."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    async def send(self, message: dict) -> None:
        if self.closed:
            return
        data = pack(message)
        async with self.lock:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, RuntimeError, OSError):
                self.closed = True  # the client went away; its remaining replies are dropped


class EngineServer:
    def __init__(
        self,
        model_dir: str | Path | None,
        socket_path: str | Path,
        device: str = "auto",
        tcp_port: int | None = None,
        idle_timeout: float = 1800.0,
        frame_timeout: float = 10.0,
        max_batch: int = 16,
        max_connections: int | None = None,
        connection_timeout: float = 600.0,
    ):
        self.model_dir = model_dir
        self.socket_path = Path(socket_path)
        self.device = device
        self.tcp_port = tcp_port
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_batch = max_batch
        self.max_connections = max_connections or default_max_connections()
        self.connection_timeout = connection_timeout
        self.lingering = 0  # refused connections waiting for their client to read the refusal
        self.open_count = 0  # connections accepted and not yet dropped
        self.accepted: set[asyncio.Task] = set()  # their tasks, kept until done
        self.stats = Stats()
        self.scheduler: Scheduler | None = None
        self.model_name = str(model_dir) if model_dir else "default"
        self.ready = False
        self.started = time.monotonic()
        self.last_activity = self.started
        self.connections: set[Connection] = set()
        self.exit_code = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until shutdown, a signal, idle timeout or a failed model load; the exit code."""
        self.stop_event = asyncio.Event()
        self.worker = Worker()
        sock, lock_fd = bind_unix_socket(self.socket_path)
        listeners = [sock]
        try:
            if self.tcp_port is not None:
                listeners.append(socket.create_server(("127.0.0.1", self.tcp_port), backlog=128))
                log.info("listening on tcp 127.0.0.1:%d", listeners[-1].getsockname()[1])
            accepting = [asyncio.create_task(self._accept(listener)) for listener in listeners]
            log.info("listening on %s (pid %d); loading the model", self.socket_path, os.getpid())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
            background = [asyncio.create_task(self._load()), asyncio.create_task(self._watch_idle()), *accepting]
            await self.stop_event.wait()
            for task in background:
                task.cancel()
        finally:
            await self._close(listeners)
            os.close(lock_fd)
        return self.exit_code

    def stop(self, why: str, exit_code: int = 0) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: %s", why)
            self.exit_code = exit_code
            self.stop_event.set()

    async def _close(self, listeners: list[socket.socket]) -> None:
        for listener in listeners:
            listener.close()
        try:
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()
        except OSError:
            pass
        if self.scheduler is not None:
            await self.scheduler.close()
        pending = [t for conn in self.connections for t in conn.tasks]
        if pending:  # let cancelled requests send their -32800 before the connections close
            await asyncio.wait(pending, timeout=1.0)
        for conn in list(self.connections):
            conn.closed = True
            conn.writer.close()

    async def _load(self) -> None:
        try:
            sampler, loaded = await self.worker.submit(build_sampler, self.model_dir, self.device)
            self.model_name = str(loaded.path)
            self.device = str(loaded.device)
            warm_start = time.monotonic()
            await self.worker.submit(sampler.warmup)
            log.info("warmed up in %.0f ms", (time.monotonic() - warm_start) * 1000)
        except Exception as exc:
            log.error("could not load the model: %s: %s", type(exc).__name__, exc)
            self.stop("model load failed", exit_code=1)
            return
        self.scheduler = Scheduler(sampler, self.worker, self.stats, max_batch=self.max_batch)
        self.ready = True
        log.info("ready: model %s on %s", self.model_name, self.device)

    async def _watch_idle(self) -> None:
        if self.idle_timeout <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            busy = self.scheduler is not None and self.scheduler.busy
            if self.connections or busy:
                self.last_activity = time.monotonic()
            elif time.monotonic() - self.last_activity >= self.idle_timeout:
                self.stop(f"no clients for {self.idle_timeout:g} s")
                return

    # ---- connections -------------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        """Accept one connection at a time, so the cap is checked before the next one is taken:
        asyncio's own servers accept 100 at once and, out of file descriptors, stop for a second."""
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors: the refusals below free some soon
                log.warning("cannot accept a connection: %s", exc.strerror or exc)
                await asyncio.sleep(0.05)
                continue
            admitted = self.open_count < self.max_connections
            self.open_count += admitted
            task = asyncio.create_task(self._streams(client, admitted))
            self.accepted.add(task)
            task.add_done_callback(self.accepted.discard)

    async def _streams(self, client: socket.socket, admitted: bool) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=client, limit=READ_CHUNK)
        except OSError:
            client.close()
            self.open_count -= admitted
            return
        await (self._serve_connection(reader, writer) if admitted else self._refuse(reader, writer))

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.warning("refusing a connection: %d open, the cap", self.open_count)
        await self._send_error(Connection(writer), None, TOO_MANY_CONNECTIONS, f"too many connections ({self.max_connections})")
        await self._linger(reader, writer)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        self.connections.add(conn)
        self.last_activity = time.monotonic()
        unpacker = make_unpacker()
        fed = consumed = 0  # bytes fed to the unpacker / bytes of complete frames in them
        partial = b""  # the bytes of the frame still incomplete
        try:
            while not conn.closed and not self.stop_event.is_set():
                try:
                    # half a frame: the rest must come soon; otherwise a client may idle a while
                    wait = self.frame_timeout if fed > consumed else self.connection_timeout
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), wait or None)
                except TimeoutError:
                    if fed == consumed and conn.tasks:
                        continue  # waiting for its answers, not idle
                    log.info("closing a connection: %s", "half a frame, then silence" if fed > consumed else "idle")
                    break
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                try:
                    unpacker.feed(data)
                    fed += len(data)
                    for frame in unpacker:
                        frame_size, consumed = unpacker.tell() - consumed, unpacker.tell()
                        if frame_size > MAX_FRAME:
                            raise oversize_error()
                        await self._dispatch(conn, frame)
                    partial = (partial + data)[len(partial) + len(data) - (fed - consumed):] if fed > consumed else b""
                    if fed - consumed > MAX_FRAME or (partial and declares_oversize(partial)):
                        raise oversize_error()  # the frame still incomplete is, or says it will be, too big
                except FatalFrameError as exc:
                    await self._send_error(conn, None, exc.code, exc.message)
                    break
                except Exception as exc:  # anything msgpack raises: the stream is unusable now
                    err = frame_error(exc)
                    await self._send_error(conn, None, err.code, err.message)
                    break
        finally:
            await self._drop_connection(conn)

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float = 1.0) -> None:
        """Close after the reply has been read: closing with the client's request still unread
        would reset the connection, and the reply with it. Only a few linger at a time, so that
        a flood of refused clients cannot use up the file descriptors the cap keeps free."""
        if self.lingering < MAX_LINGERING:
            self.lingering += 1
            try:
                writer.write_eof()
                async with asyncio.timeout(seconds):
                    while await reader.read(READ_CHUNK):
                        pass
            except (TimeoutError, ConnectionError, OSError):
                pass
            finally:
                self.lingering -= 1
        writer.close()

    async def _drop_connection(self, conn: Connection) -> None:
        if self.scheduler is not None:
            self.scheduler.cancel_owner(conn)
        if conn.tasks:  # cancelled infills finish at once; give them a moment to settle
            await asyncio.wait(list(conn.tasks), timeout=1.0)
        conn.closed = True
        conn.writer.close()
        self.connections.discard(conn)
        self.open_count -= 1
        self.last_activity = time.monotonic()

    async def _send_error(self, conn: Connection, req_id: Any, code: int, message: str) -> None:
        if code != CANCELLED:
            self.stats.errors += 1
        await conn.send(error_reply(req_id, code, message))

    async def _dispatch(self, conn: Connection, frame: Any) -> None:
        self.stats.requests += 1
        self.last_activity = time.monotonic()
        req_id = frame.get("id") if isinstance(frame, dict) else None
        try:
            req_id, method, params = parse_request(frame)
            if method == "infill":
                infill = parse_infill_params(params) if self.ready else None
                if infill is None:
                    raise ProtocolError(NOT_READY, "engine not ready: the model is still loading")
                job = self.scheduler.submit(infill, conn, req_id)
                task = asyncio.create_task(self._infill(conn, job))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
            elif method == "cancel":
                target = parse_cancel_params(params)
                done = self.scheduler.cancel(conn, target) if self.scheduler else False
                await conn.send(result_reply(req_id, {"cancelled": done}))
            elif method == "health":
                await conn.send(result_reply(req_id, self.health()))
            elif method == "stats":
                await conn.send(result_reply(req_id, self.stats_result()))
            elif method == "shutdown":
                await conn.send(result_reply(req_id, {"ok": True}))
                self.stop("shutdown requested")
            else:
                raise ProtocolError(METHOD_NOT_FOUND, f"unknown method {method!r}")
        except FatalFrameError:
            raise
        except RequestCancelled:  # arrived while the engine is shutting down
            await self._send_error(conn, req_id, CANCELLED, "request cancelled: the engine is shutting down")
        except ProtocolError as exc:
            await self._send_error(conn, req_id if is_valid_id(req_id) else None, exc.code, exc.message)
        except Exception as exc:  # a bug must cost one request, never the engine
            log.exception("request %r failed", req_id)
            await self._send_error(conn, req_id if is_valid_id(req_id) else None, INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")

    async def _infill(self, conn: Connection, job) -> None:
        req_id = job.req_id
        try:
            result = await self.scheduler.result(job)
        except RequestCancelled:
            await self._send_error(conn, req_id, CANCELLED, "request cancelled")
        except ProtocolError as exc:
            await self._send_error(conn, req_id, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("infill %r failed", req_id)
            await self._send_error(conn, req_id, INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")
        else:
            await conn.send(result_reply(req_id, result))

    # ---- introspection -----------------------------------------------------------------------

    def health(self) -> dict:
        return {
            "ready": self.ready,
            "model": self.model_name,
            "device": self.device,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def stats_result(self) -> dict:
        out = self.stats.to_dict()
        out.update(
            clients=len(self.connections),
            uptime_s=round(time.monotonic() - self.started, 3),
            ready=self.ready,
            model=self.model_name,
            device=self.device,
        )
        return out


def build_sampler(model_dir, device: str):
    """Runs on the worker thread: importing torch and loading weights never stalls the event loop."""
    from .loader import load_model
    from .sampler import Sampler

    loaded = load_model(model_dir, device)
    return Sampler(loaded), loaded
