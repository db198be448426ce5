"""Starbucks-MAE (SMAE) and plain MLM as one module around a Hugging Face BERT-like encoder.

For every pair (L, d): an MLM loss on layer L's token states cut to d dims, through one shared MLM head whose
first dense layer reads only its first d input columns (the MRL-E slicing trick), and a RetroMAE-style loss of a
one-layer decoder that sees the decoder-masked sequence with position 0 replaced by layer L's CLS state (its
first d dims through the sliced head transform: an H-dim vector). Loss = mean over pairs of (MLM + decoder) / 2.
Plain MLM is the same module with the full cell as the only pair and no decoder.

All layer states come from one encoder pass that stops after the deepest pair's layer (`run_layers`, the
package's one early-exit mechanism), and the vocabulary projection runs only at masked positions, so a step
costs the layers it trains plus a few [masked tokens x vocab] products.

The head is BERT's (transformers' `BertPredictionHeadTransform` + a bias, the vocabulary projection tied to
the word embeddings); its weights are saved and read under BERT's `cls.predictions.` names, so a
`BertForMaskedLM` checkpoint brings its trained head and a sentence-transformers model gets a new one.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elasticir.cells import Cell, default_pairs
from elasticir.encoders import refused_pickle, run_layers, transformer_blocks
from elasticir.errors import ElasticIRError
from elasticir.pretraining.masking import IGNORE, MaskedBatch
from elasticir.training.losses import validate_pairs

HEAD_PREFIX = "cls.predictions."
DECODER_PREFIX = "decoder."
_LEGACY_NAMES = {".gamma": ".weight", ".beta": ".bias"}  # LayerNorm names of the original TF BERT checkpoints


class MLMHead(nn.Module):
    """BERT's MLM head (dense H->H, activation, LayerNorm, vocab projection tied to the word embeddings + bias)
    whose dense layer can read a d-dim prefix: `F.linear(x[..., :d], dense.weight[:, :d], dense.bias)`."""

    def __init__(self, config, word_embeddings: nn.Embedding) -> None:
        from transformers.models.bert.modeling_bert import (  # lazy here and below: slow, only when a head is built
            BertPredictionHeadTransform,
        )

        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self._tied = (word_embeddings,)  # a tuple: the embeddings stay the encoder's, not a second copy here
        self.initializer_range = getattr(config, "initializer_range", 0.02)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: normal(0, initializer_range) weights, zero biases, identity LayerNorm."""
        nn.init.normal_(self.transform.dense.weight, std=self.initializer_range)
        nn.init.zeros_(self.transform.dense.bias)
        nn.init.ones_(self.transform.LayerNorm.weight)
        nn.init.zeros_(self.transform.LayerNorm.bias)
        nn.init.zeros_(self.bias)

    def transform_prefix(self, hidden: Tensor) -> Tensor:
        """[..., d] -> [..., H]: the head transform fed only the first d input columns (d = hidden's width)."""
        transform, dim = self.transform, hidden.shape[-1]
        dense = F.linear(hidden, transform.dense.weight[:, :dim], transform.dense.bias)
        return transform.LayerNorm(transform.transform_act_fn(dense))

    def forward(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits of [..., d] token states."""
        return F.linear(self.transform_prefix(hidden), self._tied[0].weight, self.bias)


def read_head_weights(folders: Iterable[Path]) -> dict[str, Tensor]:
    """The `cls.predictions.*` and `decoder.*` tensors of the weight files in `folders` (later folders win);
    empty when none has them. Only those keys are read from safetensors files, not the whole model."""
    from safetensors import safe_open

    found: dict[str, Tensor] = {}
    for folder in folders:
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                names = handle.keys()  # a safe_open handle is not iterable itself
                found.update({key: handle.get_tensor(key) for key in names
                              if key.startswith((HEAD_PREFIX, DECODER_PREFIX))})
        for file in sorted(folder.glob("pytorch_model*.bin")):
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise ElasticIRError(refused_pickle(file)) from None
            found.update({key: value for key, value in state.items() if key.startswith((HEAD_PREFIX, DECODER_PREFIX))})
    for old, new in _LEGACY_NAMES.items():
        found = {key.removesuffix(old) + new if key.endswith(old) else key: value for key, value in found.items()}
    return found


class SMAE(nn.Module):
    """The pre-training losses of one batch: SMAE (decoder=True) or plain MLM (pairs = [full], decoder=False).

    `encoder` is the Hugging Face model itself (e.g. a SentenceTransformer's `[0].auto_model`), trained in place.
    """

    def __init__(self, encoder: nn.Module, pairs: Sequence[Sequence[int]] | None = None, *,
                 decoder: bool = True) -> None:
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.num_layers, self.hidden_size = config.num_hidden_layers, config.hidden_size
        self.pairs: list[Cell] = validate_pairs(
            pairs if pairs is not None else default_pairs(self.num_layers, self.hidden_size),
            self.num_layers, self.hidden_size)
        self._blocks = (transformer_blocks(encoder, self.num_layers),)  # a tuple: not registered twice
        self.head = MLMHead(config, encoder.get_input_embeddings())
        if decoder and not isinstance(getattr(encoder, "embeddings", None), nn.Module):
            raise ElasticIRError(
                f"the SMAE decoder reuses the encoder's embedding module; {type(encoder).__name__} has no "
                "`embeddings` (BERT-like encoders do). Use method mlm for this model"
            )
        # RetroMAE/Starbucks: the decoder starts as a copy of the encoder's first layer
        self.decoder = copy.deepcopy(self._blocks[0][0]) if decoder else None

    def load_heads(self, weights: dict[str, Tensor]) -> list[str]:
        """Load the head (and decoder) from `read_head_weights`; return which of them were found."""
        loaded = []
        head = {key.removeprefix(HEAD_PREFIX): value for key, value in weights.items() if key.startswith(HEAD_PREFIX)}
        if "bias" not in head and "decoder.bias" in head:  # BertForMaskedLM ties decoder.bias to bias
            head["bias"] = head["decoder.bias"]
        head = {key: value for key, value in head.items() if not key.startswith("decoder.")}
        if head:
            self._load(self.head, head, "MLM head (cls.predictions.*)")
            loaded.append("head")
        decoder = {key.removeprefix(DECODER_PREFIX): value for key, value in weights.items()
                   if key.startswith(DECODER_PREFIX)}
        if decoder and self.decoder is not None:
            self._load(self.decoder, decoder, "SMAE decoder (decoder.*)")
            loaded.append("decoder")
        return loaded

    @staticmethod
    def _load(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ElasticIRError(f"the checkpoint's {what} does not fit this encoder: {exc}") from None

    def head_state_dict(self) -> dict[str, Tensor]:
        """The head and decoder under the names `read_head_weights` reads back (no tied embeddings)."""
        state = {HEAD_PREFIX + key: value for key, value in self.head.state_dict().items()}
        if self.decoder is not None:
            state.update({DECODER_PREFIX + key: value for key, value in self.decoder.state_dict().items()})
        return state

    def layer_states(self, input_ids: Tensor, attention_mask: Tensor) -> dict[int, Tensor]:
        """Full-width token states [batch, seq, H] of every pair's layer, from one early-exiting pass."""
        return run_layers(lambda: self.encoder(input_ids=input_ids, attention_mask=attention_mask),
                          self._blocks[0], [cell.layer for cell in self.pairs], lambda hidden: hidden)

    def _decode(self, cls: Tensor, embedded: Tensor, mask) -> Tensor:
        """The decoder layer over the embedded decoder input with position 0 replaced by `cls` [batch, H]."""
        output = self.decoder(torch.cat([cls.unsqueeze(1), embedded[:, 1:]], dim=1), mask)
        return output[0] if isinstance(output, tuple) else output

    def terms(self, batch: MaskedBatch) -> dict[str, Tensor]:
        """Named loss terms: "mlm(L,d)" per pair, and "decoder(L,d)" per pair for SMAE."""
        states = self.layer_states(batch.input_ids, batch.attention_mask)
        masked = batch.labels != IGNORE
        targets = batch.labels[masked]
        if self.decoder is not None:
            from transformers.masking_utils import create_bidirectional_mask

            embedded = self.encoder.embeddings(input_ids=batch.decoder_input_ids)
            decoder_mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=embedded,
                                                     attention_mask=batch.attention_mask)
            decoder_masked = batch.decoder_labels != IGNORE
            decoder_targets = batch.decoder_labels[decoder_masked]
        terms = {}
        for cell in self.pairs:
            hidden = states[cell.layer][..., : cell.dim]
            terms[f"mlm{cell}"] = F.cross_entropy(self.head(hidden[masked]), targets)
            if self.decoder is not None:
                decoded = self._decode(self.head.transform_prefix(hidden[:, 0]), embedded, decoder_mask)
                terms[f"decoder{cell}"] = F.cross_entropy(self.head(decoded[decoder_masked]), decoder_targets)
        return terms

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        """Mean over pairs of (MLM + decoder) / 2 (plain MLM: its one term)."""
        per_pair = [
            (terms[f"mlm{cell}"] + terms[f"decoder{cell}"]) / 2 if self.decoder is not None else terms[f"mlm{cell}"]
            for cell in self.pairs
        ]
        return torch.stack(per_pair).mean()

    def forward(self, batch: MaskedBatch) -> Tensor:
        return self.combine(self.terms(batch))
