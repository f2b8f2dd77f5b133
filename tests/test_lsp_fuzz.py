"""Random documents, edits and positions through a real `mercury-lsp --stdio` with a real engine:
never an error response, every item's range on the cursor line and inside it. And the server
imports no torch."""

from __future__ import annotations

import random
import subprocess
import sys

from lsprotocol import types
from pytest_lsp import LanguageClient

from test_lsp_server import client, inline, open_doc, start, stats, wait_engine  # noqa: F401

ALPHABET = "abcxyz_019 ()[]{}:=+-.,'\"#\t\n\r" + "éß中文😀\u2028\x0c\x85\x00"


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(size))


def lsp_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


async def test_random_documents_edits_and_positions(client: LanguageClient, engine):
    await start(client, engine_socket=str(engine), budget_ms=2000, debounce_ms=0)
    await wait_engine(client)
    rng = random.Random(1234)
    uri = "file:///tmp/fuzz.py"
    text = "def f(x):\n    return x\n"
    open_doc(client, uri, text)
    version = 1
    for step in range(60):
        # An incremental edit at a random valid place, as an editor sends it.
        lines = lsp_lines(text)
        line = rng.randrange(len(lines))
        col = rng.randint(0, len(lines[line]))  # code points; converted to UTF-16 below
        insert = random_text(rng, rng.randint(0, 12))
        pos = types.Position(line, utf16(lines[line][:col]))
        version += 1
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=insert)],
            )
        )
        lines[line] = lines[line][:col] + insert + lines[line][col:]
        text = "\n".join(lines)
        lines = lsp_lines(text)

        # A request at a random position, sometimes past the end of the line or the document.
        qline = rng.randrange(len(lines) + 2)
        qchar = rng.randrange(0, 40)
        result = await inline(client, uri, types.Position(qline, qchar), invoked=rng.random() < 0.5)
        for item in result.items:
            assert qline < len(lines)
            assert item.insert_text.strip()
            start_, end = item.range.start, item.range.end
            assert start_.line == end.line == qline
            assert start_.character == min(qchar, utf16(lines[qline])) or "\x00" in text
            assert start_.character <= end.character <= utf16(lines[qline])
    s = await stats(client)
    assert s["requests"] == 60 and s["served"] + s["empty"] == 60


def test_the_language_server_never_imports_torch():
    code = ("import sys, mercury_lsp.cli, mercury_lsp.server, mercury_lsp.fast_start; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
