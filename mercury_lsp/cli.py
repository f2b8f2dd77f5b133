"""`mercury-lsp --stdio | --tcp HOST:PORT | --version`."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mercury-lsp", description="Language server for diffusion code completion.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stdio", action="store_true", help="speak LSP on stdin/stdout (default)")
    mode.add_argument("--tcp", metavar="HOST:PORT", help="listen for one LSP client on TCP (debugging)")
    parser.add_argument("--version", action="version", version=f"mercury-lsp {__version__}")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="stderr logging of the server itself (editors show stderr in their LSP log)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="mercury-lsp %(levelname)s %(message)s")

    if args.tcp:
        host, sep, port = args.tcp.rpartition(":")
        if not sep or not port.isdigit():
            parser.error("--tcp expects HOST:PORT, e.g. 127.0.0.1:2087")
        from .server import create_server

        create_server().start_tcp(host or "127.0.0.1", int(port))
    else:
        from .fast_start import serve_stdio  # answers `initialize` while pygls imports

        serve_stdio()
    return 0


if __name__ == "__main__":
    sys.exit(main())
