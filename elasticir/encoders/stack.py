"""A sentence-transformers model as its transformer plus the module stack after it, applicable at any layer.

Why sentence-transformers' own modules instead of a re-implementation: a model's embedding is whatever its
module list computes (Pooling in any mode, Dense heads, LayerNorm, Normalize, ...); re-implementing the list
silently drops the modules one did not plan for (a Dense head gave the raw pooled vector, at the wrong width).
Layer-wise embeddings are built as sentence-transformers' `AdaptiveLayerLoss` builds them: the token states of
layer L (`hidden_states[L]`) go, as `token_embeddings`, through every module after the Transformer.

What a layer-L cell is where the architecture has a final norm after its last block (ModernBERT's
`final_norm`, the `norm` of Gemma3 / Qwen / Llama): transformers' `hidden_states[L]` is the raw output of block
L for L < N and the normed output for L = N. So the full cell is exactly the model's output (what
`SentenceTransformer.encode` gives) and a shallower cell is its block's raw output, the tensor AdaptiveLayerLoss
and 2DMSE train on. `run_layers` follows that rule.

Nothing in a model folder runs as code: modules.json may name only sentence-transformers' own module classes,
a Dense head's activation only a torch class, and a transformer that needs its repository's own code loads only
with `trust_remote_code` (the flag sentence-transformers and MTEB use).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from elasticir.errors import ElasticIRError

# Modules that read token states (`token_embeddings`) and may precede or be the Pooling; every one ships with
# sentence-transformers and works on any layer's states.
TOKEN_MODULES = ("CNN", "LSTM", "WordWeights", "Pooling")
# Modules that map one sentence embedding to another.
SENTENCE_MODULES = ("Dense", "Normalize", "LayerNorm", "Dropout")
# sentence-transformers modules that have no layer-wise meaning here, and why.
REFUSED = {
    "WeightedLayerPooling": "it mixes every layer's states, so a layer-L cell is undefined",
    "Router": "it sends queries and documents through different modules (asymmetric models)",
    "StaticEmbedding": "it has no transformer layers",
    "BoW": "it has no transformer layers",
    "WordEmbeddings": "it has no transformer layers",
    "CLIPModel": "it is an image-text model",
}


class StopForward(Exception):
    """Raised by the hook on the deepest requested layer: the layers above it never run."""


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ElasticIRError(f"{path}: not readable JSON ({exc}); restore the file from the model's source") from None


def module_entries(folder: Path) -> list[dict]:
    """modules.json of a sentence-transformers folder, each type checked to be one of sentence-transformers' own
    module classes (loading a module imports its class: a foreign one would run its code); [] for a plain
    Hugging Face folder (sentence-transformers then adds mean pooling)."""
    entries = read_json(folder / "modules.json")
    if not entries:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in entries):
        raise ElasticIRError(f"{folder / 'modules.json'}: expected a list of {{'type', 'path'}} objects")
    known = (*TOKEN_MODULES, *SENTENCE_MODULES, "Transformer", *REFUSED)
    for number, entry in enumerate(entries):
        kind = entry["type"].rsplit(".", 1)[-1]
        if not entry["type"].startswith("sentence_transformers.") or kind not in known:
            raise ElasticIRError(
                f"{folder / 'modules.json'}: module {number} has type {entry['type']!r}, which is not a "
                f"sentence-transformers module elasticir can run layer-wise (it runs {', '.join(known[:-len(REFUSED)])}); "
                "a custom module class would run the folder's own code")
        if kind in REFUSED:
            raise ElasticIRError(f"{folder / 'modules.json'}: module {number} ({kind}) is not supported: "
                                 f"{REFUSED[kind]}")
        if kind == "Dense":
            _check_dense_activation(folder / entry.get("path", ""))
    if entries[0]["type"].rsplit(".", 1)[-1] != "Transformer":
        raise ElasticIRError(f"{folder / 'modules.json'}: the first module must be a Transformer, not "
                             f"{entries[0]['type']}")
    return entries


def _check_dense_activation(path: Path) -> None:
    """A Dense head names its activation as an import path: only torch's own classes are accepted."""
    activation = read_json(path / "config.json").get("activation_function", "torch.nn.modules.linear.Identity")
    if not (isinstance(activation, str) and activation.startswith("torch.nn.")):
        raise ElasticIRError(f"{path / 'config.json'}: activation_function {activation!r} is not a torch.nn class; "
                             "elasticir imports only torch's own activations from a model folder")


def transformer_folder(folder: Path) -> Path:
    """Where the Hugging Face model of a folder lives (config.json, weights): its Transformer module's path."""
    entries = module_entries(folder)
    return folder / entries[0].get("path", "") if entries else folder


def _check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A transformer whose class transformers does not ship (config.json `auto_map` with an unknown model type)
    would run the repository's own Python; refuse it unless the user said they trust it."""
    config = read_json(transformer_folder(folder) / "config.json")
    if trust_remote_code or not isinstance(config, dict) or not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING  # lazy here and below: (sentence-)transformers are slow

    if config.get("model_type") not in CONFIG_MAPPING:
        raise ElasticIRError(
            f"{folder}: the model needs its own code (config.json auto_map, model type "
            f"{config.get('model_type')!r} is not in transformers); pass --trust-remote-code if you trust its "
            "source (the flag sentence-transformers and MTEB use)")


def _drop_unused_pooler(model: torch.nn.Module, folder: Path) -> None:
    """Remove BERT's pooler head when the checkpoint has no weights for it: embeddings come from the token
    states, so it is unused, and transformers would initialise it at random (and a trained model would then save
    random weights, giving two identical trainings different sha256s)."""
    if getattr(model, "pooler", None) is None:
        return
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    keys: list[str] = []
    for file in files:
        with safe_open(str(file), "pt") as handle:  # reads the header only
            keys += list(handle.keys())
    if files and not any(".pooler." in f".{key}" for key in keys):
        model.pooler = None


def load_sentence_transformer(folder: Path, *, device: str | torch.device | None = None,
                              dtype: torch.dtype | None = None, trust_remote_code: bool = False):
    """The folder as a `SentenceTransformer` (a plain Hugging Face folder gets mean pooling, as
    sentence-transformers gives it), after the checks that keep a folder's content data, never code."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise, not progress
    module_entries(folder)
    _check_remote_code(folder, trust_remote_code)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "pooler weights newly initialised": dropped right after the load
    try:
        model = SentenceTransformer(str(folder), device=str(device) if device else None,
                                    trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError:
        raise ElasticIRError(refused_pickle(folder)) from None
    except (OSError, ValueError, KeyError, ImportError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (pass --trust-remote-code if you trust its source)" if "trust_remote_code" in str(exc) else ""
        raise ElasticIRError(f"cannot load {folder} as a sentence-transformers model: {text}{hint}") from None
    finally:
        hf_logging.set_verbosity(previous)
    _drop_unused_pooler(model[0].auto_model, transformer_folder(folder))
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def refused_pickle(where: Path) -> str:
    """Why a pickled checkpoint did not load (torch's own text is a page long) and what to do about it."""
    pickles = sorted(where.glob("*.bin")) if where.is_dir() else []
    where = pickles[0] if len(pickles) == 1 else where
    return (f"{where}: the checkpoint is a pickle holding Python objects besides tensors, which torch.load "
            "refuses with weights_only=True because loading it could run arbitrary code. Fix: if you trust its "
            "source, load it once in Python with weights_only=False and save the model again with "
            "save_pretrained (safetensors)")


def transformer_blocks(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The list of transformer blocks (encoder.layer for BERT/RoBERTa, layers for ModernBERT, Gemma, Qwen...)."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ElasticIRError(f"cannot find the {num_layers} transformer blocks of {type(model).__name__}")


def _last_hidden(output) -> torch.Tensor:
    """The final token states of a forward's output: a sentence-transformers Transformer's features dict, or a
    transformers model output (after the final norm, where the architecture has one)."""
    if isinstance(output, dict) and "token_embeddings" in output:
        return output["token_embeddings"]
    return output[0] if isinstance(output, tuple) else output.last_hidden_state


def run_layers(forward: Callable[[], object], blocks: torch.nn.ModuleList, layers: Sequence[int],
               pool: Callable[[torch.Tensor], torch.Tensor]) -> dict[int, torch.Tensor]:
    """Call `forward` with temporary hooks that pool each wanted block's output and stop after the deepest.

    The one early-exit mechanism of the package (encoding, training and pre-training use it): blocks above the
    deepest wanted layer never run, each layer is pooled as soon as it is computed so its token states can be
    freed, and the hooks are removed afterwards, leaving the model as it was. The last layer is read from the
    forward's own output instead of its block (`hidden_states[N]`: after the final norm, where there is one).
    """
    pooled: dict[int, torch.Tensor] = {}
    deepest, last = max(layers), len(blocks)

    def hook_for(layer: int):
        def hook(_module, _inputs, output):
            pooled[layer] = pool(output[0] if isinstance(output, tuple) else output)
            if layer == deepest:
                raise StopForward

        return hook

    handles = [blocks[layer - 1].register_forward_hook(hook_for(layer)) for layer in sorted(set(layers))
               if layer != last]
    try:
        output = forward()
        if deepest == last:
            pooled[last] = pool(_last_hidden(output))
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return pooled


def _kind(module: torch.nn.Module) -> str:
    return type(module).__name__


@dataclass
class ModuleStack:
    """The modules of a SentenceTransformer after its Transformer, split where the sentence embedding appears:
    `token_modules` read token states (ending with Pooling), `sentence_modules` map the pooled vector to the
    model's output (Dense, LayerNorm, Normalize, ...)."""

    token_modules: tuple[torch.nn.Module, ...]
    sentence_modules: tuple[torch.nn.Module, ...]

    @classmethod
    def of(cls, model, pooling: str | None = None) -> ModuleStack:
        """The stack of a loaded SentenceTransformer; `pooling` replaces its Pooling module's mode."""
        from sentence_transformers.base.modules import Transformer

        modules = list(model)
        if not modules or not isinstance(modules[0], Transformer):
            raise ElasticIRError(f"the model's first module is {_kind(modules[0]) if modules else 'missing'}, "
                                 "not a Transformer: it has no layers to cut")
        rest = modules[1:]
        kinds = [_kind(m) for m in rest]
        for kind in kinds:
            if kind not in TOKEN_MODULES + SENTENCE_MODULES:
                reason = REFUSED.get(kind, "elasticir cannot apply it to one layer's states")
                raise ElasticIRError(f"module {kind} after the Transformer is not supported: {reason}")
        if "Pooling" not in kinds:
            raise ElasticIRError(f"the model's modules ({' -> '.join(['Transformer', *kinds])}) have no Pooling; "
                                 "elasticir needs one sentence embedding per layer")
        split = kinds.index("Pooling") + 1  # a token-level module after it would find no token states
        if any(kind in TOKEN_MODULES for kind in kinds[split:]):
            raise ElasticIRError(f"unsupported module order {' -> '.join(['Transformer', *kinds])}")
        token_modules = tuple(rest[:split])
        if pooling is not None:
            repooled = _repooled(token_modules[-1], pooling)
            sized = [_kind(m) for m in rest[split:] if _kind(m) in ("Dense", "LayerNorm")]
            if sized and _pooled_width(repooled) != _pooled_width(token_modules[-1]):
                raise ElasticIRError(
                    f"pooling {pooling!r} gives {_pooled_width(repooled)}-dim vectors, but the model's {sized[0]} "
                    f"after its Pooling takes {_pooled_width(token_modules[-1])}: choose a pooling with as many "
                    f"modes as the model's ({ModuleStack((token_modules[-1],), ()).pooling!r})")
            token_modules = token_modules[:-1] + (repooled,)
        return cls(token_modules, tuple(rest[split:]))

    @property
    def pooling_module(self):
        return self.token_modules[-1]

    @property
    def pooling(self) -> str:
        """The Pooling mode(s) as one name: "mean", "cls", "lasttoken", ..., or "cls+mean" for several."""
        mode = self.pooling_module.pooling_mode
        return mode if isinstance(mode, str) else "+".join(mode)

    @property
    def include_prompt(self) -> bool:
        return bool(getattr(self.pooling_module, "include_prompt", True))

    @property
    def head(self) -> list[str]:
        """What the stack adds besides one Pooling and a final Normalize, as short names (empty for the plain
        stacks whose results elasticir recorded before it ran stacks: their keys and run ids stay as they were)."""
        described = [_describe(m) for m in self.token_modules[:-1]]
        if not self.include_prompt:
            described.append("Pooling(include_prompt=False)")
        sentence = list(self.sentence_modules)
        if sentence and _kind(sentence[-1]) == "Normalize":
            sentence = sentence[:-1]
        return described + [_describe(m) for m in sentence]

    @property
    def normalized(self) -> bool:
        """The output is unit length (a Normalize module ends the stack)."""
        return bool(self.sentence_modules) and _kind(self.sentence_modules[-1]) == "Normalize"

    @property
    def poolable_packed(self) -> bool:
        """Packed (unpadded) batches can be pooled by elasticir's per-sequence kernels: one mean or CLS Pooling
        over all tokens; any sentence modules then run on the pooled vectors as usual."""
        return len(self.token_modules) == 1 and self.pooling in ("mean", "cls") and self.include_prompt

    @property
    def pooling_described(self) -> str:
        """How the stack pools, as the refusals of the packed and ONNX paths name it: the mode, and what besides
        it keeps those paths off (a Pooling that leaves the prompt out, token modules before the Pooling)."""
        text = repr(self.pooling) + ("" if self.include_prompt else " without the prompt")
        before = [_describe(m) for m in self.token_modules[:-1]]
        return text + (f" after {', '.join(before)}" if before else "")

    def pool(self, hidden: torch.Tensor, features: dict) -> torch.Tensor:
        """The Pooling output (the `sentence_embedding` before any sentence module) of one layer's states."""
        state = {**features, "token_embeddings": hidden}
        for module in self.token_modules:
            state = module(state)
        return state["sentence_embedding"]

    def finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """The model's output embedding of a pooled vector: every module after Pooling applied."""
        state = {"sentence_embedding": pooled}
        for module in self.sentence_modules:
            state = module(state)
        return state["sentence_embedding"]

    def output_width(self, hidden_size: int) -> int:
        """The width of the stack's output for token states of `hidden_size` (a Dense head or a multi-mode Pooling
        changes it), measured by running the modules on two zero token states: no transformer pass, and the
        same answer for every module, including those whose own dimension report sentence-transformers lacks."""
        parameter = next((p for m in (*self.token_modules, *self.sentence_modules) for p in m.parameters()), None)
        device, dtype = (parameter.device, parameter.dtype) if parameter is not None else ("cpu", torch.float32)
        ids = torch.zeros(1, 2, dtype=torch.long, device=device)
        features = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            return int(self.embed(torch.zeros(1, 2, hidden_size, device=device, dtype=dtype), features).shape[-1])

    def embed(self, hidden: torch.Tensor, features: dict) -> torch.Tensor:
        return self.finish(self.pool(hidden, features))


def _repooled(pooling, mode: str):
    from sentence_transformers.sentence_transformer.modules import Pooling

    modes = tuple(mode.split("+"))
    for name in modes:
        if name not in Pooling.POOLING_MODES:
            raise ElasticIRError(f"pooling {mode!r} is not supported; choose one of {', '.join(Pooling.POOLING_MODES)}"
                                 " (or several joined by '+')")
    return Pooling(pooling.embedding_dimension, pooling_mode=modes[0] if len(modes) == 1 else modes, include_prompt=pooling.include_prompt)


def _pooled_width(pooling) -> int:
    """The width of a Pooling module's output: its token width once per mode."""
    mode = pooling.pooling_mode
    return pooling.embedding_dimension * (1 if isinstance(mode, str) else len(mode))


def _describe(module: torch.nn.Module) -> str:
    kind = _kind(module)
    if kind == "Dense":
        activation = type(module.activation_function).__name__
        residual = ",residual" if module.use_residual else ""
        source = "" if module.module_input_name == "sentence_embedding" else f",{module.module_input_name}"
        return f"Dense({module.in_features}->{module.out_features},{activation}{residual}{source})"
    if kind == "Pooling":
        return f"Pooling({module.pooling_mode})"
    return kind
