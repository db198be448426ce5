"""Conformance: elasticir encodes every cell exactly as sentence-transformers does.

Tiny random models of each supported architecture are built from configs (no download) with offline tokenizers
(WordPiece; byte-level BPE for RoBERTa and Qwen3), wrapped in a sentence-transformers module stack (Pooling in
each mode, Dense heads, LayerNorm, Normalize, prompts, do_lower_case) and saved with `SentenceTransformer.save`
(plus two plain Hugging Face folders). For every (architecture, stack) case in CASES:
(a) the full cell equals `SentenceTransformer.encode`; (b) each width d equals sentence-transformers' own
truncation (`truncate_dim`): the raw prefix, and after elasticir's scoring normalisation the L2-normalised one;
(c) each layer L equals the layer-wise embedding AdaptiveLayerLoss trains (`hidden_states[L]` as the
`token_embeddings` through every module after the Transformer). Then early exit, the refusals of folders that
would run foreign code, MTEB's prompt rule (its `get_prompt_name`, and its wrapper end to end), and the ONNX /
packed paths against torch. The models are built once per module; one torch thread (see `models`).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from elasticir.encoders import ElasticEncoder, truncate
from elasticir.errors import ElasticIRError

WIDTH, LAYERS, ATOL = 64, 3, 1e-5
TEXTS = [
    "A man is playing a guitar on the stage.",
    "short",
    "The quick brown fox jumps over the lazy dog near the river bank, twice in one morning!",
    "Two kids are swimming in a pool.",
    "Zebras graze; xylophones clang.",  # words outside the vocabulary: split into characters
    "the dog runs in the park " * 14,  # longer than max_seq_length (64): truncated
]
PROMPTS = {"query": "query: ", "document": "passage: ", "STS": "sts: ",
           "Retrieval-query": "task: search result | query: "}


def _vocab() -> dict[str, int]:
    """A WordPiece vocabulary: the special tokens, every character (word-initial and ##), and the words of the
    first texts and of the prompts (the last text decomposes into characters)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens += list(chars) + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    for text in [*TEXTS[:4], *PROMPTS.values()]:
        tokens += [w for w in re.findall(r"\w+", text.lower()) if w not in tokens]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


VOCAB = _vocab()


def _byte_bpe(specials: list[str], template: str, **tokens):
    """A byte-level BPE tokenizer trained on the texts (as RoBERTa's and Qwen's are byte-level BPE), with a
    post-processor adding the special tokens of `template`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([*TEXTS, *PROMPTS.values()], trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, tokenizer.token_to_id(s)) for s in specials if s in template])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **tokens)


def make_tokenizer(kind: str, padding_side: str):
    """"wordpiece": BERT's kind, [CLS] text [SEP], [PAD] = 0; "roberta": <s> text </s>, <pad> = 1 (RoBERTa's
    positions start after the pad id); "qwen": text <|endoftext|>, which is also the pad token (Qwen3-Embedding)."""
    from transformers import BertTokenizer

    if kind == "wordpiece":
        return BertTokenizer(vocab=dict(VOCAB), do_lower_case=True, padding_side=padding_side)
    if kind == "roberta":
        return _byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", bos_token="<s>",
                         eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>", sep_token="</s>",
                         mask_token="<mask>", padding_side=padding_side)
    return _byte_bpe(["<|endoftext|>"], "$A <|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                     padding_side=padding_side)


COMMON = {"hidden_size": WIDTH, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
          "intermediate_size": 2 * WIDTH, "max_position_embeddings": 128, "pad_token_id": 0}
SPECIAL_IDS = {"bos_token_id": 2, "eos_token_id": 3}
# architecture: (config class, model class, config overrides, tokenizer padding side[, tokenizer kind])
ARCHITECTURES = {
    "bert": ("BertConfig", "BertModel", {}, "right"),
    "roberta": ("RobertaConfig", "RobertaModel", {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}, "right",
                "roberta"),
    "xlmr": ("XLMRobertaConfig", "XLMRobertaModel", SPECIAL_IDS, "right"),
    "mpnet": ("MPNetConfig", "MPNetModel", SPECIAL_IDS, "right"),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   {"dim": WIDTH, "n_layers": LAYERS, "n_heads": 2, "hidden_dim": 2 * WIDTH}, "right"),
    # a global layer between local ones; the window (16) is shorter than the longest text
    "modernbert": ("ModernBertConfig", "ModernBertModel",
                   {**SPECIAL_IDS, "cls_token_id": 2, "sep_token_id": 3, "global_attn_every_n_layers": 2,
                    "local_attention": 16}, "right"),
    # as EmbeddingGemma: Gemma3TextModel with bidirectional attention, sliding and full layers
    "gemma3": ("Gemma3TextConfig", "Gemma3TextModel",
               {**SPECIAL_IDS, "head_dim": 16, "num_key_value_heads": 1, "use_bidirectional_attention": True,
                "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
               "right"),
    # as Qwen3-Embedding: a causal decoder, left padding, last-token pooling
    "qwen3": ("Qwen3Config", "Qwen3Model", {"eos_token_id": 0, "head_dim": 16, "num_key_value_heads": 1}, "left",
              "qwen"),
}


@dataclass(frozen=True)
class Stack:
    """The modules after the Transformer: Pooling, Dense heads ((out, activation, bias) each), LayerNorm,
    Normalize; `prompt` names the prompt both sides encode with (the folder then declares PROMPTS)."""

    name: str
    pooling: str | tuple[str, ...] = "mean"
    dense: tuple[tuple[int, str, bool], ...] = ()
    layer_norm: bool = False
    normalize: bool = True
    include_prompt: bool = True
    prompt: str | None = None
    token_dense: int | None = None  # a Dense on the token embeddings before Pooling, to this width
    similarity: str | None = None
    plain: bool = False  # a plain Hugging Face folder: sentence-transformers adds mean pooling
    lowercase: bool = False  # sentence_bert_config.json do_lower_case (ST lowercases in the tokenizer's normalizer)


MEAN = Stack("mean-norm")
CLS = Stack("cls", pooling="cls", normalize=False)
DENSE = Stack("mean-dense64to32tanh-norm", dense=((32, "Tanh", True),))
STACKS = {s.name: s for s in [
    MEAN, CLS, DENSE,
    Stack("max-norm", pooling="max"),
    Stack("weightedmean-norm", pooling="weightedmean"),
    Stack("meansqrtlen", pooling="mean_sqrt_len_tokens", normalize=False),
    Stack("cls+mean-dense128to64-layernorm", pooling=("cls", "mean"), dense=((64, "ReLU", True),), layer_norm=True,
          normalize=False),
    Stack("mean-noprompt-norm-query", include_prompt=False, prompt="query"),
    Stack("mean-norm-sts", prompt="STS"),
    # EmbeddingGemma's head scaled down: Dense 768->3072->768 without bias or activation, then Normalize
    Stack("mean-dense64to256to64-norm-query", dense=((256, "Identity", False), (64, "Identity", False)),
          prompt="Retrieval-query"),
    Stack("mean-noprompt-dense64to256to64-norm-document", dense=((256, "Identity", False), (64, "Identity", False)),
          include_prompt=False, prompt="document"),
    Stack("lasttoken-norm-query", pooling="lasttoken", prompt="query"),
    Stack("lasttoken", pooling="lasttoken", normalize=False),
    Stack("lasttoken-dense64to32tanh-norm", pooling="lasttoken", dense=((32, "Tanh", True),)),
    Stack("mean-noprompt-norm-query-left", include_prompt=False, prompt="query"),
    Stack("tokendense64to32-mean-norm", token_dense=32),
    Stack("lasttoken-dot", pooling="lasttoken", normalize=False, similarity="dot"),
    Stack("hf-folder", plain=True, normalize=False),
    Stack("mean-norm-lowercase", lowercase=True),
]}

ENCODER_ONLY = ("bert", "roberta", "xlmr", "mpnet", "distilbert", "modernbert")
CASES = [(arch, name) for arch in ENCODER_ONLY for name in (MEAN.name, CLS.name, DENSE.name)] + [
    ("bert", "max-norm"), ("bert", "weightedmean-norm"), ("bert", "meansqrtlen"),
    ("bert", "cls+mean-dense128to64-layernorm"), ("bert", "mean-noprompt-norm-query"),
    ("xlmr", "mean-norm-sts"), ("modernbert", "mean-noprompt-norm-query"),
    ("gemma3", "mean-dense64to256to64-norm-query"), ("gemma3", "mean-noprompt-dense64to256to64-norm-document"),
    ("gemma3", "mean-norm"), ("gemma3", "hf-folder"), ("bert", "hf-folder"), ("mpnet", "tokendense64to32-mean-norm"),
    ("qwen3", "lasttoken-norm-query"), ("qwen3", "lasttoken"), ("qwen3", "lasttoken-dense64to32tanh-norm"),
    ("qwen3", "mean-noprompt-norm-query-left"), ("qwen3", "lasttoken-dot"), ("roberta", "mean-norm-lowercase"),
]


class Models:
    """Builds each architecture's random transformer once, and each (architecture, stack) folder once."""

    def __init__(self, root: Path) -> None:
        self.root, self.transformers, self.folders, self.loaded = root, {}, {}, {}

    def transformer(self, arch: str):
        if arch not in self.transformers:
            import transformers
            from sentence_transformers.base.modules import Transformer

            config_name, model_name, overrides, side, *kind = ARCHITECTURES[arch]
            folder = self.root / arch / "hf"
            tokenizer = make_tokenizer(kind[0] if kind else "wordpiece", side)
            torch.manual_seed(0)
            config = getattr(transformers, config_name)(**{**COMMON, "vocab_size": len(tokenizer), **overrides})
            getattr(transformers, model_name)(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            self.transformers[arch] = Transformer(str(folder), max_seq_length=64)
        return self.transformers[arch]

    def folder(self, arch: str, stack: Stack) -> Path:
        key = (arch, stack.name)
        if stack.plain:
            self.transformer(arch)
            return self.root / arch / "hf"
        if key not in self.folders:
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.base.modules import Dense, Normalize
            from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling

            torch.manual_seed(1)
            modules, width = [self.transformer(arch)], WIDTH
            if stack.token_dense:
                modules.append(Dense(WIDTH, stack.token_dense, activation_function=torch.nn.GELU(),
                                     module_input_name="token_embeddings"))
                width = stack.token_dense
            modules.append(Pooling(width, pooling_mode=stack.pooling, include_prompt=stack.include_prompt))
            width *= len(stack.pooling) if isinstance(stack.pooling, tuple) else 1
            for out, activation, bias in stack.dense:
                modules.append(Dense(width, out, bias=bias, activation_function=getattr(torch.nn, activation)()))
                width = out
            if stack.layer_norm:
                modules.append(LayerNorm(width))
                with torch.no_grad():  # not the identity initialisation, so that it is seen to apply
                    modules[-1].norm.weight.uniform_(0.5, 1.5)
                    modules[-1].norm.bias.uniform_(-0.5, 0.5)
            if stack.normalize:
                modules.append(Normalize())
            model = SentenceTransformer(modules=modules, device="cpu", prompts=PROMPTS if stack.prompt else None,
                                        similarity_fn_name=stack.similarity)
            folder = self.root / arch / stack.name
            model.save(str(folder))
            if stack.lowercase:
                config = json.loads((folder / "sentence_bert_config.json").read_text())
                (folder / "sentence_bert_config.json").write_text(json.dumps({**config, "do_lower_case": True}))
            self.folders[key] = folder
        return self.folders[key]

    def load(self, arch: str, name: str):
        """(folder, sentence-transformers' own load of it, elasticir's encoder of it)."""
        if (arch, name) not in self.loaded:
            from sentence_transformers import SentenceTransformer

            folder = self.folder(arch, STACKS[name])
            self.loaded[(arch, name)] = (folder, SentenceTransformer(str(folder), device="cpu"),
                                         ElasticEncoder(str(folder), device="cpu"))
        return self.loaded[(arch, name)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    # one thread: these models are tiny, and on a shared machine two threads spend more time waiting for each
    # other than multiplying (measured: 15x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Models(tmp_path_factory.mktemp("conformance"))
    torch.set_num_threads(threads)


def prompt_of(name: str) -> str:
    return PROMPTS[STACKS[name].prompt] if STACKS[name].prompt else ""


def st_encode(st, prompt: str, **kwargs) -> np.ndarray:
    # the reference in one batch; elasticir encodes in batches of two, so padding may not change a cell
    return st.encode(TEXTS, prompt=prompt or None, batch_size=len(TEXTS), convert_to_numpy=True, **kwargs)


def layerwise_reference(st, prompt: str) -> dict[int, np.ndarray]:
    """AdaptiveLayerLoss' layer-wise embeddings: the Transformer run with output_hidden_states (its
    TransformerDecorator.call_grow_cache), then hidden_states[L] as token_embeddings through every later module
    (call_use_cache, then the model's forward over the remaining modules)."""
    config = st[0].auto_model.config
    features = st.preprocess(TEXTS, prompt=prompt or None)
    previous = config.output_hidden_states
    config.output_hidden_states = True
    try:
        with torch.no_grad():
            features = st[0](features)
            out = {}
            for layer in range(1, LAYERS + 1):
                state = {**features, "token_embeddings": features["all_layer_embeddings"][layer]}
                for module in list(st)[1:]:
                    state = module(state)
                out[layer] = state["sentence_embedding"].numpy()
    finally:
        config.output_hidden_states = previous
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def blocks_of(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise AssertionError(f"no blocks found in {type(model).__name__}")


@pytest.mark.parametrize(("arch", "name"), CASES, ids=[f"{a}-{n}" for a, n in CASES])
def test_every_cell_equals_sentence_transformers(models, arch, name):
    _, st, encoder = models.load(arch, name)
    prompt, stack = prompt_of(name), STACKS[name]
    assert type(st[0].auto_model).__name__ == ARCHITECTURES[arch][1]
    assert st[0].tokenizer.padding_side == ARCHITECTURES[arch][3]
    assert [type(m).__name__ for m in st][1:] == [type(m).__name__ for m in encoder.stack.token_modules
                                                 + encoder.stack.sentence_modules]
    # batches of two, in elasticir's order (longest first): other paddings than sentence-transformers' one batch
    out = encoder.encode(TEXTS, range(1, LAYERS + 1), batch_size=2, prompt=prompt, show_progress=False)
    # (a) the full cell is the model's output embedding
    reference = st_encode(st, prompt)
    assert encoder.hidden_size == reference.shape[1]
    np.testing.assert_allclose(out[LAYERS], reference, atol=ATOL, rtol=0)
    # (b) every width: sentence-transformers truncates the output (after any Normalize); elasticir slices the same
    # prefix and, for a cosine model, normalises it (the L2-normalised truncated vector), for a dot model not
    assert encoder.info.normalize == (st.similarity_fn_name == "cosine")
    for dim in range(1, reference.shape[1] + 1):
        truncated = st_encode(st, prompt, truncate_dim=dim) if dim in (1, reference.shape[1] // 2 + 1) \
            else reference[:, :dim]  # encode(truncate_dim=d) is the full output's prefix: checked on two dims
        np.testing.assert_allclose(truncate(out[LAYERS], dim, normalize=False), truncated, atol=ATOL, rtol=0)
        np.testing.assert_allclose(truncate(out[LAYERS], dim, normalize=encoder.info.normalize),
                                   unit(truncated) if encoder.info.normalize else truncated, atol=ATOL, rtol=0)
    # (c) every layer is AdaptiveLayerLoss' layer-wise embedding
    expected = layerwise_reference(st, prompt)
    for layer in range(1, LAYERS + 1):
        np.testing.assert_allclose(out[layer], expected[layer], atol=ATOL, rtol=0, err_msg=f"layer {layer}")
    np.testing.assert_allclose(expected[LAYERS], reference, atol=ATOL, rtol=0)
    if stack.normalize:
        np.testing.assert_allclose(np.linalg.norm(out[1], axis=1), 1, atol=ATOL)


@pytest.mark.parametrize(("arch", "name", "dim"), [("bert", DENSE.name, 7), ("gemma3", "mean-norm", 16),
                                                   ("qwen3", "lasttoken-norm-query", 5)])
def test_truncate_dim_model_equals_the_prefix(models, arch, name, dim):
    from sentence_transformers import SentenceTransformer

    folder, _, encoder = models.load(arch, name)
    prompt = prompt_of(name)
    truncated = st_encode(SentenceTransformer(str(folder), device="cpu", truncate_dim=dim), prompt)
    full = encoder.encode(TEXTS, [LAYERS], batch_size=len(TEXTS), prompt=prompt, show_progress=False)[LAYERS]
    np.testing.assert_allclose(truncate(full, dim, normalize=False), truncated, atol=ATOL, rtol=0)
    np.testing.assert_allclose(truncate(full, dim), unit(truncated), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_a_layer_runs_only_its_blocks(models, arch):
    name = "lasttoken-norm-query" if arch == "qwen3" else MEAN.name
    _, _, encoder = models.load(arch, name)
    blocks = blocks_of(encoder.model)
    assert len(blocks) == LAYERS
    calls = [0] * LAYERS

    def counter(index: int):
        def hook(*_):
            calls[index] += 1

        return hook

    handles = [block.register_forward_hook(counter(i)) for i, block in enumerate(blocks)]
    try:
        for deepest in range(1, LAYERS + 1):
            calls[:] = [0] * LAYERS
            encoder.encode(TEXTS, [deepest], batch_size=len(TEXTS), show_progress=False)
            assert calls == [1] * deepest + [0] * (LAYERS - deepest), deepest
    finally:
        for handle in handles:
            handle.remove()


# --- folders that would run foreign code are refused, never skipped ---------------------------------------


def _modules_json(folder: Path, *types: str) -> Path:
    folder.mkdir(parents=True)
    entries = [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{t.rsplit('.', 1)[-1]}", "type": t}
               for i, t in enumerate(types)]
    (folder / "modules.json").write_text(json.dumps(entries))
    for entry in entries[1:]:
        (folder / entry["path"]).mkdir()
    return folder


@pytest.mark.parametrize(("module", "message"), [
    ("mypkg.MyModule", "'mypkg.MyModule', which is not a sentence-transformers module"),
    ("sentence_transformers.models.MyModule", "which is not a sentence-transformers module"),
    ("sentence_transformers.models.WeightedLayerPooling", "WeightedLayerPooling) is not supported: it mixes"),
    ("sentence_transformers.models.Router", "Router) is not supported"),
])
def test_an_unknown_or_layerless_module_is_one_clear_error(tmp_path, module, message):
    folder = _modules_json(tmp_path / "m", "sentence_transformers.models.Transformer", module,
                           "sentence_transformers.models.Pooling", "sentence_transformers.models.Normalize")
    with pytest.raises(ElasticIRError, match=re.escape(message)):
        ElasticEncoder(str(folder), device="cpu")


def test_a_module_loaded_outside_modules_json_is_refused(models):
    """A stack assembled in Python with a module elasticir cannot cut (here WeightedLayerPooling) is refused by
    ModuleStack too, not skipped."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, WeightedLayerPooling

    from elasticir.encoders.stack import ModuleStack

    model = SentenceTransformer(modules=[models.transformer("bert"), WeightedLayerPooling(WIDTH, LAYERS),
                                         Pooling(WIDTH)], device="cpu")
    with pytest.raises(ElasticIRError, match="WeightedLayerPooling after the Transformer is not supported"):
        ModuleStack.of(model)


def test_remote_code_needs_trust_remote_code(tmp_path):
    folder = _modules_json(tmp_path / "m", "sentence_transformers.models.Transformer",
                           "sentence_transformers.models.Pooling")
    (folder / "config.json").write_text(json.dumps({"model_type": "my-own-bert",
                                                    "auto_map": {"AutoConfig": "modeling_mine.MyConfig",
                                                                 "AutoModel": "modeling_mine.MyModel"}}))
    with pytest.raises(ElasticIRError, match="pass --trust-remote-code") as error:
        ElasticEncoder(str(folder), device="cpu")
    assert "my-own-bert" in str(error.value)
    # with the flag the check lets it through, to sentence-transformers' loader (which finds no code file here)
    with pytest.raises(ElasticIRError, match="modeling_mine.py"):
        ElasticEncoder(str(folder), device="cpu", trust_remote_code=True)


@pytest.mark.parametrize("activation", ["mypkg.activations.Evil", "builtins.eval"])
def test_a_dense_activation_outside_torch_is_refused(tmp_path, activation):
    folder = _modules_json(tmp_path / "m", "sentence_transformers.models.Transformer",
                           "sentence_transformers.models.Pooling", "sentence_transformers.models.Dense")
    (folder / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": WIDTH, "out_features": 8, "bias": True, "activation_function": activation}))
    with pytest.raises(ElasticIRError, match="is not a torch.nn class"):
        ElasticEncoder(str(folder), device="cpu")


# --- MTEB's prompt rule -------------------------------------------------------------------------------------

PROMPT_TABLES = [
    {},
    {"query": "q: ", "document": "d: "},
    {"query": "q: "},
    {"STS": "s: ", "query": "q: "},
    {"Retrieval": "r: ", "Retrieval-query": "rq: ", "query": "q: ", "document": "d: "},
    {"SciFact": "sf: ", "Retrieval-query": "rq: "},
    {"SciFact-query": "sfq: ", "SciFact": "sf: ", "Retrieval-document": "rd: ", "document": "d: "},
    {"STSBenchmark": "b: ", "STS": "s: "},
    {"STSBenchmark-query": "bq: ", "STS-document": "sd: ", "STS": "s: "},
    {"Classification": "c: ", "query": "q: "},
    {"SciFact": "", "STS": "", "query": "q: ", "document": "d: "},  # explicitly empty, outranking the others
]


def test_prompt_selection_agrees_with_mteb():
    mteb = pytest.importorskip("mteb")
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType

    from elasticir.encoders.prompts import choose, mteb_prompt_name

    checked = 0
    for task in ("STSBenchmark", "SciFact", "Banking77Classification"):
        metadata = mteb.get_task(task).metadata
        for prompts in PROMPT_TABLES:
            for side in (None, PromptType.query, PromptType.document):
                theirs = get_prompt_name(prompts, metadata, side)
                ours = mteb_prompt_name(prompts, metadata.name, metadata.type, side.value if side else None)
                assert ours == theirs, (task, prompts, side)
                chosen = choose(prompts, None, task_name=metadata.name, task_type=metadata.type,
                                prompt_type=side.value if side else None)
                assert (chosen.name, chosen.text) == ((theirs, prompts[theirs]) if theirs else (None, ""))
                checked += 1
    assert checked == 3 * len(PROMPT_TABLES) * 3


def test_the_prompt_mteb_gives_a_sentence_transformers_model_is_the_one_elasticir_chooses(models):
    """End to end, as MTEB runs a SentenceTransformer: its wrapper resolves a prompt from the model's prompts
    (which always hold sentence-transformers' "query" and "document", "" unless set) and calls encode_query /
    encode_document / encode with it; the text sentence-transformers then prepends (its `_resolve_prompt`,
    where `default_prompt_name` applies) is the text `choose` gives, from the model's prompts as ModelInfo keeps
    them (empty ones dropped) or as sentence-transformers has them."""
    mteb = pytest.importorskip("mteb")
    from mteb.models.sentence_transformer_wrapper import _resolve_prompt, _select_encode_function
    from mteb.types import PromptType

    from elasticir.encoders.prompts import choose

    class Resolved(Exception):
        pass

    st = models.load("bert", MEAN.name)[1]
    saved = st.prompts, st.default_prompt_name
    resolve = st._resolve_prompt

    def capture(prompt, prompt_name):  # the text encode would prepend; stop before any forward
        raise Resolved(resolve(prompt, prompt_name) or "")

    st._resolve_prompt = capture
    checked = 0
    try:
        for task in ("STSBenchmark", "SciFact", "Banking77Classification"):
            metadata = mteb.get_task(task).metadata
            for table in PROMPT_TABLES:
                for default in dict.fromkeys([None, *list(table)[:1], "query"]):
                    st.prompts, st.default_prompt_name = {"query": "", "document": "", **table}, default
                    for side in (None, PromptType.query, PromptType.document):
                        with pytest.raises(Resolved) as applied:
                            _select_encode_function(st, side)(["x"], prompt=_resolve_prompt(st.prompts, metadata, side))
                        # ModelInfo's prompts (empty ones dropped) choose the same unless an empty prompt
                        # outranks a set one: the caller then needs the model's prompts as they are
                        nonempty = {k: v for k, v in st.prompts.items() if v}
                        for prompts in (dict(st.prompts), *([nonempty] if all(table.values()) else [])):
                            chosen = choose(prompts, default, task_name=metadata.name, task_type=metadata.type,
                                            prompt_type=side.value if side else None)
                            assert chosen.text == applied.value.args[0], (task, table, default, side, prompts)
                        checked += 1
    finally:
        del st._resolve_prompt
        st.prompts, st.default_prompt_name = saved
    assert checked > 150


# --- the ONNX backend and the packed path -------------------------------------------------------------------


def test_onnx_backend_equals_torch_on_a_dense_stack(models, tmp_path):
    pytest.importorskip("onnxruntime")
    folder, _, torch_encoder = models.load("bert", DENSE.name)
    onnx_encoder = ElasticEncoder(str(folder), device="cpu", backend="onnx", onnx_cache=tmp_path)
    layers = list(range(1, LAYERS + 1))
    expected = torch_encoder.encode(TEXTS, layers, batch_size=len(TEXTS), prompt="query: ", show_progress=False)
    got = onnx_encoder.encode(TEXTS, layers, batch_size=len(TEXTS), prompt="query: ", show_progress=False)
    for layer in layers:
        np.testing.assert_allclose(got[layer], expected[layer], atol=ATOL, rtol=0)


# Stacks the ONNX graph and the packed path cannot pool (one mean / CLS Pooling over all tokens, BERT for ONNX,
# the packable model types for packing): the ONNX refusal and the packed fallback note, each saying why.
UNPOOLABLE = [
    pytest.param("bert", "max-norm", "--backend onnx runs through ONNX Runtime, whose graph pools mean or CLS over all tokens; this model's stack "
                 "pools 'max': use --backend torch",
                 "unpadded batches pool mean or CLS over all tokens, not 'max'", id="max"),
    pytest.param("bert", "mean-noprompt-norm-query", "without the prompt", "not 'mean' without the prompt",
                 id="no-prompt"),
    pytest.param("bert", "tokendense64to32-mean-norm", "pools 'mean' after Dense(64->32,GELU,token_embeddings): use",
                 "not 'mean' after Dense(64->32,GELU,token_embeddings)", id="token-dense"),
    pytest.param("roberta", MEAN.name, "--backend onnx runs through ONNX Runtime, which elasticir exports for bert models; this model is "
                 "'roberta': use --backend torch",
                 "not 'roberta'", id="roberta"),
]


@pytest.mark.parametrize(("arch", "name", "message", "_reason"), UNPOOLABLE)
def test_onnx_refuses_what_it_cannot_pool(models, arch, name, message, _reason):
    folder = models.folder(arch, STACKS[name])
    with pytest.raises(ElasticIRError, match=re.escape(message)):
        ElasticEncoder(str(folder), device="cpu", backend="onnx")


def test_packed_path_equals_padded_where_the_stack_allows_it(models):
    folder, _, padded = models.load("bert", DENSE.name)
    packed = ElasticEncoder(str(folder), device="cpu", attention="unpadded")
    assert packed.packed, packed.attention_note
    layers = list(range(1, LAYERS + 1))
    expected = padded.encode(TEXTS, layers, batch_size=2, prompt="query: ", show_progress=False)
    got = packed.encode(TEXTS, layers, batch_size=2, prompt="query: ", show_progress=False)
    for layer in layers:
        np.testing.assert_allclose(got[layer], expected[layer], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("arch", "name", "_message", "reason"), UNPOOLABLE)
def test_packed_path_falls_back_to_padded_and_says_why(models, arch, name, _message, reason):
    folder = models.folder(arch, STACKS[name])
    encoder = ElasticEncoder(str(folder), device="cpu", attention="unpadded")
    assert not encoder.packed and reason in encoder.attention_note


# --- what the architectures attend to, and the encoder's own overrides ------------------------------------


@pytest.mark.parametrize(("arch", "bidirectional"), [("gemma3", True), ("modernbert", True), ("qwen3", False)])
def test_attention_direction_is_the_models(models, arch, bidirectional):
    """Gemma3TextModel with `use_bidirectional_attention` attends both ways, as EmbeddingGemma does (transformers
    5 builds a bidirectional mask for it, windowed on its sliding layers); Qwen3 stays causal: the first token's
    state changes with a later token only in a bidirectional model."""
    _, _, encoder = models.load(arch, "lasttoken-norm-query" if arch == "qwen3" else MEAN.name)
    ids = encoder.tokenizer(["the quick brown fox", "the quick brown dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        first = encoder.model(**ids).last_hidden_state[:, 0]
    assert ids["input_ids"][0, 0] == ids["input_ids"][1, 0]
    assert (not torch.allclose(first[0], first[1], atol=1e-6)) == bidirectional
    if arch == "gemma3":  # the config's window (8) is read as an exclusive bound for the bidirectional mask
        assert encoder.model.config.sliding_window == 8 // 2 + 1


@pytest.mark.parametrize(("arch", "base", "pooling", "reference"), [
    ("bert", MEAN.name, "max", "max-norm"),
    ("bert", "max-norm", "mean", MEAN.name),
    ("qwen3", "lasttoken-dense64to32tanh-norm", "mean", None),
])
def test_a_pooling_override_is_sentence_transformers_with_that_pooling(models, arch, base, pooling, reference):
    """`ElasticEncoder(pooling=...)` replaces the Pooling mode only: it encodes as the same folder saved with that
    Pooling (the same weights: Pooling has none)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    folder = models.folder(arch, STACKS[base])
    encoder = ElasticEncoder(str(folder), device="cpu", pooling=pooling)
    if reference:
        st = models.load(arch, reference)[1]
    else:
        st = SentenceTransformer(str(folder), device="cpu")
        st[1] = Pooling(WIDTH, pooling_mode=pooling)
    assert encoder.info.pooling == pooling
    out = encoder.encode(TEXTS, range(1, LAYERS + 1), batch_size=2, show_progress=False)
    np.testing.assert_allclose(out[LAYERS], st_encode(st, ""), atol=ATOL, rtol=0)
    expected = layerwise_reference(st, "")
    for layer in range(1, LAYERS):
        np.testing.assert_allclose(out[layer], expected[layer], atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_a_max_length_override_truncates_as_sentence_transformers(models, arch):
    from sentence_transformers import SentenceTransformer

    folder = models.folder(arch, STACKS["mean-noprompt-norm-query"])
    encoder = ElasticEncoder(str(folder), device="cpu", max_length=12)
    st = SentenceTransformer(str(folder), device="cpu")
    st.max_seq_length = 12
    out = encoder.encode(TEXTS, [2, LAYERS], batch_size=2, prompt="query: ", show_progress=False)
    np.testing.assert_allclose(out[LAYERS], st_encode(st, "query: "), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out[2], layerwise_reference(st, "query: ")[2], atol=ATOL, rtol=0)


def test_lowercasing_reaches_the_texts(models):
    """The do_lower_case case is not vacuous: the byte-level tokenizer is case-sensitive, so the folder's
    embeddings differ from the cased folder's, and elasticir follows the lowercased one (checked above)."""
    cased = models.load("roberta", MEAN.name)[2].encode(TEXTS[:1], [LAYERS], show_progress=False)[LAYERS]
    lower = models.load("roberta", "mean-norm-lowercase")[2].encode(TEXTS[:1], [LAYERS], show_progress=False)
    assert not np.allclose(cased, lower[LAYERS], atol=1e-3)


def test_a_pooling_override_that_a_dense_head_cannot_take_is_a_clear_error(models):
    folder = models.folder("bert", DENSE)
    with pytest.raises(ElasticIRError, match=re.escape("pooling 'cls+mean' gives 128-dim vectors, but the model's "
                                                       "Dense after its Pooling takes 64")):
        ElasticEncoder(str(folder), device="cpu", pooling="cls+mean")
    # without a sized module after the Pooling, a wider pooling is simply a wider embedding
    assert ElasticEncoder(str(models.folder("bert", MEAN)), device="cpu", pooling="cls+mean").hidden_size == 2 * WIDTH
