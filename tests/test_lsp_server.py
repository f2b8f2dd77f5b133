"""End to end: a real LSP client (pytest-lsp) drives `mercury-lsp --stdio`, which talks to a real
`mercury-engine` process over its socket (tiny random model: the text is noise, so the tests check
structure, ranges, counters and where answers came from)."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER = [str(Path(sys.executable).parent / "mercury-lsp"), "--stdio"]
ENGINE_READY_TIMEOUT = 120.0  # shared 2-core machine: loading torch alone can take a while
PYTHON_DOCS = [
    "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        ",
    "def add(a, b):\n    return ",
    "class Stack:\n    def __init__(self):\n        self.items = ",
    "for i in range(10):\n    ",
    "values = [1, 2, 3]\ntotal = ",
    "def greet(name):\n    print(",
    "import sys\n\nif __name__ == '__main__':\n    ",
    "x = 1\ny = 2\nz = ",
]


def capabilities(inline: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities() if inline else None,
            completion=types.CompletionClientCapabilities(),
            synchronization=types.TextDocumentSyncClientCapabilities(),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
    )


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    yield
    try:
        await asyncio.wait_for(lsp_client.shutdown_session(), 15)
    finally:
        # A test that failed before `initialize` leaves a server waiting for `exit`: end it.
        server = lsp_client._server
        if server is not None and server.returncode is None:
            server.kill()


async def start(client: LanguageClient, inline: bool = True, **options) -> None:
    options.setdefault("min_confidence", 0)  # the tiny random model's noise must show, however unsure
    await client.initialize_session(
        types.InitializeParams(capabilities=capabilities(inline), initialization_options=options)
    )


def plain(value):
    """pygls hands results of custom requests back as namedtuples; compare them as dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


async def stats(client: LanguageClient) -> dict:
    return plain(await client.protocol.send_request_async("mercury/stats", {}))


async def command(client: LanguageClient, name: str) -> dict:
    return plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name)))


async def wait_engine(client: LanguageClient, state: str = "ready", timeout: float = ENGINE_READY_TIMEOUT) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        s = await stats(client)
        if s["engine"]["state"] == state:
            return s
        if s["engine"]["state"] == "failed" or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"engine never became {state}: {s['engine']}")
        await asyncio.sleep(0.2)


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text))
    )


def end_of(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(line=len(lines) - 1, character=len(lines[-1].encode("utf-16-le")) // 2)


async def inline(client: LanguageClient, uri: str, pos: types.Position, invoked: bool = True):
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=pos,
            context=types.InlineCompletionContext(trigger_kind=kind),
        )
    )


async def first_suggestion(client: LanguageClient, tag: str = "") -> tuple[str, str, types.Position, types.InlineCompletionItem]:
    """Open the sample documents one by one until the engine's noise survives post-processing."""
    for i, text in enumerate(PYTHON_DOCS):
        uri = f"file:///tmp/sample_{tag}{i}.py"
        open_doc(client, uri, text)
        result = await inline(client, uri, end_of(text))
        if result.items:
            return uri, text, end_of(text), result.items[0]
    raise AssertionError("no sample document produced a suggestion")


async def test_initialize_advertises_inline_completion_and_commands(client: LanguageClient):
    client.capabilities = capabilities()
    result = await client.initialize_async(
        types.InitializeParams(capabilities=capabilities(), initialization_options={"engine_autostart": False})
    )
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert {"mercury.stats", "mercury.toggle", "mercury.restartEngine"} <= set(caps.execute_command_provider.commands)
    assert result.server_info.name == "mercury-lsp"
    client.initialized(types.InitializedParams())


async def test_inline_completion_comes_from_the_engine(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    before = await wait_engine(client)
    engine_requests = before["engine"]["stats"]["requests"]

    uri, text, pos, item = await first_suggestion(client)

    assert item.insert_text.strip()
    assert item.range.start == pos
    assert item.range.end == pos  # end of line: nothing after the cursor to replace
    after = await stats(client)
    assert after["engine_calls"] >= 1 and after["served"] == 1
    assert after["engine"]["stats"]["requests"] > engine_requests
    assert after["latency_ms"]["count"] == 1 and after["latency_ms"]["p50"] > 0


async def test_cache_serves_the_rest_after_typing_through(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    uri, text, pos, item = await first_suggestion(client)
    calls = (await stats(client))["engine_calls"]

    # Same position again: exact cache hit.
    again = await inline(client, uri, pos)
    assert again.items[0].insert_text == item.insert_text

    # Type the beginning of the suggestion: the rest comes from the cache.
    suggestion = item.insert_text
    cuts = [k for k in range(1, len(suggestion)) if "\n" not in suggestion[:k]
            and not suggestion[k - 1].isspace() and not suggestion[k].isspace()]
    if not cuts:
        pytest.skip(f"cannot type through {suggestion!r} without ending on a space")
    typed = suggestion[: cuts[0]]
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=typed)],
        )
    )
    new_pos = end_of(text + typed)
    rest = await inline(client, uri, new_pos, invoked=False)
    assert [i.insert_text for i in rest.items] == [suggestion[len(typed):]]
    assert rest.items[0].range.start == new_pos
    s = await stats(client)
    assert s["engine_calls"] == calls  # neither request reached the engine
    assert s["cache_hits"] == 1 and s["typed_through"] == 1


async def test_newest_request_for_a_document_wins(client: LanguageClient, engine):
    # A long debounce keeps the first (automatic) request waiting when the second arrives.
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=3000)
    await wait_engine(client)
    text = PYTHON_DOCS[1]
    uri = "file:///tmp/latest.py"
    open_doc(client, uri, text)
    older = asyncio.ensure_future(inline(client, uri, end_of(text), invoked=False))
    await asyncio.sleep(0.3)
    newer = asyncio.ensure_future(inline(client, uri, types.Position(0, 3), invoked=True))
    older_result = await asyncio.wait_for(older, 2.5)  # well before its 3 s debounce would end
    assert not older_result.items
    await newer
    s = await stats(client)
    assert s["superseded"] == 1
    assert s["requests"] == 2
    assert s["engine_calls"] == 1  # the older one never left its debounce


async def test_cancel_request_is_honoured(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=4000)
    await wait_engine(client)
    uri = "file:///tmp/cancel.py"
    open_doc(client, uri, PYTHON_DOCS[1])
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=end_of(PYTHON_DOCS[1]),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
    pending = asyncio.ensure_future(
        client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me")
    )
    await asyncio.sleep(0.3)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(pending, 10)
    s = await stats(client)
    assert s["cancelled"] == 1 and s["engine_calls"] == 0


async def test_bad_input_gives_empty_results_and_a_log_line(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)

    unknown = await inline(client, "file:///tmp/never-opened.py", types.Position(0, 0))
    assert not unknown.items
    assert any("unknown document" in m.message for m in client.log_messages)

    open_doc(client, "file:///tmp/short.py", "x = 1\n")
    past = await inline(client, "file:///tmp/short.py", types.Position(50, 0))
    assert not past.items
    assert any("past the end" in m.message for m in client.log_messages)
    huge_column = await inline(client, "file:///tmp/short.py", types.Position(0, 10_000))  # clamps to the line end
    assert all(i.range.start == types.Position(0, 5) for i in huge_column.items)

    open_doc(client, "file:///tmp/blob.bin", "\x00\x01\x02ELF\x00" * 100, language="plaintext")
    binary = await inline(client, "file:///tmp/blob.bin", types.Position(0, 10))
    assert not binary.items

    huge = "# " + "x" * 3_000_000 + "\n" + "def f():\n    return " + "\n" * 10
    open_doc(client, "file:///tmp/huge.py", huge)
    result = await inline(client, "file:///tmp/huge.py", types.Position(2, 11))
    assert all(i.range.start == types.Position(2, 11) for i in result.items)

    s = await stats(client)
    assert s["requests"] == 5 and s["empty"] >= 3


async def test_a_request_it_cannot_read_is_answered_with_an_error(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    open_doc(client, "file:///tmp/short.py", "x = 1\n")
    for n, position in enumerate(({"line": -1, "character": 0}, {"line": 0, "character": 2**31})):  # not LSP uintegers
        params = {"textDocument": {"uri": "file:///tmp/short.py"}, "position": position, "context": {"triggerKind": 1}}
        answer = Future()  # sent as raw JSON: the client's own types would refuse these positions
        client.protocol._request_futures[f"bad-{n}"] = answer
        client.protocol._send_data({"jsonrpc": "2.0", "id": f"bad-{n}", "method": "textDocument/inlineCompletion", "params": params})
        with pytest.raises(JsonRpcInvalidParams):
            await asyncio.wait_for(asyncio.wrap_future(answer), 10)
    # readable but outside the document: an empty answer
    far = await inline(client, "file:///tmp/short.py", types.Position(2**31 - 1, 2**31 - 1))
    assert not far.items


async def test_a_lone_surrogate_is_repaired_at_the_boundary(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    text = "s = '\ud800'\ndef add(a, b):\n    return "  # JSON can carry "\\ud800"; no UTF encoding can
    open_doc(client, "file:///tmp/surrogate.py", text)
    result = await inline(client, "file:///tmp/surrogate.py", end_of(text))
    assert all(i.range.start == end_of(text) for i in result.items)  # U+FFFD keeps every position
    messages = [m.message for m in client.log_messages]
    assert sum("lone surrogate" in m for m in messages) == 1
    assert not any("internal error" in m or "cannot be encoded" in m for m in messages)
    s = await stats(client)
    assert s["engine_calls"] == 1 and s["engine_errors"] == 0


async def test_accented_cjk_and_emoji_lines_get_utf16_ranges(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    for i, line in enumerate(["s = 'café' + ", "名前 = '値' + ", "e = '😀😀' + "]):
        uri = f"file:///tmp/unicode{i}.py"
        text = line
        open_doc(client, uri, text)
        pos = end_of(text)
        result = await inline(client, uri, pos)
        for item in result.items:
            assert item.range.start == pos and item.range.end == pos
    assert end_of("e = '😀😀' + ").character == len("e = '😀😀' + ") + 2


async def test_completion_fallback_for_clients_without_inline_completion(client: LanguageClient, engine):
    await start(client, inline=False, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    for i, text in enumerate(PYTHON_DOCS):
        uri = f"file:///tmp/fallback{i}.py"
        open_doc(client, uri, text)
        result = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=end_of(text))
        )
        assert result.is_incomplete
        if result.items:
            (item,) = result.items
            assert item.text_edit.new_text.strip()
            assert item.text_edit.range.start == end_of(text)
            return
    raise AssertionError("no completion item for any sample document")


async def test_toggle_and_settings_change(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    toggled = await command(client, "mercury.toggle")
    assert toggled["enabled"] is False
    uri = "file:///tmp/toggle.py"
    open_doc(client, uri, PYTHON_DOCS[1])
    assert not (await inline(client, uri, end_of(PYTHON_DOCS[1]))).items
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"mercury": {"enabled": True, "maxTokens": 8, "budgetMs": "slow"}})
    )
    s = await command(client, "mercury.stats")
    assert s["enabled"] is True and s["engine_calls"] == 0
    assert any("budgetMs" in m.message for m in client.log_messages)  # the bad value is reported


async def test_completions_below_min_confidence_are_hidden(client: LanguageClient, engine):
    # No answer of the random model is 0.999 sure: every one is hidden, and counted.
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0, min_confidence=0.999)
    await wait_engine(client)
    for i, text in enumerate(PYTHON_DOCS[:4]):
        open_doc(client, f"file:///tmp/gate{i}.py", text)
        assert not (await inline(client, f"file:///tmp/gate{i}.py", end_of(text))).items
    s = await stats(client)
    assert s["engine_calls"] == 4 and s["low_confidence"] == 4 and s["served"] == 0
    # Lowered, the same positions ask the engine again (hidden answers are not served from the cache).
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"mercury": {"minConfidence": 0}}))
    shown = [(await inline(client, f"file:///tmp/gate{i}.py", end_of(text))).items for i, text in enumerate(PYTHON_DOCS[:4])]
    s = await stats(client)
    assert s["engine_calls"] == 8 and s["low_confidence"] == 4 and any(shown)


async def test_accepting_a_suggestion_finds_the_next_one_prefetched(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=5000, debounce_ms=0)
    await wait_engine(client)
    for i, text in enumerate(PYTHON_DOCS):
        uri = f"file:///tmp/prefetch{i}.py"
        open_doc(client, uri, text)
        pos = end_of(text)
        result = await inline(client, uri, pos)
        if not result.items:
            continue
        s = await stats(client)
        while s["prefetch_pending"]:
            await asyncio.sleep(0.05)
            s = await stats(client)
        if not s["prefetched"]:
            # no prefetch for a suggestion that replaces closing characters or whose next position
            # is cached already, or the noise after it was post-processed away: try another
            continue
        # Accept: the editor inserts the suggestion and asks again at the new cursor.
        accepted = result.items[0].insert_text
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=accepted)],
            )
        )
        calls = s["engine_calls"]
        following = await inline(client, uri, end_of(text + accepted), invoked=False)
        assert following.items
        after = await stats(client)
        assert after["engine_calls"] == calls and after["cache_hits"] == s["cache_hits"] + 1
        return
    raise AssertionError("no sample document produced a prefetched suggestion")
