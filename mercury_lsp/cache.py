"""LRU of suggestions keyed on the text around the cursor, with typed-ahead reuse: when the user
has typed the beginning of a cached suggestion, the rest is served without a model call. An empty
entry records that the engine had nothing for that context, so asking again costs nothing."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .context import KEY_PREFIX_CHARS, MAX_TYPED_AHEAD, Context


@dataclass(frozen=True)
class CacheHit:
    text: str  # what is left of the suggestion after the typed characters
    typed: int  # how many characters of it the user had typed (0: same position)


class CompletionCache:
    def __init__(self, size: int = 256):
        self.size = size
        self.entries: OrderedDict[tuple, str] = OrderedDict()

    @staticmethod
    def key(ctx: Context, prefix: str) -> tuple:
        return (ctx.language, ctx.single_line, prefix[-KEY_PREFIX_CHARS:], ctx.key_suffix)

    def put(self, ctx: Context, text: str) -> None:
        k = self.key(ctx, ctx.key_prefix)
        self.entries[k] = text
        self.entries.move_to_end(k)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def get(self, ctx: Context) -> CacheHit | None:
        """The suggestion for this exact context, or the rest of one made a few characters back
        whose beginning equals what was typed since."""
        prefix = ctx.key_prefix
        for typed in range(0, min(MAX_TYPED_AHEAD, len(prefix)) + 1):
            k = self.key(ctx, prefix[: len(prefix) - typed])
            text = self.entries.get(k)
            if text is None:
                continue
            if typed == 0:
                self.entries.move_to_end(k)
                return CacheHit(text, 0)  # "" here: the engine had nothing for this context
            typed_text = prefix[len(prefix) - typed :]
            rest = text[typed:]
            if text.startswith(typed_text) and rest.strip():
                self.entries.move_to_end(k)
                return CacheHit(rest, typed)
        return None

    def clear(self) -> None:
        self.entries.clear()
