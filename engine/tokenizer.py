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


FIM_TOKENS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]  # the autoregressive baseline's
# Whitespace runs (indentation) stay whole pre-tokens so BPE can learn them as single tokens.
CODE_SPLIT = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|[ \t]+(?=\S)|\s+(?!\S)|\s+"""
)


def train_tokenizer(texts, vocab_size: int, out_path: str | Path) -> None:
    """Byte-level BPE on an iterator of source texts; special ids: mask 0, eom 1, pad 2, fim 3..5."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CODE_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + FIM_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out_path))
