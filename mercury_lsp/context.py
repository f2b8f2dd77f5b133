"""The text around the cursor: LSP (UTF-16) positions to string offsets, windowing, line mode."""

from __future__ import annotations

import re
from dataclasses import dataclass

# LSP recognises exactly these line breaks (str.splitlines also splits on \x0b, \x1c, \u2028 ...).
LINE_BREAK = re.compile(r"\r\n|\r|\n")
LONE_CR = re.compile(r"\r(?!\n)")
WORD_CHAR = re.compile(r"\w")
# Characters that never occur in source text; a window holding them is treated as binary content.
BINARY_CHARS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")

KEY_PREFIX_CHARS = 1024  # how much text before the cursor identifies a cached completion
KEY_SUFFIX_CHARS = 256
MAX_TYPED_AHEAD = 64  # how many characters typed through a suggestion the cache can still serve


@dataclass(frozen=True)
class Context:
    prefix: str  # text before the cursor, windowed (nearest text kept)
    suffix: str  # text after the cursor, windowed
    language: str
    single_line: bool  # cursor after code and before code: complete only within this line
    line: int
    character: int  # column of the cursor (client's position units) after clamping to the line
    line_prefix: str  # cursor line before the cursor
    line_suffix: str  # cursor line after the cursor, without its line break
    key_prefix: str  # raw tail before the cursor (not cut at line starts), for the cache
    key_suffix: str  # text after the cursor for the cache; closing characters on this line left out
    encoding: str = "utf-16"  # position units of `character`
    offset: int = 0  # code-point index of the cursor in the text it was built from


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def units_len(text: str, encoding: str = "utf-16") -> int:
    """Length of `text` in the position encoding negotiated with the client."""
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(text)
    return utf16_len(text)


def units_to_index(line_text: str, character: int, encoding: str = "utf-16") -> int:
    """Code-point index in `line_text` for a column in the position encoding; past the end clamps
    to the end (LSP rule), a column inside a character falls back to the start of that character."""
    if encoding == "utf-32" or units_len(line_text, encoding) == len(line_text):  # 1 unit a char
        return min(character, len(line_text))
    units = 0
    for i, ch in enumerate(line_text):
        width = units_len(ch, encoding)
        if units + width > character:
            return i
        units += width
    return len(line_text)


def utf16_to_index(line_text: str, character: int) -> int:
    return units_to_index(line_text, character, "utf-16")


def locate(text: str, line: int, character: int, encoding: str = "utf-16") -> tuple[int, int, int] | None:
    """(line start, line end, cursor offset) for an LSP position, or None past the last line."""
    if line < 0 or character < 0:
        return None
    if "\r" not in text or LONE_CR.search(text) is None:  # \n, \r\n only: count lines in C
        parts = text.split("\n", line)
        if len(parts) <= line:
            return None
        start = len(text) - len(parts[-1])
        nl = text.find("\n", start)
        end = len(text) if nl < 0 else nl - (text[nl - 1 : nl] == "\r" and nl > start)
    else:
        start = 0
        for _ in range(line):
            m = LINE_BREAK.search(text, start)
            if m is None:
                return None
            start = m.end()
        m = LINE_BREAK.search(text, start)
        end = m.start() if m else len(text)
    return start, end, start + units_to_index(text[start:end], character, encoding)


def window(prefix: str, suffix: str, budget: int) -> tuple[str, str]:
    """Keep at most `budget` characters, 3/4 before the cursor and 1/4 after; a side that needs less
    lends the rest to the other. Cuts fall on line boundaries unless a single line is longer."""
    want_suffix = budget // 4
    suffix_budget = min(len(suffix), max(want_suffix, budget - len(prefix)))
    prefix_budget = budget - suffix_budget
    if len(prefix) > prefix_budget:
        cut = prefix[len(prefix) - prefix_budget :] if prefix_budget > 0 else ""
        nl = cut.find("\n")
        prefix = cut[nl + 1 :] if 0 <= nl < len(cut) - 1 else cut
    if len(suffix) > suffix_budget:
        cut = suffix[:suffix_budget]
        nl = cut.rfind("\n")
        suffix = cut[: nl + 1] if nl > 0 else cut
    return prefix, suffix


def reach(budget: int) -> tuple[int, int]:
    """How much text before and after the cursor build_context reads for a window of `budget`."""
    return budget + KEY_PREFIX_CHARS, budget + KEY_SUFFIX_CHARS


def build_context(
    text: str, line: int, character: int, language: str, budget: int, encoding: str = "utf-16", first_line: int = 0
) -> Context | None:
    """The context for a completion at (line, character) (columns in `encoding` units: "utf-16",
    the LSP default, "utf-8" or "utf-32"), or None for a position past the end of the document or
    binary content near the cursor. `text` may be whole lines of a document from `first_line` on,
    holding at least `reach(budget)` around the cursor (Document.window)."""
    where = locate(text, line - first_line, character, encoding)
    if where is None:
        return None
    line_start, line_end, offset = where
    head = text[max(0, offset - budget - KEY_PREFIX_CHARS) : offset]
    tail = text[offset : offset + budget + KEY_SUFFIX_CHARS]
    prefix, suffix = window(head, tail, budget)
    if BINARY_CHARS.search(prefix) or BINARY_CHARS.search(suffix):
        return None
    line_prefix = text[line_start:offset]
    line_suffix = text[offset:line_end]
    # Code after the cursor on its line: complete only up to it, unless the cursor is in the line's
    # indentation (a line opened above existing code), where whole lines may be inserted.
    code_after = WORD_CHAR.search(line_suffix) is not None
    single_line = code_after and line_prefix.strip() != ""
    return Context(
        prefix=prefix,
        suffix=suffix,
        language=language or "",
        single_line=single_line,
        line=line,
        character=units_len(line_prefix, encoding),
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        key_prefix=head[-(KEY_PREFIX_CHARS + MAX_TYPED_AHEAD) :],
        # An editor's auto-closed `)` must not hide a suggestion cached before it was typed.
        key_suffix=(line_suffix if code_after else "") + text[line_end : line_end + KEY_SUFFIX_CHARS],
        encoding=encoding,
        offset=offset,
    )


def context_between(prefix: str, suffix: str, language: str, budget: int) -> Context | None:
    """The context of a cursor between `prefix` and `suffix`: a document split at the cursor."""
    line_start = max(prefix.rfind("\n"), prefix.rfind("\r")) + 1
    return build_context(prefix + suffix, len(LINE_BREAK.findall(prefix)), utf16_len(prefix[line_start:]), language, budget)
