"""Whole-word masking with two nested masks per sequence (SMAE: encoder 20%, decoder 40%).

Why not transformers' `DataCollatorForWholeWordMask`? It draws one mask per sequence from Python's global
`random`, so it can neither give the decoder a second mask that contains the encoder's nor replay a batch
under a seed. Here both masks come from one shuffled word order (the Starbucks/RetroMAE collator's rule): a
word is decoder-masked while the decoder budget allows, and also encoder-masked while the encoder budget
does, so every encoder-masked word is decoder-masked. Words come from the tokenizer's `word_ids()` (fast
tokenizers) or, for slow WordPiece ones, a token plus its following `##` pieces; special tokens and padding
have no word and are never masked. Budgets count maskable tokens, rounded, at least one word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100  # label of every position that is not predicted (the cross-entropy ignore index)
NO_WORD = -1  # word id of special tokens and padding


def words_from_pieces(tokens: Sequence[str]) -> list[int]:
    """Word ids of WordPiece tokens: a token starts a word unless it is a `##` continuation piece."""
    ids, word = [], -1
    for token in tokens:
        if not (token.startswith("##") and word >= 0):
            word += 1
        ids.append(word)
    return ids


@dataclass(frozen=True)
class MaskedBatch:
    """Model inputs and targets of one pre-training batch; decoder fields are None for plain MLM."""

    input_ids: Tensor  # encoder input, after 80/10/10 replacement
    attention_mask: Tensor
    labels: Tensor  # original ids at encoder-masked positions, IGNORE elsewhere
    decoder_input_ids: Tensor | None = None
    decoder_labels: Tensor | None = None

    def to(self, device: torch.device) -> MaskedBatch:
        return MaskedBatch(*(None if t is None else t.to(device) for t in (
            self.input_ids, self.attention_mask, self.labels, self.decoder_input_ids, self.decoder_labels)))


@dataclass(frozen=True)
class Masker:
    """Turns padded token ids + word ids into a `MaskedBatch`; deterministic under a `torch.Generator`."""

    mask_token_id: int
    vocab_size: int
    encoder_ratio: float = 0.2
    decoder_ratio: float | None = 0.4  # None: no decoder mask (plain MLM)
    mask_prob: float = 0.8  # BERT: 80% [MASK], 10% a random token, 10% unchanged
    random_prob: float = 0.1

    def word_masks(self, word_ids: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Boolean [batch, seq] encoder and decoder masks over whole words (decoder = encoder when None)."""
        encoder = torch.zeros_like(word_ids, dtype=torch.bool)
        decoder = torch.zeros_like(encoder)
        decoder_ratio = self.encoder_ratio if self.decoder_ratio is None else self.decoder_ratio
        for row, ids in enumerate(word_ids):
            maskable = ids != NO_WORD
            if not maskable.any():
                continue
            words, sizes = (t.tolist() for t in ids[maskable].unique(return_counts=True))
            tokens = int(maskable.sum())
            encoder_budget = max(1, round(tokens * self.encoder_ratio))
            decoder_budget = max(1, round(tokens * decoder_ratio))
            encoder_words, decoder_words, encoder_used, decoder_used = [], [], 0, 0
            for index in torch.randperm(len(words), generator=generator).tolist():
                size = sizes[index]
                if decoder_used + size > decoder_budget:
                    continue
                decoder_words.append(words[index])
                decoder_used += size
                if encoder_used + size <= encoder_budget:
                    encoder_words.append(words[index])
                    encoder_used += size
                if decoder_used == decoder_budget:
                    break
            encoder[row] = torch.isin(ids, torch.tensor(encoder_words, dtype=ids.dtype))
            decoder[row] = torch.isin(ids, torch.tensor(decoder_words, dtype=ids.dtype))
        return encoder, decoder

    def replace(self, input_ids: Tensor, masked: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """BERT's 80/10/10 replacement at the masked positions: (corrupted inputs, labels)."""
        labels = torch.where(masked, input_ids, IGNORE)
        draw = torch.rand(input_ids.shape, generator=generator)
        randoms = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        corrupted = torch.where(masked & (draw < self.mask_prob), self.mask_token_id, input_ids)
        use_random = masked & (draw >= self.mask_prob) & (draw < self.mask_prob + self.random_prob)
        return torch.where(use_random, randoms, corrupted), labels

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor,
                 generator: torch.Generator) -> MaskedBatch:
        encoder, decoder = self.word_masks(word_ids, generator)
        encoder_ids, labels = self.replace(input_ids, encoder, generator)
        if self.decoder_ratio is None:
            return MaskedBatch(encoder_ids, attention_mask, labels)
        decoder_ids, decoder_labels = self.replace(input_ids, decoder, generator)
        return MaskedBatch(encoder_ids, attention_mask, labels, decoder_ids, decoder_labels)
