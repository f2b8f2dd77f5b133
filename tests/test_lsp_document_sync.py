"""Document sync through pygls's real message handling: every change of a didChange, in order,
lands where the client meant it, against a reference that splices code-point offsets."""

import io

from hypothesis import given, settings, strategies as st

from mercury_lsp.server import create_server
from test_lsp_documents import lsp_position, splits_crlf

URI = "file:///sync.py"
TEXT = st.text(alphabet=st.sampled_from(list("ab \t\n\r\x0c\x85\u2028éß中😀")), max_size=40)


def started_server(encoding: str):
    """A language server that has been initialized with `encoding`, fed messages in process."""
    server = create_server()
    server.protocol.set_writer(io.BytesIO())  # replies go nowhere; only the documents matter here
    send(server, "initialize", {"processId": None, "rootUri": None,
                                "capabilities": {"general": {"positionEncodings": [encoding]}}}, msg_id=1)
    send(server, "initialized", {})
    return server


def send(server, method: str, params: dict, msg_id=None) -> None:
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if msg_id is not None:
        message["id"] = msg_id
    server.protocol.handle_message(server.protocol.structure_message(message))


def open_and_change(server, text: str, changes: list[dict]) -> str:
    send(server, "textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": text}})
    send(server, "textDocument/didChange", {"textDocument": {"uri": URI, "version": 2}, "contentChanges": changes})
    return server.documents.get(URI).text


def change(text: str, a: int, b: int, new: str, encoding: str) -> dict:
    (sl, sc), (el, ec) = lsp_position(text, a, encoding), lsp_position(text, b, encoding)
    return {"range": {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}, "text": new}


def test_multi_cursor_edit_lands_where_each_cursor_is():
    # VS Code sends one change per cursor, bottom-up, in one notification
    server = started_server("utf-16")
    got = open_and_change(server, "import os\nimport sys\n\nprint(os, sys)\n", [
        {"range": {"start": {"line": 1, "character": 10}, "end": {"line": 1, "character": 10}}, "text": "x"},
        {"range": {"start": {"line": 0, "character": 9}, "end": {"line": 0, "character": 9}}, "text": "x"},
    ])
    assert got == "import osx\nimport sysx\n\nprint(os, sys)\n"


@settings(max_examples=150, deadline=None)
@given(TEXT, st.data(), st.sampled_from(["utf-16", "utf-8"]))
def test_random_multi_change_notifications_match_a_reference(text, data, encoding):
    server = started_server(encoding)
    reference, changes = text, []
    for _ in range(data.draw(st.integers(1, 6))):
        a = data.draw(st.integers(0, len(reference)))
        b = data.draw(st.integers(a, len(reference)))
        if splits_crlf(reference, a) or splits_crlf(reference, b):
            continue  # no LSP position lies between \r and \n
        new = data.draw(TEXT)
        changes.append(change(reference, a, b, new, encoding))
        reference = reference[:a] + new + reference[b:]
    assert open_and_change(server, text, changes) == reference
