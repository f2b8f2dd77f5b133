"""Token healing: a cursor inside a word, or just after a space, leaves the prefix ending in token
pieces that natural text rarely has ("self._callback = callbac" ends ' call' 'b' 'ac'; the typed
word is ' callback'). The prefix gives those tokens back and the middle writes them again: its
first tokens may only agree with the given-back text, which is cut from the answer. Training cuts
its infilling examples the same way, so the model sees what the engine will show it.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

WORD_TAIL = re.compile(r" ?\w+| ", re.ASCII)  # a partial word with its leading space, or one space
MAX_TOKENS = 4


def split_tail(ids: list[int], decode) -> tuple[list[int], str]:
    """(prefix ids kept, text given back): the longest run of at most MAX_TOKENS last tokens
    whose text is one partial word (or a single space)."""
    n = 0
    for k in range(1, min(MAX_TOKENS, len(ids)) + 1):
        if not WORD_TAIL.fullmatch(decode(ids[-k:])):
            break
        n = k
    return (ids[:-n], decode(ids[-n:])) if n else (ids, "")


class Healer:
    """Which tokens may write the next piece of a given-back text."""

    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        texts = {}
        for i in range(min(vocab_size, tokenizer.vocab_size)):
            text = tokenizer.decode([i])
            if text and "\ufffd" not in text:  # specials decode to ""; byte fragments to U+FFFD
                texts[i] = text
        self.text = texts
        self._sorted = sorted((t, i) for i, t in texts.items())
        self._keys = [t for t, _ in self._sorted]
        self._by_text: dict[str, list[int]] = {}
        for i, t in texts.items():
            self._by_text.setdefault(t, []).append(i)
        self.decode = tokenizer.decode
        self._masks: dict = {}

    def split(self, ids: list[int]) -> tuple[list[int], str]:
        kept, heal = split_tail(ids, self.decode)
        return (kept, heal) if heal and self.allowed(heal) else (ids, "")

    @lru_cache(maxsize=4096)
    def allowed(self, rest: str) -> tuple[int, ...]:
        """Token ids whose text starts with `rest` (they finish it) or is a prefix of it."""
        lo = bisect.bisect_left(self._keys, rest)
        hi = bisect.bisect_left(self._keys, rest + "\U0010ffff")
        ids = [i for _, i in self._sorted[lo:hi]]
        for j in range(1, len(rest)):
            ids.extend(self._by_text.get(rest[:j], ()))
        return tuple(sorted(ids))

    def blocked(self, rest: str, size: int, device) -> "torch.Tensor":
        """(size,) bool: True for the tokens that may not come next (cached: a whole vocabulary
        per keystroke would cost more than the model on a large tokenizer)."""
        key = (rest, size, str(device))
        if (mask := self._masks.get(key)) is None:
            import torch

            mask = torch.ones(size, dtype=torch.bool)
            mask[list(self.allowed(rest))] = False
            mask = mask.to(device)
            if len(self._masks) >= 64:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = mask
        return mask

    def advance(self, rest: str, token: int) -> str:
        """What is left to write of `rest` after `token`."""
        text = self.text.get(token, "")
        return "" if text.startswith(rest) else rest[len(text):]
