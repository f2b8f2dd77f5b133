"""`mercury-bench edits`: what a keystroke costs the language server in a big document.

A real `mercury-lsp --stdio` opens a document of `--mb` megabytes, then takes `--keystrokes`
one-character didChange notifications near its start, middle and end. Notifications get no reply,
so each batch is followed by a `mercury/stats` request: its answer comes once every change before
it is applied. The cost of a keystroke is (batch time - one stats round trip) / keystrokes.
"""

from __future__ import annotations

import asyncio
import time

from .latency import lsp_command
from .lsp_client import LspClient
from .report import save_json, table

LINE = "    total = compute(values[index], weight=0.5)  # a line of code\n"


def add_arguments(p) -> None:
    p.add_argument("--mb", type=float, default=20.0, help="document size in megabytes (default %(default)s)")
    p.add_argument("--keystrokes", type=int, default=100, help="keystrokes at each place (default %(default)s)")
    p.add_argument("--lsp-command", help="command that starts the language server on stdio (default: mercury-lsp --stdio)")


async def stats_round_trip(client: LspClient) -> float:
    start = time.perf_counter()
    await client.request("mercury/stats", {}, timeout=120)
    return (time.perf_counter() - start) * 1000


async def type_at(client: LspClient, uri: str, line: int, keystrokes: int, version: int) -> float:
    """ms per keystroke, typing `keystrokes` characters at the start of `line`."""
    start = time.perf_counter()
    for i in range(keystrokes):
        here = {"line": line, "character": i}
        await client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version + i},
                                                       "contentChanges": [{"range": {"start": here, "end": here}, "text": "x"}]})
    await client.request("mercury/stats", {}, timeout=120)
    return (time.perf_counter() - start) * 1000


async def run(args) -> dict:
    lines = max(3, int(args.mb * 1e6 / len(LINE)))
    client = await LspClient.start(lsp_command(args.lsp_command), stderr=asyncio.subprocess.DEVNULL)
    try:
        await client.initialize({"mercury": {"engineAutostart": False, "engineSocket": "/nonexistent/mercury.sock"}})
        uri = "file:///mercury-bench/big.py"
        await client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                      "text": LINE * lines}})
        open_ms = await stats_round_trip(client)
        round_trip = min([await stats_round_trip(client) for _ in range(5)])
        rows, version = {}, 2
        for place, line in (("start", 1), ("middle", lines // 2), ("end", lines - 2)):
            total = await type_at(client, uri, line, args.keystrokes, version)
            version += args.keystrokes
            rows[place] = max(0.0, total - round_trip) / args.keystrokes
    finally:
        await client.shutdown()
    return {"document_mb": round(len(LINE) * lines / 1e6, 1), "lines": lines, "keystrokes": args.keystrokes,
            "open_ms": open_ms, "stats_round_trip_ms": round_trip, "ms_per_keystroke": rows}


def main(args) -> int:
    from pathlib import Path

    result = asyncio.run(run(args))
    print(f"{result['document_mb']} MB document, {result['lines']} lines: opened in {result['open_ms']:.0f} ms")
    print(table(["place", "ms per keystroke"], [[k, v] for k, v in result["ms_per_keystroke"].items()]))
    written = save_json(result, Path(args.out_dir) / "edits.json", args.json_out)
    print("results: " + ", ".join(map(str, written)))
    return 0
