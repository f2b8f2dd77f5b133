"""The open documents, kept in sync from didOpen/didChange/didClose.

Our own copy rather than pygls's workspace: pygls splits lines with str.splitlines(), which also
breaks at form feeds, \\x1c..\\x1e, \\x85 and \\u2028/\\u2029, so an edit in a file holding one of them
lands on the wrong line; and it rebuilds the text line by line in Python on every keystroke. Here
a document is a list of lines split at LSP's own line breaks, and an edit replaces the lines it
touches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .context import units_to_index

# JSON may carry a lone surrogate (\ud800), which no UTF encoding can send on. U+FFFD has the same
# length in UTF-16, UTF-8 (with surrogatepass) and code points, so every position stays valid.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# Split after each LSP line break (\n, \r\n, a lone \r), keeping it on its line.
LINE_END = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def split_lines(text: str) -> list[str]:
    """Lines with their line breaks; the last one (maybe empty) has none."""
    return LINE_END.split(text)


def content(line: str) -> str:
    """A line without its break (a line holds at most one, at its end)."""
    return line.rstrip("\r\n")


@dataclass
class Document:
    """Held as lines, so a keystroke costs the length of its lines, not of the document: a
    20 MB string is 10-16 ms to splice in Python."""

    uri: str
    lines: list[str]
    language: str
    version: int | None = None
    size: int = 0  # characters

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def replace(self, start: tuple[int, int], end: tuple[int, int], new_text: str, encoding: str = "utf-16") -> None:
        """Replace the range (line, character)..(line, character). Positions past the end of a line
        clamp to it, past the last line to the end of the document (LSP rules)."""
        last = len(self.lines) - 1
        (sl, sc), (el, ec) = start, end
        if sl > last:
            sl, sc = last, len(self.lines[last])
        if el > last:
            el, ec = last, len(self.lines[last])
        a = units_to_index(content(self.lines[sl]), sc, encoding)
        b = units_to_index(content(self.lines[el]), ec, encoding)
        if (el, b) < (sl, a):
            el, b = sl, a
        lo, head, rest = sl, self.lines[sl][:a], new_text + self.lines[el][b:]
        if not head and rest.startswith("\n") and sl > 0 and self.lines[sl - 1].endswith("\r"):
            lo, head = sl - 1, self.lines[sl - 1]  # that \r and this \n become one line break
        piece = head + rest
        pieces = split_lines(piece)
        if el < last:
            pieces.pop()  # the piece ends with line el's break: no empty line after it
        self.size += len(piece) - sum(len(line) for line in self.lines[lo : el + 1])
        self.lines[lo : el + 1] = pieces

    def window(self, line: int, before: int, after: int) -> tuple[str, int] | None:
        """The text of whole lines around `line`: at least `before` characters ahead of it and
        `after` behind it (or up to the document's ends), and the number of its first line."""
        if not 0 <= line < len(self.lines):
            return None
        first, got = line, 0
        while first > 0 and got < before:
            first -= 1
            got += len(self.lines[first])
        last, got = line, len(self.lines[line])
        while last + 1 < len(self.lines) and got < after:
            last += 1
            got += len(self.lines[last])
        return "".join(self.lines[first : last + 1]), first


def new_document(uri: str, text: str, language: str = "", version: int | None = None) -> Document:
    return Document(uri, split_lines(text), language, version, len(text))


def apply_change(text: str, start: tuple[int, int] | None, end: tuple[int, int] | None, new_text: str,
                 encoding: str = "utf-16") -> str:
    """The text after one content change (the whole text when the change has no range)."""
    if start is None or end is None:
        return new_text
    doc = new_document("", text)
    doc.replace(start, end, new_text, encoding)
    return doc.text


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
        self.open[uri] = new_document(uri, self._clean(uri, text), language or "", version)

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
                doc.lines, doc.size = split_lines(new_text), len(new_text)
            else:
                start, end = (rng.start.line, rng.start.character), (rng.end.line, rng.end.character)
                doc.replace(start, end, new_text, encoding)
        doc.version = version
        return True

    def did_close(self, uri: str) -> None:
        self.open.pop(uri, None)
