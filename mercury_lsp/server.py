"""The language server: inline completions (and a one-item completion fallback) from the engine.

Every request ends with a result: a suggestion, or an empty answer plus one log line. The newest
request for a document wins; older ones answer empty at once (Neovim never cancels them).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from lsprotocol import types
from mercury_engine.protocol import is_valid_id
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from . import __version__
from .cache import CompletionCache
from .context import Context, build_context, locate, reach, units_len
from .documents import Documents
from .engine_client import FAILED, LOADING, READY, STARTING, EngineClient, EngineError
from .postprocess import Suggestion, postprocess
from .settings import Settings
from .stats import Stats

ENGINE_MARGIN_MS = 25.0  # budget kept back for the reply to travel and be post-processed
ENGINE_GRACE_S = 0.1  # how long past the budget we still wait for an engine reply (its last step)
PREFETCH_AFTER_S = 0.15  # quiet time on a document before the next suggestion is prefetched
PREFETCH_MAX_DOC = 1_000_000  # characters; bigger documents are not copied to prefetch
ENGINE_SETTINGS = ("engine_socket", "engine_command", "engine_autostart", "model", "engine_device")
STATS_METHOD = "mercury/stats"


class MercuryProtocol(LanguageServerProtocol):
    """pygls's protocol with two changes. It keeps no copy of the open documents: ours
    (documents.py) is the only store. (pygls applied every change to its copy first, clamping
    positions in place on the shared change objects, so a multi-cursor edit landed elsewhere in
    ours; and it cost O(lines) in Python per keystroke.) And a request it cannot read is answered
    with an error instead of being dropped, which left the editor waiting."""

    def structure_message(self, data: dict):
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            if isinstance(data, dict) and "method" in data and is_valid_id(data.get("id")):
                self._send_response(data["id"], error=types.ResponseError(code=e.code, message=f"{data['method']}: {e}"))
            raise

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _user_handler(self, method: str, params):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None


class MercuryServer(LanguageServer):
    def __init__(self):
        super().__init__("mercury-lsp", __version__, protocol_cls=MercuryProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.documents = Documents(log=lambda message: self.log(message, types.MessageType.Warning))
        self.cache = CompletionCache()
        self.stats = Stats()
        self.engine: EngineClient | None = None
        self.newest: dict[str, asyncio.Event] = {}  # uri -> "superseded" flag of its newest request
        self.prefetching: dict[str, asyncio.Event] = {}  # uri -> "abandon" flag of its prefetch
        self.progress_events: asyncio.Queue | None = None
        self.setting_problems: list[str] = []

    # ----- feedback ---------------------------------------------------------------------------

    def log(self, message: str, level: types.MessageType = types.MessageType.Log) -> None:
        self.window_log_message(types.LogMessageParams(type=level, message=f"mercury: {message}"))

    def on_engine_state(self, state: str, detail: str) -> None:
        level = types.MessageType.Warning if state == FAILED else types.MessageType.Info
        self.log(f"engine {state}" + (f": {detail}" if detail else ""), level)
        if state == READY:
            self.cache.clear()  # the engine may run another model than before
        if self.progress_events is not None:
            self.progress_events.put_nowait((state, detail))

    async def report_progress(self) -> None:
        """$/progress while the engine starts and loads its model, one begin ... end per start."""
        token = None
        while True:
            state, detail = await self.progress_events.get()
            busy = state in (STARTING, LOADING)
            message = "starting the engine" if state == STARTING else "loading the model" if busy else state
            if busy and token is None:
                token = f"mercury-engine-{uuid.uuid4().hex[:8]}"
                try:
                    await asyncio.wait_for(self.work_done_progress.create_async(token), 5.0)
                except Exception as e:  # a client may refuse progress; completions work without it
                    self.log(f"no progress reporting: {e}")
                    token = None
                    continue
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="Mercury", message=message))
            elif busy:
                self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))
            elif token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"engine {message}"))
                self.work_done_progress.tokens.pop(token, None)
                token = None

    def client_supports_progress(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def position_encoding(self) -> str:
        negotiated = self.server_capabilities.position_encoding  # pygls takes the client's choice
        return str(getattr(negotiated, "value", negotiated) or "utf-16")

    # ----- settings and engine ----------------------------------------------------------------

    def apply_settings(self, options) -> None:
        before = {k: getattr(self.settings, k) for k in ENGINE_SETTINGS}
        min_confidence = self.settings.min_confidence
        for problem in self.settings.update(options):
            self.log(problem, types.MessageType.Warning)
        after = {k: getattr(self.settings, k) for k in ENGINE_SETTINGS}
        if self.settings.min_confidence != min_confidence:
            self.cache.clear()  # it remembers hidden answers as empty ones
        if self.engine is not None and before != after:
            old, self.engine = self.engine, None
            asyncio.get_running_loop().create_task(old.close())
            self.cache.clear()
            self.start_engine()

    def start_engine(self) -> None:
        s = self.settings
        if self.engine is None:
            self.engine = EngineClient(
                socket_path=s.engine_socket,
                command=s.engine_command,
                model=s.model,
                device=s.engine_device,
                autostart=s.engine_autostart,
                log=self.log,
                on_state=self.on_engine_state,
            )
        if self.progress_events is None and self.client_supports_progress():
            self.progress_events = asyncio.Queue()
            asyncio.get_running_loop().create_task(self.report_progress())
        if s.enabled:
            self.engine.ensure_started()

    async def summary(self) -> dict:
        engine = self.engine
        info = {"state": engine.state if engine else "off", "socket": engine.socket_path if engine else None,
                "last_error": engine.last_error if engine else "", "started": engine.restarts if engine else 0,
                "health": engine.health if engine else {}}
        if engine is not None and engine.connected:
            try:
                info["stats"] = await engine.call("stats", timeout_s=0.5)
            except EngineError as e:
                info["stats_error"] = str(e)
        return {**self.stats.summary(), "enabled": self.settings.enabled, "engine": info,
                "prefetch_pending": len(self.prefetching),
                "cache_entries": len(self.cache.entries), "version": __version__}

    # ----- completions ------------------------------------------------------------------------

    async def suggest(self, uri: str, position: types.Position, invoked: bool) -> tuple[Context, Suggestion] | None:
        """The suggestion at `position`, or None. The newest request per document wins."""
        started = time.monotonic()
        self.stats.requests += 1
        superseded = asyncio.Event()
        if (older := self.newest.get(uri)) is not None:
            older.set()
        if (prefetch := self.prefetching.pop(uri, None)) is not None:
            prefetch.set()  # the user moved on; if it was for this position it is cached by now
        self.newest[uri] = superseded
        try:
            found = await self._suggest(uri, position, invoked, superseded, started)
            if found is not None:
                self.stats.record_served((time.monotonic() - started) * 1000)
                self.start_prefetch(uri, *found)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        except Exception as e:  # a bug must not turn into an error response in the editor
            self.log(f"internal error: {e!r}", types.MessageType.Error)
            found = None
        finally:
            if self.newest.get(uri) is superseded:
                del self.newest[uri]
        if found is None:
            self.stats.empty += 1
        return found

    async def _suggest(self, uri, position, invoked, superseded: asyncio.Event, started: float):
        s = self.settings
        if not s.enabled:
            return None
        doc = self.documents.get(uri)
        if doc is None:
            self.log(f"no suggestion: unknown document {uri}")
            return None
        where = doc.window(position.line, *reach(s.context_chars))
        ctx = where and build_context(where[0], position.line, position.character, doc.language, s.context_chars,
                                      self.position_encoding(), first_line=where[1])
        if ctx is None:
            self.log(f"no suggestion: position {position.line}:{position.character} is past the end or in binary content")
            return None

        hit = self.cache.get(ctx)
        if hit is not None:
            if hit.typed:
                self.stats.typed_through += 1
            else:
                self.stats.cache_hits += 1
            sug = postprocess(hit.text, ctx) if hit.text else None
            return None if sug is None else (ctx, sug)

        if not invoked and s.debounce_ms > 0:
            try:  # typing on: a newer request replaces this one before it reaches the engine
                await asyncio.wait_for(superseded.wait(), s.debounce_ms / 1000)
            except asyncio.TimeoutError:
                pass
        if superseded.is_set():
            self.stats.superseded += 1
            return None

        remaining_ms = s.budget_ms - (time.monotonic() - started) * 1000
        sug = await self.ask_engine(ctx, remaining_ms, superseded)
        return None if sug is None else (ctx, sug)

    async def ask_engine(self, ctx: Context, budget_ms: float, abandon: asyncio.Event, quiet: bool = False) -> Suggestion | None:
        """One engine round trip within `budget_ms`, post-processed and cached (an empty answer
        too); None when nothing is left of it, when the model is less sure than minConfidence, or
        (with one log line) when the engine is not ready, slow or wrong, or the request was
        abandoned. `quiet`: a prefetch, kept out of the request counters and the log."""
        if self.engine is None:
            self.start_engine()
        params = {
            "prefix": ctx.prefix,
            "suffix": ctx.suffix,
            "language": ctx.language,
            "max_tokens": self.settings.max_tokens,
            "budget_ms": max(10.0, budget_ms - ENGINE_MARGIN_MS),
            "single_line": ctx.single_line,
        }
        sent = time.monotonic()
        if not quiet:
            self.stats.engine_calls += 1
        try:
            result = await self.engine.infill(params, max(0.0, budget_ms / 1000) + ENGINE_GRACE_S, abandon)
            if result is None:
                if not quiet:
                    self.stats.superseded += 1
                return None
            best = result["completions"][0]
            raw, confidence = best["text"], best.get("confidence", 1.0)
            if not isinstance(raw, str):
                raise EngineError(f"unexpected engine result: text is {type(raw).__name__}")
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
                raise EngineError(f"unexpected engine result: confidence is {type(confidence).__name__}")
        except (EngineError, KeyError, IndexError, TypeError) as e:
            if not quiet:
                self.stats.engine_errors += 1
                self.log(f"no suggestion: {e if isinstance(e, EngineError) else f'unexpected engine result ({e!r})'}")
            return None
        if not quiet:
            self.stats.engine_ms.append((time.monotonic() - sent) * 1000)
        # A guess the model itself doubts is mostly noise: no ghost text beats a wrong one.
        doubted = confidence < self.settings.min_confidence
        if doubted and not quiet:
            self.stats.low_confidence += 1
        sug = None if doubted else postprocess(raw, ctx)
        if sug is not None or not result.get("truncated"):  # a rushed empty answer may not repeat
            self.cache.put(ctx, sug.text if sug else "")
        return sug

    def start_prefetch(self, uri: str, ctx: Context, sug: Suggestion) -> None:
        """Ask now for the suggestion that will be wanted once this one is accepted, so that
        accepting suggestion after suggestion needs no waiting (as llama.vim does)."""
        doc = self.documents.get(uri)
        if not self.settings.prefetch or sug.replace_chars or doc is None or doc.size > PREFETCH_MAX_DOC:
            return
        source = doc.text
        if (where := locate(source, ctx.line, ctx.character, ctx.encoding)) is None:
            return
        accepted = source[: where[2]] + sug.text + source[where[2] :]
        lines = sug.text.split("\n")
        last = lines[-1] if len(lines) > 1 else ctx.line_prefix + sug.text
        line, character = ctx.line + len(lines) - 1, units_len(last, ctx.encoding)
        next_ctx = build_context(accepted, line, character, ctx.language, self.settings.context_chars, ctx.encoding)
        if next_ctx is None or self.cache.get(next_ctx) is not None:
            return
        abandon = asyncio.Event()
        self.prefetching[uri] = abandon

        async def prefetch():
            try:
                # Only once the user pauses: while typing, the engine is kept for real requests.
                try:
                    await asyncio.wait_for(abandon.wait(), PREFETCH_AFTER_S)
                    return
                except asyncio.TimeoutError:
                    pass
                self.stats.prefetch_calls += 1
                nxt = await self.ask_engine(next_ctx, self.settings.budget_ms, abandon, quiet=True)
                if nxt is not None:
                    self.stats.prefetched += 1
            finally:
                if self.prefetching.get(uri) is abandon:
                    del self.prefetching[uri]

        asyncio.get_running_loop().create_task(prefetch())


def replace_range(ctx: Context, sug: Suggestion) -> types.Range:
    end = ctx.character + units_len(ctx.line_suffix[: sug.replace_chars], ctx.encoding)
    return types.Range(start=types.Position(ctx.line, ctx.character), end=types.Position(ctx.line, end))


def create_server() -> MercuryServer:
    server = MercuryServer()

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: MercuryServer, params: types.InitializeParams):
        ls.setting_problems = ls.settings.update(params.initialization_options)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: MercuryServer, params: types.InitializedParams):
        for problem in ls.setting_problems:
            ls.log(problem, types.MessageType.Warning)
        ls.start_engine()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def on_configuration(ls: MercuryServer, params: types.DidChangeConfigurationParams):
        ls.apply_settings(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_open(ls: MercuryServer, params: types.DidOpenTextDocumentParams):
        doc = params.text_document
        ls.documents.did_open(doc.uri, doc.text, doc.language_id, doc.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(ls: MercuryServer, params: types.DidChangeTextDocumentParams):
        doc = params.text_document
        if not ls.documents.did_change(doc.uri, params.content_changes, doc.version, ls.position_encoding()):
            ls.log(f"change to a document that is not open: {doc.uri}")

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(ls: MercuryServer, params: types.DidCloseTextDocumentParams):
        ls.documents.did_close(params.text_document.uri)
        for flags in (ls.newest, ls.prefetching):  # answer or drop what still waits for this document
            if (pending := flags.pop(params.text_document.uri, None)) is not None:
                pending.set()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: MercuryServer, params: types.InlineCompletionParams):
        invoked = params.context is None or params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await ls.suggest(params.text_document.uri, params.position, invoked)
        if found is None:
            return types.InlineCompletionList(items=[])
        ctx, sug = found
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=sug.text, range=replace_range(ctx, sug))]
        )

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls: MercuryServer, params: types.CompletionParams):
        """Fallback for clients without inline completion: one item holding the suggestion."""
        empty = types.CompletionList(is_incomplete=True, items=[])
        doc_caps = ls.client_capabilities.text_document
        if doc_caps is not None and doc_caps.inline_completion is not None:
            return empty  # the client shows our inline suggestions already
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        found = await ls.suggest(params.text_document.uri, params.position, invoked)
        if found is None:
            return empty
        ctx, sug = found
        first_line = sug.text.lstrip().split("\n", 1)[0]
        item = types.CompletionItem(
            label=first_line[:80] or sug.text.strip()[:80],
            kind=types.CompletionItemKind.Text,
            detail="mercury",
            sort_text="0",
            filter_text=sug.text,
            text_edit=types.TextEdit(range=replace_range(ctx, sug), new_text=sug.text),
            insert_text_format=types.InsertTextFormat.PlainText,
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(STATS_METHOD)
    async def stats_request(ls: MercuryServer, params):
        return await ls.summary()

    @server.command("mercury.stats")
    async def stats_command(ls: MercuryServer, *args):
        return await ls.summary()

    @server.command("mercury.toggle")
    def toggle_command(ls: MercuryServer, *args):
        ls.settings.enabled = not ls.settings.enabled
        ls.log(f"completions {'enabled' if ls.settings.enabled else 'disabled'}", types.MessageType.Info)
        if ls.settings.enabled:
            ls.start_engine()
        return {"enabled": ls.settings.enabled}

    @server.command("mercury.restartEngine")
    async def restart_command(ls: MercuryServer, *args):
        if ls.engine is None:
            ls.start_engine()
        else:
            ls.cache.clear()
            await ls.engine.restart()
        return {"state": ls.engine.state}

    return server
