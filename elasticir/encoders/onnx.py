"""The ONNX Runtime backend: the encoder cut at the deepest requested layer, run by onnxruntime on the CPU.

One exported graph per layer set: it holds the embeddings and blocks 1..deepest only (early exit is kept: the
layers above are not in the graph) and returns every requested layer's pooled embedding as its own output, so a
grid still costs one pass. The graph is cached on disk, keyed by everything that changes it (weights, layers,
pooling, max length, opset, the fusion switch and the torch / onnx / onnxruntime versions) and written under a
lock, via a temporary file and a rename, with the permissions the umask gives, so concurrent runs never read half a
file and a changed key is a fresh export.

A cached graph is trusted by its content, not by its presence: the export's sha256 is recorded beside it
(`model.onnx.sha256`) and checked before each load, and a fresh export is checked against the torch pass on a
few texts before it is recorded. A graph that was altered, truncated or emptied (or has no recorded checksum)
is exported again, so a wrong graph can never put wrong vectors into the shared embedding stores.

What the libraries could not do, and so what is hand-written here:
- torch.onnx exports a module's forward outputs. A Hugging Face `BertModel` returns the last hidden state (and
  a pooler output), not pooled per-layer states, and runs every layer; `PooledLayers` is the small wrapper that
  truncates a copy of the model to the deepest layer, asks for its hidden states and pools the wanted ones
  inside the graph. (Forward hooks that stop the pass, the torch path's early exit, cannot be traced.)
- optimum's exporter (optimum-onnx) would export the whole model with its last hidden state only, and the
  released optimum-onnx needs transformers < 4.58, so it cannot be installed beside transformers 5 at all.
- The TorchScript exporter (`dynamo=False`) is used: its graph is the one onnxruntime's BERT fusion optimizer
  recognises. The copy is exported with eager attention because the fusion matches the eager attention pattern,
  not the one `scaled_dot_product_attention` exports to.

Speed (measured with benchmarks/bench_encode.py, one thread, torch 2.13 / onnxruntime 1.32 on a Xeon with
AVX-512): a float32 encode is matrix-multiply bound in both runtimes (75-80% of the time in MatMul / addmm), so
onnxruntime is about as fast as torch on short texts and slower on 256-token passages; the fusion gains on
passages and loses a little on short texts. That is why torch stays the default backend.

Numbers: in float32 the graph equals the torch pass to ~1e-6 (the tests assert 1e-5 per layer), far inside what
moves a metric at its fourth decimal, so embedding stores are shared between the backends (see store_key).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from elasticir.cells import Cell
from elasticir.encoders.precision import QUANTIZATION
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write, current_umask, sha256_of_files
from elasticir.locking import exclusive
from elasticir.progress import stage

BACKENDS = ("torch", "onnx")
OPSET = 17
# Model types whose export and fused graph are tested; others fail with a clear error instead of a wrong number.
ONNX_MODEL_TYPES = ("bert",)
DEFAULT_CACHE = Path("~/.cache/elasticir/onnx")
CHECK_TEXTS = ("an example sentence", "a second, somewhat longer example sentence for the check", "two")
CHECK_ATOL = 1e-4  # float32 graph vs torch agree to ~1e-6 (tests: 1e-5); an altered graph is far off
# int8 graphs: every check vector within this cosine distance of the float32 torch pass. Dynamic int8
# quantization moves all-MiniLM-L6-v2's vectors by 0.006 in cosine on average but by up to 0.027 on single short
# texts (STSb sentences), and keeping some nodes in float32 can move a short text further; a wrong or altered
# graph is off by far more (the vectors of another MiniLM of the same width: 0.73-0.84)
CHECK_COSINE_INT8 = 0.05


def check_backend(backend: str, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, *,
                  asked_by: str = "--backend onnx", fix: str = "use --backend torch") -> None:
    """Refuse a backend the model / device / dtype cannot use, naming the fix (before any expensive work).
    `asked_by` / `fix`: the flag that chose ONNX Runtime and what to do instead (the int8 encoder precision
    chooses it without --backend)."""
    if backend not in BACKENDS:
        raise ElasticIRError(f"--backend {backend!r} is not known; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if model_type not in ONNX_MODEL_TYPES:
        raise ElasticIRError(f"{asked_by} runs through ONNX Runtime, which elasticir exports for "
                             f"{', '.join(ONNX_MODEL_TYPES)} models; this model is {model_type!r}: {fix}")
    if device.type != "cpu":
        raise ElasticIRError(f"--backend onnx runs on the CPU only (device {device}); pass --device cpu or use "
                             "--backend torch on the GPU")
    if dtype != torch.float32:
        raise ElasticIRError(f"--backend onnx runs in float32 only (dtype {dtype}); use --backend torch")
    try:
        import onnx  # noqa: F401  # lazy here and below: onnx and onnxruntime are an optional extra
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ElasticIRError(f"{asked_by} needs onnx and onnxruntime: pip install 'elasticir[onnx]'") from None


class PooledLayers(torch.nn.Module):
    """A copy of the model cut after the deepest wanted layer, returning each wanted layer's pooled state."""

    def __init__(self, model: torch.nn.Module, _blocks_path: str, layers: Sequence[int], pooling: str) -> None:
        super().__init__()
        self.layers, self.pooling, self.blocks_path = sorted(set(layers)), pooling, _blocks_path
        self.model = copy.deepcopy(model).float().eval()
        del self.model.get_submodule(_blocks_path)[max(self.layers):]  # early exit: no block above the deepest
        self.model.config.num_hidden_layers = max(self.layers)
        self.model.set_attn_implementation("eager")  # the attention pattern the BERT fusion recognises

    def forward(self, input_ids, attention_mask, token_type_ids):
        states = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            output_hidden_states=True).hidden_states  # [0] = embeddings, [L] = layer L
        if self.pooling == "cls":
            return tuple(states[layer][:, 0] for layer in self.layers)
        weights = attention_mask.unsqueeze(-1).to(states[0].dtype)
        count = weights.sum(1).clamp(min=1e-9)
        return tuple((states[layer] * weights).sum(1) / count for layer in self.layers)


def _blocks_path(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> str:
    return next(name for name, module in model.named_modules() if module is blocks)


def versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "onnx", "onnxruntime")}


def _export_key(weights_sha256: str, layers: Sequence[int], pooling: str, max_length: int, fuse: bool,
               quantize: bool = False) -> str:
    """Hash of everything that changes the exported graph; a different key is a different file (`quantize` is
    hashed only when set, so float32 graphs keep their keys)."""
    parts = {"weights": weights_sha256, "layers": sorted(set(layers)), "pooling": pooling,
             "max_length": max_length, "opset": OPSET, "fuse": fuse, **versions(),
             **({"quantize": QUANTIZATION} if quantize else {})}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _fuse(path: Path, config) -> None:
    """onnxruntime's BERT optimizer: fused Attention, SkipLayerNorm, EmbedLayerNorm and BiasGelu, in place."""
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size, opt_level=0)
    fused.save_model_to_file(str(path))


def _float_nodes(path: Path, blocks_path: str, blocks: Sequence[int], depth: int) -> list[str]:
    """Names of the nodes of transformer blocks `blocks` in the exported graph: the TorchScript exporter names a
    node by its module scope (`/model/encoder/layer.0/...`), and the fused Attention node keeps that scope in its
    output's name. A block of the graph with no such node is an error, never a silently quantized block."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    scope = "/model/" + "/".join(blocks_path.split("."))
    names = []
    for block in (b for b in blocks if b < depth):
        prefix = f"{scope}.{block}/"
        found = [node.name for node in graph.node
                 if node.name.startswith(prefix) or any(out.startswith(prefix) for out in node.output)]
        if not found:
            raise ElasticIRError(f"the int8 recipe keeps block {block} in float32, but the exported graph has no "
                                 f"node under {prefix}; use --encoder-precisions float32 or --backend torch")
        names += found
    return names


def _quantize(path: Path, float_nodes: Sequence[str] = ()) -> None:
    """ONNX Runtime's dynamic int8 quantization (QUANTIZATION), in place; `float_nodes` stay in float32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(path.name + ".int8")
    # onnxruntime logs on the root logger that pre-processing (shape inference) is advised: it does not apply to
    # the fused graph (see DefaultTensorType below), so users would read a warning they cannot act on
    quiet = _DropMessage("Please consider to run pre-processing")
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=getattr(QuantType, QUANTIZATION["weights"]),
                         per_channel=QUANTIZATION["per_channel"], reduce_range=QUANTIZATION["reduce_range"],
                         op_types_to_quantize=QUANTIZATION["ops"], nodes_to_exclude=list(float_nodes),
                         # the fused nodes (com.microsoft domain) defeat ONNX shape inference; their tensors are float
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
        os.replace(quantized, path)
    finally:
        logging.getLogger().removeFilter(quiet)
        quantized.unlink(missing_ok=True)


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def export(wrapper: PooledLayers, tokenizer, max_length: int, path: Path, fuse: bool, quantize: bool = False) -> None:
    """Export (fuse, and quantize) into a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = tokenizer(["an example sentence", "two"], padding=True, truncation=True, max_length=max_length,
                       return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; a plain open would honour the umask
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow
            torch.onnx.export(wrapper, tuple(sample[name] for name in names), tmp, dynamo=False,
                              input_names=names, output_names=[f"layer_{layer}" for layer in wrapper.layers],
                              dynamic_axes={name: {0: "batch", 1: "sequence"} for name in names},
                              opset_version=OPSET)
        if fuse:
            _fuse(Path(tmp), wrapper.model.config)
        if quantize:
            _quantize(Path(tmp), _float_nodes(Path(tmp), wrapper.blocks_path, QUANTIZATION["float_blocks"],
                                              max(wrapper.layers)))
        if fuse or quantize:
            os.chmod(tmp, 0o666 & ~current_umask())  # the optimizer / quantizer rewrote the file
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ElasticIRError(f"exporting {type(wrapper.model).__name__} to ONNX failed ({exc}); "
                             "use --backend torch") from exc


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class OnnxLayers:
    """onnxruntime sessions of one encoder, one per layer set, exported on first use and cached on disk."""

    def __init__(self, encoder, cache_dir: str | Path | None = None, *, fuse: bool = True,
                 quantize: bool = False) -> None:
        self.encoder, self.fuse, self.quantize = encoder, fuse, quantize
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE.expanduser()
        self.sessions: dict[tuple[int, ...], object] = {}

    def path(self, layers: Sequence[int]) -> Path:
        info = self.encoder.info
        key = _export_key(info.weights_sha256, layers, info.pooling, info.max_length, self.fuse, self.quantize)
        return self.cache_dir / key / "model.onnx"

    @staticmethod
    def checksum_path(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    def trusted(self, path: Path) -> bool:
        """The cached graph is whole and unchanged: its sha256 equals the one recorded when it was exported
        (a truncated, emptied or edited file, or one without a record, is not)."""
        try:
            recorded = self.checksum_path(path).read_text().split()[0]
            return path.stat().st_size > 0 and sha256_of_files([path]) == recorded
        except (OSError, IndexError):
            return False

    def _load(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _check_against_torch(self, session, layers: tuple[int, ...]) -> float:
        """Largest difference between the graph's output embeddings and the torch pass on a few texts: absolute
        for a float32 graph, cosine distance for an int8 one (see `agrees`)."""
        encoder = self.encoder
        batch = encoder.tokenizer(list(CHECK_TEXTS), padding=True, truncation=True,
                                  max_length=encoder.info.max_length, return_tensors="pt")
        batch = {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in batch}
        feed = {name: tensor.numpy().astype(np.int64) for name, tensor in batch.items()}
        feed.setdefault("token_type_ids", np.zeros_like(feed["input_ids"]))
        outputs = session.run(None, feed)
        with torch.no_grad():
            reference = encoder.forward_layers({k: v.to(encoder.device) for k, v in batch.items()}, layers)
            worst = 0.0
            for layer, array in zip(layers, outputs):
                ours = encoder.stack.finish(torch.from_numpy(array).to(encoder.device, encoder.dtype)).float()
                theirs = reference[layer].float()
                gap = (1 - torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)).max() if self.quantize \
                    else (ours - theirs).abs().max()
                worst = max(worst, float(gap))
        return worst

    def agrees(self, worst: float) -> bool:
        return worst <= (CHECK_COSINE_INT8 if self.quantize else CHECK_ATOL)

    def _export_checked(self, layers: tuple[int, ...], path: Path):
        """Export, check a few vectors against torch, then record the checksum (the graph counts as cached
        only after that). Under the lock of `path`."""
        encoder = self.encoder
        for attempt in range(2):
            wrapper = PooledLayers(encoder.model, _blocks_path(encoder.model, encoder._blocks), layers,
                                   encoder.info.pooling)
            export(wrapper, encoder.tokenizer, encoder.info.max_length, path, self.fuse, self.quantize)
            session = self._load(path)
            worst = self._check_against_torch(session, layers)
            if self.agrees(worst):
                atomic_write(self.checksum_path(path), f"{sha256_of_files([path])}  {path.name}\n")
                return session
        path.unlink(missing_ok=True)
        limit = f"cosine distance {CHECK_COSINE_INT8:g}" if self.quantize else f"{CHECK_ATOL:g}"
        raise ElasticIRError(f"the ONNX export of layers {list(layers)} differs from the torch pass by {worst:.2e} "
                             f"(more than {limit}); use --backend torch")

    def session(self, layers: Sequence[int]):
        """The session for this layer set: the cached graph when its checksum matches, else a fresh, checked
        export (under the graph's lock). Threads = torch's count."""
        layers = tuple(sorted(set(layers)))
        if layers not in self.sessions:
            path = self.path(layers)
            session, seen = None, _mtime(path)
            if self.trusted(path):
                try:  # checksum and a few vectors: a graph rewritten together with its record is caught too
                    session = self._load(path)
                    if not self.agrees(self._check_against_torch(session, layers)):
                        session = None
                except Exception:  # noqa: BLE001 - any load failure of a cached file means: export again
                    session = None
            if session is None:
                with exclusive(path.parent / ".lock", f"the ONNX cache {path.parent}"):
                    if session is None and self.trusted(path) and path.stat().st_mtime_ns != seen:
                        session = self._load(path)  # another run exported it while this one waited
                    else:
                        if path.exists():
                            stage(f"note: the cached ONNX graph {path} does not match its recorded sha256 "
                                  "(altered, truncated or from an older elasticir); exporting it again")
                        self.checksum_path(path).unlink(missing_ok=True)
                        session = self._export_checked(layers, path)
            self.sessions[layers] = session
        return self.sessions[layers]

    def forward_layers(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """{layer: pooled float32 [batch, hidden]} from one run of the cut graph."""
        layers = sorted(set(layers))
        self.encoder.check_cells(Cell(layer, 1) for layer in layers)
        feed = {name: tensor.numpy().astype(np.int64, copy=False) for name, tensor in batch.items()}  # graph: int64
        if "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        outputs = self.session(layers).run(None, feed)
        return {layer: torch.from_numpy(array) for layer, array in zip(layers, outputs)}
