"""The language server and the engine's life: started on demand (one engine for two editors),
progress while it loads, a crash noticed and recovered, restart on command, and an engine that
answers health but never infill (slow): empty answers within budget and `cancel` sent to it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path

import msgpack
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from test_lsp_server import PYTHON_DOCS, SERVER, client, command, end_of, inline, open_doc, start, stats  # noqa: F401


@pytest.fixture
def short_dir():
    """Unix socket paths must stay under ~100 bytes: pytest's tmp_path can be longer."""
    d = Path(tempfile.mkdtemp(prefix="mlsp", dir="/tmp"))
    yield d
    for sock in d.glob("*.sock"):  # stop engines the language server started there
        try:
            from mercury_engine.client import call

            call("shutdown", socket_path=sock, timeout=5)
        except Exception:
            pass
    shutil.rmtree(d, ignore_errors=True)


async def wait_for(client: LanguageClient, predicate, timeout: float = 120.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        s = await stats(client)
        if predicate(s):
            return s
        assert asyncio.get_running_loop().time() < deadline, f"condition never met: {s['engine']}"
        await asyncio.sleep(0.2)


def ready(s: dict) -> bool:
    return s["engine"]["state"] == "ready"


async def test_engine_started_on_demand_recovers_from_a_crash_and_restarts(client: LanguageClient, tiny_model_dir, short_dir):
    sock = short_dir / "e.sock"
    await start(client, engine_socket=str(sock), model=str(tiny_model_dir), engine_device="cpu",
                budget_ms=5000, debounce_ms=0)
    uri = "file:///tmp/lifecycle.py"
    text = PYTHON_DOCS[1]
    open_doc(client, uri, text)

    # Nothing answers yet: an empty answer (not an error, not a wait for the model), one log line.
    early = await inline(client, uri, end_of(text))
    assert not early.items
    assert any("no suggestion: engine" in m.message for m in client.log_messages)

    s = await wait_for(client, ready)
    assert s["engine"]["started"] == 1
    first_pid = s["engine"]["health"]["pid"]
    # $/progress: created, begun while starting/loading, ended once ready.
    reports = [r for rs in client.progress_reports.values() for r in rs]
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)

    calls = s["engine_calls"]
    await inline(client, uri, end_of(text))
    assert (await stats(client))["engine_calls"] == calls + 1

    # The engine dies under the editor: the server notices and starts another one.
    os.kill(first_pid, signal.SIGKILL)
    during = await inline(client, uri, types.Position(0, 4))
    assert during is not None  # an answer, possibly empty, never an error
    s = await wait_for(client, lambda s: ready(s) and s["engine"]["started"] == 2)
    second_pid = s["engine"]["health"]["pid"]
    assert second_pid != first_pid

    calls = s["engine_calls"]
    errors = s["engine_errors"]
    await inline(client, uri, types.Position(0, 7))
    s = await stats(client)
    assert s["engine_calls"] == calls + 1 and s["engine_errors"] == errors

    # mercury.restartEngine: the engine is shut down and a fresh one started.
    await command(client, "mercury.restartEngine")
    s = await wait_for(client, lambda s: ready(s) and s["engine"]["started"] == 3)
    assert s["engine"]["health"]["pid"] != second_pid


async def test_two_editors_start_one_engine(client: LanguageClient, tiny_model_dir, short_dir):
    sock = short_dir / "e.sock"
    options = dict(engine_socket=str(sock), model=str(tiny_model_dir), engine_device="cpu")
    other = await ClientServerConfig(server_command=SERVER).start()
    try:
        await asyncio.gather(start(client, **options), start(other, **options))
        a = await wait_for(client, ready)
        b = await wait_for(other, ready)
        assert a["engine"]["started"] + b["engine"]["started"] == 1
        assert a["engine"]["health"]["pid"] == b["engine"]["health"]["pid"]
    finally:
        await asyncio.wait_for(other.shutdown_session(), 15)
        await other.stop()


class SilentEngine:
    """A socket peer that says it is ready and then never answers infill: a stuck engine.
    Records every frame it receives."""

    def __init__(self, path: Path):
        self.path = path
        self.frames: list[dict] = []

    async def __aenter__(self):
        self.server = await asyncio.start_unix_server(self.serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def serve(self, reader, writer):
        unpacker = msgpack.Unpacker(raw=False)
        while data := await reader.read(65536):
            unpacker.feed(data)
            for frame in unpacker:
                self.frames.append(frame)
                if frame["method"] == "health":
                    reply = {"ready": True, "model": "silent", "device": "cpu", "version": "0", "pid": os.getpid(), "uptime_s": 1}
                    writer.write(msgpack.packb({"id": frame["id"], "result": reply}))
                elif frame["method"] == "stats":
                    writer.write(msgpack.packb({"id": frame["id"], "result": {"requests": 0}}))

    def cancelled_ids(self) -> list:
        return [f["params"]["id"] for f in self.frames if f["method"] == "cancel"]

    def infill_ids(self) -> list:
        return [f["id"] for f in self.frames if f["method"] == "infill"]


async def test_stuck_engine_gives_empty_answers_within_budget_and_is_told_to_cancel(client: LanguageClient, short_dir):
    async with SilentEngine(short_dir / "silent.sock") as silent:
        await start(client, engine_socket=str(silent.path), engine_autostart=False, budget_ms=300, debounce_ms=0)
        await wait_for(client, ready, timeout=30)
        uri = "file:///tmp/stuck.py"
        open_doc(client, uri, PYTHON_DOCS[1])

        # Slow engine: the budget runs out, the answer is empty, the engine is told to cancel.
        result = await asyncio.wait_for(inline(client, uri, end_of(PYTHON_DOCS[1])), 10)
        assert not result.items
        assert any("no answer within" in m.message for m in client.log_messages)
        params = [f["params"] for f in silent.frames if f["method"] == "infill"][0]
        assert params["prefix"] == PYTHON_DOCS[1] and params["language"] == "python"
        assert 0 < params["budget_ms"] <= 300

        # A newer request for the same document supersedes one waiting on the engine.
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"budget_ms": 20000}))
        older = asyncio.ensure_future(inline(client, uri, types.Position(0, 4)))
        while len(silent.infill_ids()) < 2:
            await asyncio.sleep(0.05)
        newer = asyncio.ensure_future(inline(client, uri, types.Position(0, 8)))
        assert not (await asyncio.wait_for(older, 10)).items  # long before its 20 s budget
        for _ in range(100):
            if len(silent.cancelled_ids()) >= 2:
                break
            await asyncio.sleep(0.05)
        assert silent.cancelled_ids()[:2] == silent.infill_ids()[:2]

        # $/cancelRequest while the engine works on it: the engine is told to cancel too.
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(0, 2),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        pending = asyncio.ensure_future(
            client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="stuck")
        )
        while len(silent.infill_ids()) < 4:  # newer (still waiting) and this one
            await asyncio.sleep(0.05)
        assert not (await asyncio.wait_for(newer, 10)).items  # superseded by "stuck"
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="stuck"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(pending, 10)
        for _ in range(100):
            if silent.infill_ids()[3] in silent.cancelled_ids():
                break
            await asyncio.sleep(0.05)
        assert silent.infill_ids()[3] in silent.cancelled_ids()
        s = await stats(client)
        assert s["engine_errors"] == 1 and s["superseded"] == 2 and s["cancelled"] == 1


async def test_engine_that_cannot_start_is_reported_not_retried_per_keystroke(client: LanguageClient, short_dir):
    await start(client, engine_socket=str(short_dir / "bad.sock"), model=str(short_dir / "no-such-model"),
                engine_device="cpu", budget_ms=300, debounce_ms=0)
    s = await wait_for(client, lambda s: s["engine"]["state"] == "failed")
    assert "exited with code" in s["engine"]["last_error"]
    assert "no-such-model" in s["engine"]["last_error"]  # the engine's own message, from its log
    uri = "file:///tmp/failed.py"
    open_doc(client, uri, PYTHON_DOCS[1])
    for _ in range(3):
        assert not (await inline(client, uri, end_of(PYTHON_DOCS[1]))).items
    assert (await stats(client))["engine"]["started"] == 1  # no respawn on every request

    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"engine_command": str(short_dir / "missing-binary")})
    )
    s = await wait_for(client, lambda s: s["engine"]["state"] == "failed" and "missing-binary" in s["engine"]["last_error"])
    assert s["engine"]["started"] == 0


async def test_a_request_that_cannot_be_encoded_fails_at_once_and_leaves_nothing_pending(engine):
    from mercury_lsp.engine_client import READY, EngineClient, EngineError

    client = EngineClient(socket_path=str(engine), autostart=False)
    client.ensure_started()
    deadline = asyncio.get_running_loop().time() + 60
    while client.state != READY and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    try:
        with pytest.raises(EngineError, match="cannot be encoded"):
            await client.infill({"prefix": "s = '\ud800'"}, timeout_s=30)
        assert not client._pending
        answer = await client.infill({"prefix": "x = ", "max_tokens": 2, "budget_ms": 5000}, timeout_s=30)
        assert "completions" in answer  # the connection still serves
    finally:
        await client.close()
