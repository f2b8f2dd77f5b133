"""Turn the engine's raw middle text into a suggestion that fits the document: trimmed to the
enclosing block, no duplicate of the text below or after the cursor, brackets that match, and the
span of the cursor line it replaces."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .context import Context

ONLY_CLOSING = re.compile(r"^\W*$")  # rest of line with no word character: the item may cover it
OPEN_FOR = {")": "(", "]": "[", "}": "{"}
# A weak or undertrained model loops ("_with_with_with_with", "1, 1, 1, 1, 1, 1"). Near Tabby's
# thresholds: a 3+ character unit 6+ times in a row ending the line (8+ times anywhere: argument
# lists like "-1, -1, -1, -1, -1, -1, x" are real code), or a 10+ character unit 4+ times.
# Units of one repeated character ("=====", "-----") are separator lines, not loops.
REPETITION = (re.compile(r"(.{3,}?)\1{5,}\s*$"), re.compile(r"(.{3,}?)\1{7,}"), re.compile(r"(.{10,}?)\1{3,}"))
BLOCK_CONTINUATIONS = ("else", "elif", "except", "finally", "catch")
HASH_COMMENT_LANGUAGES = {"python", "shellscript", "sh", "bash", "ruby", "perl", "r", "yaml", "toml",
                          "makefile", "dockerfile", "cmake", "julia", "elixir", "nim", "coffeescript"}


@dataclass(frozen=True)
class Suggestion:
    text: str
    replace_chars: int  # characters after the cursor on its line that `text` replaces


def postprocess(raw: str, ctx: Context) -> Suggestion | None:
    """The suggestion to show for the engine text `raw`, or None when nothing useful is left."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if ctx.single_line:
        text = text.split("\n", 1)[0]
    text = drop_repetitive_lines(text)
    text = cut_at_repeated_line(text, ctx)
    text = drop_doubled_space(text, ctx)
    text = cut_at_next_line(text, ctx)
    text = limit_to_block(text, ctx)
    covers = covers_rest_of_line(text, ctx)
    if not covers:
        text = drop_repeated_rest(text, ctx)
    text = balance_brackets(text, ctx, covers)
    covers = covers_rest_of_line(text, ctx)
    if covers or not ctx.line_suffix.strip():
        text = text.rstrip()
    elif not ctx.line_prefix.strip():
        # Cursor in the indentation of a line with code: that code stays on its own line, indented.
        text = text.rstrip() + "\n" + ctx.line_prefix
    # (otherwise mid-line: spaces before the rest of the line still matter)
    if not text.strip():
        return None
    return Suggestion(text, len(ctx.line_suffix) if covers else 0)


def indent_of(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def drop_repetitive_lines(text: str) -> str:
    """Cut the suggestion before the first line that loops on a repeated unit."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        for pattern in REPETITION:
            if any(len(set(m.group(1))) > 1 for m in pattern.finditer(line)):
                return "\n".join(lines[:i])
    return text


def cut_at_repeated_line(text: str, ctx: Context) -> str:
    """Stop before a line that repeats the line above it, indentation and all: a model that loops
    writes `return a - b` again and again. (Any earlier line would cut right answers too: real
    code repeats `with self.assertRaises(TypeError):` a few lines apart. Short lines may repeat.)"""
    lines = text.split("\n")
    above = (ctx.line_prefix + lines[0]).rstrip()
    for i in range(1, len(lines)):
        line = lines[i].rstrip()
        if not line.strip():
            continue
        if line == above and len(line.strip()) >= 6:
            return "\n".join(lines[:i])
        above = line
    return text


def drop_doubled_space(text: str, ctx: Context) -> str:
    """`x = ` followed by ` 1` would give two spaces: the space is already typed. (A run of
    spaces after code is alignment, left alone.)"""
    typed = ctx.line_prefix
    if typed.strip() and typed[-1:] in (" ", "\t") and typed[-2:-1] not in (" ", "\t"):
        return text.lstrip(" \t")
    return text


def next_line_below(ctx: Context) -> str | None:
    """The first non-blank line after the cursor, with its indentation (the cursor line itself
    when the cursor is in the indentation of a line with code)."""
    if not ctx.line_prefix.strip() and ctx.line_suffix.strip():
        return (ctx.line_prefix + ctx.line_suffix).rstrip()
    for line in ctx.suffix.split("\n")[1:]:
        if line.strip():
            return line.rstrip()
    return None


def cut_at_next_line(text: str, ctx: Context) -> str:
    """Stop before a line that repeats the next line of the document (same indentation): the
    model reached code that is already there."""
    below = next_line_below(ctx)
    if below is None:
        return text
    lines = text.split("\n")
    if not ctx.line_prefix.strip() and (ctx.line_prefix + lines[0]).rstrip() == below:
        return ""
    for i in range(1, len(lines)):
        if lines[i].rstrip() == below:
            return "\n".join(lines[:i])
    return text


def limit_to_block(text: str, ctx: Context) -> str:
    """Keep lines inside the block the cursor is in: stop at a line indented less than the cursor
    line; at top level, stop once a block the completion opened has closed."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = ctx.line_prefix + lines[0]
    base = indent_of(first) if first.strip() else None
    went_deeper = False
    kept = [lines[0]]
    for line in lines[1:]:
        stripped = line.strip()
        if not stripped:
            kept.append(line)
            continue
        level = indent_of(line)
        if base is None:  # cursor on a blank line: the first written line sets the level
            base = level
        elif level < base:
            break
        elif level == base and went_deeper:
            # Back at the cursor's level after a block the completion opened. Inside a block keep
            # going (sibling statements); at top level that block was the whole suggestion.
            if stripped[0] in OPEN_FOR or stripped.startswith(BLOCK_CONTINUATIONS):
                kept.append(line)  # `}`, `} else {`, `else:` belong to the block
                went_deeper = False
                if base == 0 and stripped[0] in OPEN_FOR and not stripped.endswith(("{", "(", "[")):
                    break
                continue
            if base == 0:
                break
            went_deeper = False
        elif level > base:
            went_deeper = True
        kept.append(line)
    return "\n".join(kept)


def is_subsequence(needle: str, hay: str) -> bool:
    it = iter(hay)
    return all(ch in it for ch in needle)


def covers_rest_of_line(text: str, ctx: Context) -> bool:
    """True when the rest of the line is only closing characters that the suggestion's first line
    already writes (`print(|)` + `x)`): the item replaces them instead of doubling them."""
    rest = ctx.line_suffix.replace(" ", "").replace("\t", "")
    if not rest or not ONLY_CLOSING.match(ctx.line_suffix) or not ctx.line_prefix.strip():
        return False  # (a cursor in the indentation writes whole lines above the rest)
    first = text.split("\n", 1)[0]
    return is_subsequence(rest, first)


def drop_repeated_rest(text: str, ctx: Context) -> str:
    """Mid-line: a suggestion equal to, or ending with, the text after the cursor repeats it."""
    rest = ctx.line_suffix.strip()
    if not rest or "\n" in text:
        return text
    if text.strip() == rest:
        return ""
    body = text.rstrip()
    if body.endswith(rest) and len(body) > len(rest):
        return body[: -len(rest)]
    return text


def bracket_events(text: str, hash_comments: bool):
    """(index, char) of every bracket outside string literals and line comments. A rough lexer:
    strings end at the closing quote or the end of the line."""
    quote = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote or ch == "\n":
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif (ch == "#" and hash_comments) or (ch == "/" and text[i + 1 : i + 2] == "/" and not hash_comments):
            nl = text.find("\n", i)
            if nl < 0:
                return
            i = nl
        elif ch in "([{)]}":
            yield i, ch
        i += 1


def open_brackets(text: str, hash_comments: bool) -> list[str]:
    stack: list[str] = []
    for _, ch in bracket_events(text, hash_comments):
        if ch in "([{":
            stack.append(ch)
        elif stack and stack[-1] == OPEN_FOR[ch]:
            stack.pop()
    return stack


def balance_brackets(text: str, ctx: Context, covers_rest: bool) -> str:
    """Cut at a closing bracket that closes nothing open (or that the text after the cursor already
    closes); a multi-line suggestion left with open brackets is cut back to its last balanced line."""
    hash_comments = ctx.language.lower() in HASH_COMMENT_LANGUAGES
    open_before = open_brackets(ctx.prefix[-4000:], hash_comments)
    after = "" if covers_rest else ctx.line_suffix.lstrip()
    stack: list[str] = []
    balanced_line_end = None  # index of the last newline reached with nothing left open
    for i, ch in _with_newlines(text, hash_comments, ctx.line_prefix):
        if ch == "\n":
            if not stack and i > 0:
                balanced_line_end = i
            continue
        if ch in "([{":
            stack.append(ch)
        elif stack:
            if stack[-1] != OPEN_FOR[ch]:
                return text[:i]
            stack.pop()
        elif open_before and open_before[-1] == OPEN_FOR[ch] and not after.startswith(ch):
            open_before.pop()  # closes a bracket the prefix opened
        else:
            return text[:i]
    if stack and "\n" in text:
        lines_end = balanced_line_end if balanced_line_end is not None else text.find("\n")
        return text[:lines_end]
    return text


def _with_newlines(text: str, hash_comments: bool, lead: str = ""):
    """bracket_events of `text` read after `lead` (the cursor line before it, so that a string or
    comment the line opened goes on), plus ('\\n') markers at line ends, for balance per line."""
    events = [(i - len(lead), ch) for i, ch in bracket_events(lead + text, hash_comments) if i >= len(lead)]
    newlines = [(m.start(), "\n") for m in re.finditer("\n", text)]
    return sorted(events + newlines)
