"""Tokenizer: a `tokenizers` byte-level BPE from tokenizer.json, plus the diffusion special ids."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

MASK, EOM, PAD = "<|mask|>", "<|eom|>", "<|pad|>"
SPECIAL_TOKENS = [MASK, EOM, PAD]  # ids 0, 1, 2 in tokenizers the project trains


class Tokenizer:
    def __init__(self, path: str | Path, mask_id: int, eom_id: int, pad_id: int):
        self.hf = HFTokenizer.from_file(str(path))
        self.hf.no_padding()
        self.hf.no_truncation()
        self.mask_id, self.eom_id, self.pad_id = mask_id, eom_id, pad_id
        self.special_ids = {mask_id, eom_id, pad_id}
        self.vocab_size = self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids if text else []

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=False)
