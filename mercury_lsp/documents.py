"""The open documents, kept in sync from didOpen/didChange/didClose.

Our own copy rather than pygls's workspace: pygls splits lines with str.splitlines(), which also
breaks at form feeds, \\x1c..\\x1e, \\x85 and \\u2028/\\u2029, so an edit in a file holding one of them
lands on the wrong line; and it rebuilds the text line by line in Python on every keystroke. Here
an edit is two offset look-ups with LSP's own line breaks and one string splice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .context import locate, units_to_index

# JSON may carry a lone surrogate (\ud800), which no UTF encoding can send on. U+FFFD has the same
# length in UTF-16, UTF-8 (with surrogatepass) and code points, so every position stays valid.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Document:
    uri: str
    text: str
    language: str
    version: int | None = None


def offset_at(text: str, line: int, character: int, encoding: str) -> int:
    """String offset of an LSP position; past the end of a line or the document clamps to it."""
    where = locate(text, line, character, encoding)
    return len(text) if where is None else where[2]


def apply_change(text: str, start: tuple[int, int] | None, end: tuple[int, int] | None, new_text: str,
                 encoding: str = "utf-16") -> str:
    """The text after one content change: replace the range (line, character)..(line, character),
    or the whole text when the change has no range."""
    if start is None or end is None:
        return new_text
    where = locate(text, start[0], start[1], encoding)
    if where is None:
        return text + new_text
    line_start, line_end, a = where
    if end[0] == start[0]:  # the usual keystroke: one line look-up serves both ends
        b = line_start + units_to_index(text[line_start:line_end], end[1], encoding)
    else:
        b = offset_at(text, end[0], end[1], encoding)
    return text[:a] + new_text + text[max(a, b):]


def repaired(text: str) -> tuple[str, int]:
    """`text` with lone surrogates replaced by U+FFFD, and how many there were."""
    return LONE_SURROGATE.subn("\ufffd", text) if LONE_SURROGATE.search(text) else (text, 0)


class Documents:
    def __init__(self, log=lambda message: None):
        self.open: dict[str, Document] = {}
        self.log = log

    def get(self, uri: str) -> Document | None:
        return self.open.get(uri)

    def _clean(self, uri: str, text: str) -> str:
        text, bad = repaired(text)
        if bad:
            self.log(f"{uri}: {bad} lone surrogate(s) (not valid UTF-16) replaced with U+FFFD")
        return text

    def did_open(self, uri: str, text: str, language: str, version: int | None) -> None:
        self.open[uri] = Document(uri, self._clean(uri, text), language or "", version)

    def did_change(self, uri: str, changes, version: int | None, encoding: str) -> bool:
        """Apply LSP content changes (objects with `text` and, for incremental ones, `range`).
        False for a document that was never opened."""
        doc = self.open.get(uri)
        if doc is None:
            return False
        for change in changes:
            rng = getattr(change, "range", None)
            new_text = self._clean(uri, change.text)
            if rng is None:
                doc.text = new_text
            else:
                start, end = (rng.start.line, rng.start.character), (rng.end.line, rng.end.character)
                doc.text = apply_change(doc.text, start, end, new_text, encoding)
        doc.version = version
        return True

    def did_close(self, uri: str) -> None:
        self.open.pop(uri, None)
