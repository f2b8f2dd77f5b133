"""`mercury-bench throughput`: tokens/s and requests/s for 1..N concurrent clients of one engine.

Each client is its own socket connection running a closed loop (send an infill, wait for the
answer, send the next) for a fixed time per level, so the engine's dynamic batching is what lets
more clients get more done.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

from .report import percentile, save_json, table


def add_arguments(p) -> None:
    p.add_argument("--tasks", nargs="+", help="task files whose prompts are sent (default: the shipped rest_of_line and single_line tasks)")
    p.add_argument("--clients", type=int, default=8, help="most concurrent clients (levels 1, 2, 4, ... up to it; default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="time per level (default %(default)s)")
    p.add_argument("--budget-ms", type=float, default=250.0, help="budget_ms of every request (default %(default)s)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of every request (default: the task's)")
    p.add_argument("--socket", help="use the engine already serving this socket (default: start one)")


def levels(most: int) -> list[int]:
    out = [1]
    while out[-1] * 2 < most:
        out.append(out[-1] * 2)
    return out + [most] if most > 1 else out


async def client_loop(socket_path, jobs, stop_at: float, records: list[dict]) -> None:
    from mercury_engine.protocol import make_unpacker, pack

    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    unpacker = make_unpacker()
    try:
        for req_id in itertools.count(1):
            if time.monotonic() >= stop_at:
                break
            start = time.perf_counter()
            writer.write(pack({"id": req_id, "method": "infill", "params": next(jobs)}))
            await writer.drain()
            reply = None
            while reply is None:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the engine closed the connection")
                unpacker.feed(data)
                reply = next(iter(unpacker), None)
            ms = (time.perf_counter() - start) * 1000
            if "error" in reply:
                records.append({"ms": ms, "error": reply["error"].get("code")})
            else:
                r = reply["result"]
                records.append({"ms": ms, "tokens": sum(c["tokens"] for c in r["completions"]), "truncated": r["truncated"]})
    finally:
        writer.close()


async def run_level(socket_path, params: list[dict], clients: int, seconds: float) -> dict:
    records: list[dict] = []
    stop_at = time.monotonic() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(socket_path, itertools.cycle(params[i::clients] or params), stop_at, records)
                           for i in range(clients)))
    elapsed = time.perf_counter() - start
    ok = [r for r in records if "error" not in r]
    ms = [r["ms"] for r in ok]
    return {"clients": clients, "seconds": elapsed, "requests": len(ok), "errors": len(records) - len(ok),
            "requests_per_s": len(ok) / elapsed, "tokens_per_s": sum(r["tokens"] for r in ok) / elapsed,
            "truncated": sum(r["truncated"] for r in ok) / len(ok) if ok else None,
            "latency_ms": {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99)}}


def batch_size_between(before: dict, after: dict) -> float | None:
    """Mean batch size over the interval, from the engine's lifetime counters."""
    batches = after["batches"] - before["batches"]
    jobs = after["mean_batch_size"] * after["batches"] - before["mean_batch_size"] * before["batches"]
    return jobs / batches if batches > 0 else None


def main(args) -> int:
    from . import plots
    from .cli import load_task_files, typing_task_files
    from .editor_view import editor_request
    from .engine_process import BenchEngine, engine_stats
    from .taskfile import round_robin

    tasks, files = load_task_files(args.tasks or typing_task_files(), None)
    params = [{**editor_request(t, args.max_tokens), "language": "python", "budget_ms": args.budget_ms}
              for t in round_robin(tasks)]
    engine = None if args.socket else BenchEngine(args.model, args.device).wait_ready()
    socket_path = args.socket or engine.socket_path
    rows = []
    try:
        asyncio.run(run_level(socket_path, params, 1, min(2.0, args.seconds)))  # warm up
        for n in levels(args.clients):
            before = engine_stats(socket_path)
            row = asyncio.run(run_level(socket_path, params, n, args.seconds))
            row["mean_batch_size"] = batch_size_between(before, engine_stats(socket_path))
            rows.append(row)
            print(f"  {n} clients: {row['requests_per_s']:.1f} req/s", file=sys.stderr, flush=True)
        info = engine_stats(socket_path)
    finally:
        if engine:
            engine.stop()
    print(table(["clients", "requests/s", "tokens/s", "mean batch", "p50 ms", "p95 ms", "errors", "truncated %"],
                [[r["clients"], r["requests_per_s"], r["tokens_per_s"], r["mean_batch_size"], r["latency_ms"]["p50"],
                  r["latency_ms"]["p95"], r["errors"], None if r["truncated"] is None else 100 * r["truncated"]] for r in rows]))
    result = {"levels": rows, "task_files": files, "budget_ms": args.budget_ms, "model": info.get("model"),
              "device": info.get("device"), "engine_started_by_bench": engine is not None}
    out_dir = Path(args.out_dir)
    written = save_json(result, out_dir / "throughput.json", args.json_out)
    print("results: " + ", ".join(map(str, written)), file=sys.stderr)
    plots.throughput_curve(rows, out_dir / "throughput.png")
    return 0
