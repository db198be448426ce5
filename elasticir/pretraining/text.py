"""Raw text for pre-training: documents streamed from .jsonl(.gz) / .txt(.gz) files, cut into token windows.

Why a generator and not a `datasets.Dataset`? A pre-training corpus can be far larger than memory and is read
once or a few times in order; a generator reads one line at a time, and a seeded one replays exactly, which is
how an interrupted run resumes (it skips the batches it had already trained on). Each document gives one
random contiguous window of at most `max_length` tokens per pass (RetroMAE/Starbucks do the same); files are
interleaved document by document and a shuffle buffer mixes neighbours, so a small file is not left to the
end of a pass.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor

from elasticir.data.catalog import data_root, find_local
from elasticir.data.jsonl import open_text, read_jsonl
from elasticir.errors import DataNotFoundError, InputFormatError
from elasticir.pretraining.masking import NO_WORD, words_from_pieces

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz")
Window = tuple[list[int], list[int]]  # (token ids with the special tokens, word id per token; NO_WORD = none)


def resolve_text_file(spec: str, root: Path | None = None) -> Path:
    """A file as given or under the data root; a folder holding a BEIR `corpus.jsonl(.gz)` (or a BEIR dataset name)
    gives that file."""
    root = root or data_root()
    candidate = find_local(spec, root)
    if candidate is not None and candidate.is_dir():
        corpora = [candidate / f"corpus{suffix}" for suffix in JSONL_SUFFIXES]
        candidate = next((corpus for corpus in corpora if corpus.is_file()), candidate)
    if candidate is not None and candidate.is_file():
        if not candidate.name.endswith(JSONL_SUFFIXES + TEXT_SUFFIXES):
            raise InputFormatError(
                f"{candidate}: unsupported file type; pre-training reads .jsonl(.gz) with a `text` field "
                "(BEIR corpora: title + text) or .txt(.gz) with one document per line"
            )
        return candidate
    under_root = "" if Path(spec).is_absolute() else f", not {root / spec}"
    raise DataNotFoundError(
        f"pre-training text {spec!r} not found: not a file{under_root}, and not a folder with corpus.jsonl. "
        "Fix: give a .jsonl(.gz) or .txt(.gz) path, or set ELASTICIR_DATA to the data root"
    )


def iter_documents(path: Path) -> Iterator[str]:
    """Non-empty documents of one file, in order: a .txt line, or a JSON line's `title` + `text`."""
    if path.name.endswith(TEXT_SUFFIXES):
        with open_text(path) as handle:
            yield from (line.strip() for line in handle if line.strip())
        return
    for number, row in read_jsonl(path, required=("text",)):
        title, text = row.get("title") or "", row["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            raise InputFormatError(f"{path} line {number}: `text` and `title` must be strings")
        document = f"{title} {text}".strip()
        if document:
            yield document


def check_text_files(paths: Sequence[Path]) -> None:
    """Fail before any model is loaded when a file has no document (reads only up to its first one)."""
    for path in paths:
        if next(iter_documents(path), None) is None:
            raise InputFormatError(
                f"{path}: no text (the file is empty, or has only blank lines / empty documents); "
                "pre-training needs at least one non-empty document per file"
            )


def _round_robin(paths: Sequence[Path]) -> Iterator[str]:
    """One document from each file in turn until all are exhausted (one pass)."""
    streams = [iter_documents(path) for path in paths]
    while streams:
        for stream in list(streams):
            document = next(stream, None)
            if document is None:
                streams.remove(stream)
            else:
                yield document


class TokenWindows:
    """An endless, seeded stream of token windows over some files; `batches` pads them for the model."""

    def __init__(self, paths: Sequence[Path], tokenizer, max_length: int, *, seed: int = 0,
                 shuffle_buffer: int = 1024) -> None:
        self.paths, self.tokenizer, self.seed, self.shuffle_buffer = list(paths), tokenizer, seed, shuffle_buffer
        self.prefix, self.suffix = self._special_template()
        self.capacity = max_length - len(self.prefix) - len(self.suffix)
        if self.capacity < 1:
            raise InputFormatError(f"max_length {max_length} leaves no room for text next to the special tokens")
        self.special_ids = set(tokenizer.all_special_ids)

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT).

        Found by tokenizing a probe with and without them: every tokenizer has that call, whereas the
        template methods differ between tokenizer kinds and transformers versions.
        """
        bare = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return full[:start], full[start + len(bare) :]
        raise InputFormatError(f"cannot find where {type(self.tokenizer).__name__} puts the text between "
                               "its special tokens")

    def _window(self, document: str, rng: random.Random) -> Window:
        encoding = self.tokenizer(document, add_special_tokens=False, verbose=False)
        ids = encoding["input_ids"]
        if self.tokenizer.is_fast:
            words = encoding.word_ids()
        else:
            words = words_from_pieces(self.tokenizer.convert_ids_to_tokens(ids))
        start = rng.randint(0, max(0, len(ids) - self.capacity))
        ids, words = ids[start : start + self.capacity], words[start : start + self.capacity]
        words = [NO_WORD if word is None or token in self.special_ids else word for token, word in zip(ids, words)]
        edges = [NO_WORD] * len(self.prefix), [NO_WORD] * len(self.suffix)
        return self.prefix + ids + self.suffix, edges[0] + words + edges[1]

    def documents(self) -> Iterator[str]:
        """Pass after pass over the files, each pass round-robin over them."""
        while True:
            produced = False
            for document in _round_robin(self.paths):
                produced = True
                yield document
            if not produced:
                raise InputFormatError(f"no documents in {', '.join(map(str, self.paths))}")

    def __iter__(self) -> Iterator[Window]:
        rng = random.Random(self.seed)
        buffer: list[Window] = []
        for document in self.documents():
            buffer.append(self._window(document, rng))
            if len(buffer) >= self.shuffle_buffer:
                pick = rng.randrange(len(buffer))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                yield buffer.pop()

    def batches(self, batch_size: int, pad_id: int, skip: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(input_ids, attention_mask, word_ids) [batch, longest] tensors; `skip` batches are dropped first."""
        windows = iter(self)
        for _ in islice(windows, skip * batch_size):
            pass
        while True:
            chunk = list(islice(windows, batch_size))
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            word_ids = torch.full((len(chunk), width), NO_WORD, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, words) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                word_ids[row, : len(ids)] = torch.tensor(words)
                attention_mask[row, : len(ids)] = 1
            yield input_ids, attention_mask, word_ids
