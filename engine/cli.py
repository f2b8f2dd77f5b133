"""`mercury-engine serve|health|stats|stop|complete|train`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path

from .paths import DEFAULT_MODEL_DIR, default_socket_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mercury-engine", description="The diffusion-infilling engine process.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="load the model and answer requests on a local socket")
    serve.add_argument("--model", metavar="DIR", help="model folder (config.json, model.safetensors, tokenizer.json); default: the bundled model")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    serve.add_argument("--socket", metavar="PATH", help="Unix socket path (default: %s)" % "<runtime dir>/engine.sock")
    serve.add_argument("--tcp", metavar="PORT", type=int, help="also listen on 127.0.0.1:PORT (0: any free port)")
    serve.add_argument("--idle-timeout", metavar="SECONDS", type=float, default=1800.0, help="exit after this long with no clients (0: never; default 1800)")
    serve.add_argument("--frame-timeout", metavar="SECONDS", type=float, default=10.0, help="close a connection that sends half a frame and then nothing for this long")
    serve.add_argument("--max-batch", metavar="N", type=int, default=16, help="most requests decoded together (default 16)")
    serve.add_argument("--max-connections", metavar="N", type=int, help="clients served at once; more get an error and a close (default: the file-descriptor limit less 64, at most 1024)")
    serve.add_argument("--connection-timeout", metavar="SECONDS", type=float, default=600.0, help="close a connection that asks nothing for this long (0: never; default 600)")
    serve.add_argument("--log-file", metavar="PATH", help="log here, rotated at 1 MiB with one old file kept (default: stderr)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    for name, text in (("health", "is an engine up, and is it ready?"), ("stats", "request counters and latency"), ("stop", "ask the engine to exit")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--socket", metavar="PATH", help="Unix socket path (default: the runtime dir's engine.sock)")
        p.add_argument("--tcp", metavar="PORT", type=int, help="talk to 127.0.0.1:PORT instead")
        p.add_argument("--timeout", metavar="SECONDS", type=float, default=10.0)

    complete = sub.add_parser("complete", help="fill in the middle once and print it (no editor or running engine needed)")
    complete.add_argument("prefix", help=r"text before the cursor (\n, \t and \\ read as a line break, a tab, a backslash)")
    complete.add_argument("--suffix", default="", help="text after the cursor (same escapes)")
    complete.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    complete.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    complete.add_argument("--max-tokens", type=int, default=48)
    complete.add_argument("--threshold", type=float, default=0.9, help="confidence to commit a token early (default 0.9)")
    complete.add_argument("--raw", action="store_true", help="print the engine's text, not what an editor would show")

    train = sub.add_parser("train", help="train a model (see `mercury-engine train --help`)", add_help=False)
    train.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


class RateLimit(logging.Filter):
    """At most `burst` records of one message template per `period` seconds: a client storm (or a
    full file-descriptor table, which asyncio reports on every accept) must not fill the disk."""

    def __init__(self, burst: int = 10, period: float = 60.0):
        super().__init__()
        self.burst, self.period = burst, period
        self.seen: dict[tuple[str, str], list] = {}  # (logger, template) -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        window = self.seen.setdefault((record.name, str(record.msg)), [now, 0])
        if now - window[0] > self.period:
            if window[1] > self.burst:
                record.msg = f"{record.msg} (and {window[1] - self.burst} more like it in {self.period:g} s)"
            window[:] = [now, 0]
        window[1] += 1
        return window[1] <= self.burst


def setup_logging(level: str, path: str | None) -> None:
    handler = (logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=1) if path
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("mercury-engine: %(message)s"))
    handler.addFilter(RateLimit())
    logging.basicConfig(level=level, handlers=[handler])


def serve(args: argparse.Namespace) -> int:
    from .server import EngineAlreadyRunning, EngineServer

    model_dir = (Path(args.model) if args.model else DEFAULT_MODEL_DIR).resolve()
    if not (model_dir / "config.json").exists():
        if args.model:
            print(f"mercury-engine: --model {model_dir}: no config.json there (a model folder holds config.json, model.safetensors, tokenizer.json)", file=sys.stderr)
        else:
            print(f"mercury-engine: the bundled model is missing ({model_dir} has no config.json); pass --model DIR", file=sys.stderr)
        return 2
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        print(f"mercury-engine: --tcp {args.tcp}: a port is 0..65535", file=sys.stderr)
        return 2
    if args.max_batch < 1:
        print("mercury-engine: --max-batch must be at least 1", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_file)
    server = EngineServer(
        model_dir=model_dir,
        socket_path=Path(args.socket) if args.socket else default_socket_path(),
        device=args.device,
        tcp_port=args.tcp,
        idle_timeout=args.idle_timeout,
        frame_timeout=args.frame_timeout,
        max_batch=args.max_batch,
        max_connections=args.max_connections,
        connection_timeout=args.connection_timeout,
    )
    try:
        return asyncio.run(server.run())
    except EngineAlreadyRunning as exc:
        print(f"mercury-engine: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mercury-engine: cannot listen: {exc}", file=sys.stderr)
        return 1


def unescape(text: str) -> str:
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def complete(args: argparse.Namespace) -> int:
    """One completion in this process (the model loads here, no socket involved), shown as the
    language server would show it: its line mode, post-processing and confidence gate."""
    from mercury_lsp.context import context_between
    from mercury_lsp.postprocess import postprocess
    from mercury_lsp.settings import Settings

    from .loader import load_model
    from .sampler import InfillParams, Sampler

    prefix, suffix, settings = unescape(args.prefix), unescape(args.suffix), Settings()
    ctx = context_between(prefix, suffix, "python", settings.context_chars)
    sampler = Sampler(load_model(args.model, device=args.device))
    result = sampler.infill(InfillParams(prefix=prefix, suffix=suffix, max_tokens=args.max_tokens, budget_ms=60_000.0,
                                         threshold=args.threshold, single_line=bool(ctx and ctx.single_line)))
    best = result.completions[0] if result.completions else None
    raw, confidence = (best.text, best.confidence) if best else ("", 0.0)
    shown = postprocess(raw, ctx) if ctx and confidence >= settings.min_confidence else None
    print(raw if args.raw else shown.text if shown else "")
    print(f"mercury-engine: {best.tokens if best else 0} tokens in {result.forwards} forwards, {result.model_ms:.0f} ms, "
          f"confidence {confidence:.2f}" + ("" if args.raw or shown else "; an editor would show nothing (--raw prints it)"),
          file=sys.stderr)
    return 0


def ask(args: argparse.Namespace, method: str) -> int:
    from .client import EngineError, EngineUnavailable, call

    try:
        result = call(method, socket_path=args.socket, tcp_port=args.tcp, timeout=args.timeout)
    except (EngineUnavailable, EOFError, TimeoutError, OSError) as exc:
        print(f"mercury-engine: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"mercury-engine: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Idle OpenMP threads sleep instead of spinning (read when torch loads, so set it first): when
    # an editor, a build or a second process takes a core, spinning threads starve the one doing
    # the work. Measured on 2 cores with one busy: a training step 1.6k -> 2.9k tokens/s, an
    # engine forward 14.6 -> 10.8 ms p50; idle, 5% slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv[:1] == ["train"]:  # everything after `train` belongs to the trainer's own parser
        try:
            from .train import main as train_main
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.train":
                raise
            print("mercury-engine: this install has no trainer (mercury_engine.train)", file=sys.stderr)
            return 1
        return train_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "complete":
        return complete(args)
    return ask(args, "shutdown" if args.command == "stop" else args.command)


if __name__ == "__main__":
    sys.exit(main())
