"""`mercury-bench latency`: keystroke-to-suggestion through a real `mercury-lsp --stdio` session.

The bench plays an editor: initialize (engine socket and budget in initializationOptions), open a
held-out file with the cursor at a task's cut point, then type the first characters of the true
middle one keystroke at a time. Each keystroke is a didChange followed at once by an
inlineCompletion request (trigger Automatic, as while typing); the time from sending the didChange
to receiving the answer is one sample. Where the time went comes from the language server's
`mercury/stats` and the engine's `stats`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
import sys
import time
from pathlib import Path

from .lsp_client import LspClient, position_at
from .report import percentile, save_json, table

AUTOMATIC, INVOKED = 2, 1


def add_arguments(p) -> None:
    p.add_argument("--tasks", nargs="+", help="task files giving files and cursor positions (default: the shipped rest_of_line and single_line tasks)")
    p.add_argument("--requests", type=int, default=200, help="completion requests to time (default %(default)s)")
    p.add_argument("--keystrokes", type=int, default=4, help="keystrokes typed at each cursor position (default %(default)s)")
    p.add_argument("--budget-ms", type=float, default=250.0, help="latency budget given to the language server (default %(default)s)")
    p.add_argument("--pause-ms", type=float, default=30.0, help="think time after each answer, before the next keystroke (default %(default)s)")
    p.add_argument("--trigger", choices=["automatic", "invoked"], default="automatic")
    p.add_argument("--min-confidence", type=float, help="the language server's minConfidence (default: its own default)")
    p.add_argument("--warmup", type=int, default=5, help="untimed requests first (default %(default)s)")
    p.add_argument("--socket", help="use the engine already serving this socket (default: start one)")
    p.add_argument("--lsp-command", help="command that starts the language server on stdio (default: mercury-lsp --stdio)")


def lsp_command(custom: str | None) -> list[str]:
    if custom:
        import shlex

        return shlex.split(custom)
    beside = Path(sys.executable).parent / "mercury-lsp"
    return [str(beside) if beside.exists() else shutil.which("mercury-lsp") or "mercury-lsp", "--stdio"]


def scenarios(tasks: list[dict], keystrokes: int):
    """(document text before the cursor, after it, characters to type) per cursor position. The
    middle's indentation is taken as typed already: editors indent a fresh line themselves."""
    for task in tasks:
        middle = task["canonical_solution"]
        indent = middle[: len(middle) - len(middle.lstrip(" \t"))]
        typed = middle[len(indent):][:keystrokes]
        if typed:
            yield task["prompt"] + indent, task["suffix"], typed


def items_of(result) -> list:
    if isinstance(result, dict):
        return result.get("items") or []
    return result or []


async def run_session(socket_path, tasks: list[dict], args, log=lambda m: None) -> dict:
    options = {"mercury": {"engineSocket": str(socket_path), "engineAutostart": False, "budgetMs": args.budget_ms}}
    if args.min_confidence is not None:
        options["mercury"]["minConfidence"] = args.min_confidence
    client = await LspClient.start(lsp_command(args.lsp_command), stderr=asyncio.subprocess.DEVNULL)
    samples: list[dict] = []
    trigger = AUTOMATIC if args.trigger == "automatic" else INVOKED
    try:
        await client.initialize(options)
        wanted = args.warmup + args.requests
        doc = 0
        for prefix, suffix, typed in _cycle(scenarios(tasks, args.keystrokes), wanted):
            doc += 1
            uri = f"file:///mercury-bench/doc{doc}.py"
            await client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": prefix + suffix}})
            text = prefix
            for version, ch in enumerate(typed, start=2):
                here = position_at(text)
                start = time.perf_counter()
                await client.notify("textDocument/didChange", {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"range": {"start": here, "end": here}, "text": ch}]})
                text += ch
                result = await client.request("textDocument/inlineCompletion", {
                    "textDocument": {"uri": uri}, "position": position_at(text),
                    "context": {"triggerKind": trigger}}, timeout=30.0 + args.budget_ms / 1000)
                ms = (time.perf_counter() - start) * 1000
                samples.append({"ms": ms, "items": len(items_of(result))})
                if len(samples) % 20 == 0:
                    log(f"{max(0, len(samples) - args.warmup)}/{args.requests} requests")
                if len(samples) >= wanted:
                    break
                await asyncio.sleep(args.pause_ms / 1000)
            await client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            if len(samples) >= wanted:
                break
        lsp_stats = await client.request("mercury/stats", {}, timeout=30)
    finally:
        await client.shutdown()
    # why suggestions were missing, in the server's own words (most frequent first)
    reasons = Counter(m for m in client.log_messages if "no suggestion" in m or "engine" in m)
    return {"samples": samples[args.warmup:], "lsp_stats": lsp_stats, "server_log": dict(reasons.most_common(10))}


def _cycle(items, wanted: int):
    items = list(items)
    if not items:
        raise SystemExit("no cursor positions: the task files have no tasks with a non-empty middle")
    n = 0
    while n < wanted:  # more requests than tasks: go round again
        for it in items:
            yield it
            n += 1


def summarize(samples: list[dict], budget_ms: float, lsp_stats: dict, engine_before: dict | None, engine_after: dict | None) -> dict:
    ms = [s["ms"] for s in samples]
    out = {
        "requests": len(ms),
        "budget_ms": budget_ms,
        "keystroke_to_suggestion_ms": {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
                                       "mean": sum(ms) / len(ms) if ms else None, "max": max(ms, default=None)},
        "inside_budget": sum(m <= budget_ms for m in ms) / len(ms) if ms else None,
        "with_suggestion": sum(s["items"] > 0 for s in samples) / len(ms) if ms else None,
        "language_server": lsp_stats,
    }
    if engine_after:
        engine = {k: engine_after.get(k) for k in ("latency_ms", "queue_ms", "model_ms", "mean_batch_size", "model", "device") if k in engine_after}
        if engine_before:
            engine["requests"] = engine_after.get("requests", 0) - engine_before.get("requests", 0)
            engine["tokens"] = engine_after.get("tokens", 0) - engine_before.get("tokens", 0)
            engine["forwards"] = engine_after.get("forwards", 0) - engine_before.get("forwards", 0)
        out["engine"] = engine
    return out


def breakdown_rows(summary: dict) -> list[list]:
    """One row per stage, outermost first; each stage's time includes the ones below it."""
    lsp, engine = summary.get("language_server") or {}, summary.get("engine") or {}
    stages = [("keystroke -> suggestion (client wall)", summary["keystroke_to_suggestion_ms"]),
              ("language server: request in -> answer out", lsp.get("latency_ms")),
              ("engine round trip seen by the server", lsp.get("engine_ms")),
              ("engine: arrival -> reply (queue + model)", engine.get("latency_ms")),
              ("engine queue", engine.get("queue_ms")),
              ("model", engine.get("model_ms"))]
    return [[name, d.get("p50"), d.get("p95"), d.get("p99")] for name, d in stages if isinstance(d, dict)]


def render(summary: dict) -> str:
    lines = [table(["stage (ms)", "p50", "p95", "p99"], breakdown_rows(summary)), ""]
    lines.append(f"requests {summary['requests']}, inside the {summary['budget_ms']:g} ms budget: "
                 f"{100 * (summary['inside_budget'] or 0):.1f}%, with a suggestion: {100 * (summary['with_suggestion'] or 0):.1f}%")
    lsp = summary.get("language_server") or {}
    if lsp:
        lines.append("language server: " + ", ".join(f"{k} {lsp[k]}" for k in
                     ("requests", "served", "empty", "cache_hits", "typed_through", "engine_calls", "engine_errors", "low_confidence",
                      "superseded") if k in lsp))
    for message, count in list((summary.get("server_log") or {}).items())[:3]:
        lines.append(f"server log, {count}x: {message[:160]}")
    return "\n".join(lines)


def main(args) -> int:
    from . import plots
    from .cli import load_task_files, typing_task_files
    from .taskfile import round_robin
    from .engine_process import BenchEngine, engine_stats

    tasks, files = load_task_files(args.tasks or typing_task_files(), None)
    tasks = round_robin(tasks)
    log = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    engine = None if args.socket else BenchEngine(args.model, args.device).wait_ready()
    socket_path = args.socket or engine.socket_path
    try:
        before = engine_stats(socket_path)
        session = asyncio.run(run_session(socket_path, tasks, args, log))
        after = engine_stats(socket_path)
    finally:
        if engine:
            engine.stop()
    summary = summarize(session["samples"], args.budget_ms, session["lsp_stats"], before, after)
    summary.update(task_files=files, keystrokes=args.keystrokes, trigger=args.trigger, pause_ms=args.pause_ms,
                   engine_started_by_bench=engine is not None, server_log=session["server_log"])
    print(render(summary))
    out_dir = Path(args.out_dir)
    written = save_json({**summary, "latencies_ms": [round(s["ms"], 3) for s in session["samples"]]},
                        out_dir / "latency.json", args.json_out)
    print("results: " + ", ".join(map(str, written)), file=sys.stderr)
    plots.latency_histogram([s["ms"] for s in session["samples"]], args.budget_ms, out_dir / "latency_hist.png")
    return 0
