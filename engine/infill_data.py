"""Infilling examples cut from source text, as an editor would ask for them.

Cut points are chosen on characters and prefix/middle/suffix are tokenized separately, exactly as
the engine tokenizes a request, so token boundaries at the cursor look the same in training and
in use; that includes token healing (a prefix ending inside a word gives its last tokens to the
middle, see healing.py). Kinds: the rest of a line from a cursor inside it; one to eight whole lines from the start
of a line's text (in training up to sixteen, half of them from column 0 and half with the last
newline: a whole body asked for from a fresh line, as the bench's multi-line tasks do); a random
span of characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .healing import Healer

KINDS = ("line", "lines", "span")
KIND_P = (0.45, 0.3, 0.25)
CANVAS_SIZES = (8, 16, 24, 32, 48, 64, 96, 128)
PREFIX_CHARS, SUFFIX_CHARS = 700, 300


@dataclass
class Cut:
    prefix: str
    middle: str
    suffix: str
    kind: str


def cut_example(text: str, rng: np.random.Generator, kind: str, whole_lines: bool = False) -> Cut | None:
    """`whole_lines` (training only; held-out examples stay as they were): half of the "lines"
    cuts start at column 0 with the indentation in the middle, half take the last line's newline,
    and they run up to 16 lines: a cursor on a fresh line asking for a whole body."""
    if len(text) < 20:
        return None
    if kind == "span":
        start = int(rng.integers(0, len(text) - 1))
        end = min(len(text), start + int(rng.integers(1, 300)))
    else:
        # a non-blank line at random
        pos = int(rng.integers(0, len(text)))
        line_start = text.rfind("\n", 0, pos) + 1
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end < 0 else line_end
        line = text[line_start:line_end]
        if not line.strip():
            return None
        indent = line_start + len(line) - len(line.lstrip())
        if kind == "line":
            start = int(rng.integers(indent, line_end))
            end = line_end
        else:
            start, end = indent, line_end
            if whole_lines and rng.random() < 0.5:
                start = line_start
            for _ in range(int(rng.integers(0, 16 if whole_lines else 8))):
                nxt = text.find("\n", end + 1)
                if nxt < 0:
                    break
                end = nxt
            if whole_lines and end < len(text) and rng.random() < 0.5:
                end += 1
    if end <= start:
        return None
    return Cut(text[max(0, start - PREFIX_CHARS) : start], text[start:end], text[end : end + SUFFIX_CHARS], kind)


class ExampleSource:
    """Draws tokenized (prefix, middle, suffix) triples from a list of texts, weighted by length."""

    def __init__(self, texts: list[str], tokenizer, seed: int, max_prefix: int = 128, max_suffix: int = 48,
                 whole_lines: bool = False):
        self.texts, self.whole_lines = texts, whole_lines
        sizes = np.array([len(t) for t in texts], dtype=np.float64)
        self.p = sizes / sizes.sum()
        self.tok = tokenizer
        self.rng = np.random.default_rng(seed)
        self.max_prefix, self.max_suffix = max_prefix, max_suffix
        self.healer = Healer(tokenizer, tokenizer.vocab_size)

    def draw(self, n: int, max_middle: int) -> list[tuple[list[int], list[int], list[int], str]]:
        out = []
        while len(out) < n:
            cuts = []
            for _ in range(2 * (n - len(out))):
                text = self.texts[self.rng.choice(len(self.texts), p=self.p)]
                kind = KINDS[self.rng.choice(3, p=KIND_P)]
                if (cut := cut_example(text, self.rng, kind, self.whole_lines)) is not None:
                    cuts.append(cut)
            if not cuts:
                continue
            enc = self.tok.encode_batch([s for c in cuts for s in (c.prefix, c.suffix)])
            pres, heals = zip(*(self.healer.split(enc[2 * i][-self.max_prefix :]) for i in range(len(cuts))))
            mids = self.tok.encode_batch([heal + cut.middle for heal, cut in zip(heals, cuts)])
            for i, cut in enumerate(cuts):
                pre, mid, suf = pres[i], mids[i], enc[2 * i + 1]
                if 0 < len(mid) <= max_middle and len(out) < n:
                    out.append((pre, mid, suf[: self.max_suffix], cut.kind))
        return out
