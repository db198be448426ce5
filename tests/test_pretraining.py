"""SMAE / MLM pre-training on the tiny random BERT: masks, head slicing, decoder input, the loss against a hand
computation from the plain Hugging Face model, early exit, NaN skipping, output, resume, and input errors."""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from elasticir.errors import DataNotFoundError, ElasticIRError, InputFormatError
from elasticir.pretraining import pretrain as pretrain_module
from elasticir.pretraining.masking import IGNORE, NO_WORD, MaskedBatch, Masker, words_from_pieces
from elasticir.pretraining.pretrain import PretrainConfig, optimizer_step, pretrain
from elasticir.pretraining.smae import SMAE, read_head_weights
from elasticir.pretraining.text import TokenWindows, check_text_files, iter_documents, resolve_text_file

TEXTS = [
    "The quick brown fox jumps over the unaffable dog near the riverbank.",
    "Elastic encoders run only the first layers and keep only the first dimensions.",
    "A man is playing a guitar on the street while children dance.",
    "Microstructural development of cerebral white matter assessed in vivo.",
]
MASK_ID, VOCAB = 103, 30522


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's ops are too small to split: on a busy 2-core machine a second OpenMP thread makes
    them tens of times slower (spin-waiting for a core), so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def encoder(tiny_model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"{TEXTS[i % len(TEXTS)]} Document {i} adds a few more words." for i in range(24)))
    return path


def synthetic_words(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Word ids of [CLS] w w w ... [SEP] [PAD]..: words of 1-3 pieces, ragged lengths."""
    rng = torch.Generator().manual_seed(seed)
    word_ids = torch.full((rows, length), NO_WORD)
    for row in range(rows):
        used = int(torch.randint(length // 2, length - 1, (1,), generator=rng))
        position, word = 1, 0
        while position < used:
            size = int(torch.randint(1, 4, (1,), generator=rng))
            word_ids[row, position : min(position + size, used)] = word
            position, word = position + size, word + 1
    return word_ids


def batch_of(tokenizer, texts, masker: Masker, seed: int = 0) -> MaskedBatch:
    encoding = tokenizer(texts, padding=True, return_tensors="pt")
    words = torch.tensor([[NO_WORD if w is None else w for w in encoding.word_ids(i)] for i in range(len(texts))])
    return masker(encoding["input_ids"], encoding["attention_mask"], words, torch.Generator().manual_seed(seed))


# --- masking ---------------------------------------------------------------------------------------------


def test_mask_ratios_subset_and_whole_words():
    word_ids = synthetic_words(400, 96)
    encoder, decoder = Masker(MASK_ID, VOCAB).word_masks(word_ids, torch.Generator().manual_seed(1))
    maskable = word_ids != NO_WORD
    assert encoder.sum() / maskable.sum() == pytest.approx(0.2, abs=0.01)
    assert decoder.sum() / maskable.sum() == pytest.approx(0.4, abs=0.01)
    assert not (encoder & ~decoder).any(), "an encoder-masked token is not decoder-masked"
    assert not ((encoder | decoder) & ~maskable).any(), "a special token or padding was masked"
    for row in range(20):  # a word is masked whole or not at all
        for word in word_ids[row][maskable[row]].unique():
            positions = word_ids[row] == word
            assert encoder[row][positions].all() or not encoder[row][positions].any()
            assert decoder[row][positions].all() or not decoder[row][positions].any()


def test_masks_are_deterministic_under_a_generator():
    word_ids = synthetic_words(8, 40)
    ids = torch.randint(1000, 2000, word_ids.shape)
    masker = Masker(MASK_ID, VOCAB)
    first, second, other = (masker(ids, torch.ones_like(ids), word_ids, torch.Generator().manual_seed(seed))
                            for seed in (5, 5, 6))
    assert torch.equal(first.input_ids, second.input_ids) and torch.equal(first.decoder_labels, second.decoder_labels)
    assert not torch.equal(first.labels, other.labels)


def test_bert_80_10_10_replacement_and_labels():
    ids = torch.randint(1000, 2000, (200, 100))
    masked = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    corrupted, labels = Masker(MASK_ID, VOCAB).replace(ids, masked, torch.Generator().manual_seed(1))
    assert torch.equal(labels[masked], ids[masked]) and (labels[~masked] == IGNORE).all()
    assert torch.equal(corrupted[~masked], ids[~masked])
    at_masked = corrupted[masked]
    as_mask = (at_masked == MASK_ID).float().mean()
    unchanged = (at_masked == ids[masked]).float().mean()
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1, abs=0.01)
    assert 1 - as_mask - unchanged == pytest.approx(0.1, abs=0.01)  # a random token


def test_plain_mlm_masker_has_no_decoder_mask():
    batch = Masker(MASK_ID, VOCAB, decoder_ratio=None)(
        torch.randint(1000, 2000, (4, 30)), torch.ones(4, 30, dtype=torch.long), synthetic_words(4, 30),
        torch.Generator().manual_seed(0))
    assert batch.decoder_input_ids is None and batch.decoder_labels is None and (batch.labels != IGNORE).any()


def test_wordpiece_rule_matches_the_fast_tokenizer(tokenizer):
    encoding = tokenizer(TEXTS[0], add_special_tokens=False)
    assert words_from_pieces(tokenizer.convert_ids_to_tokens(encoding["input_ids"])) == encoding.word_ids()


# --- text input ------------------------------------------------------------------------------------------


def test_windows_fit_max_length_with_special_tokens(tokenizer, text_file):
    windows = TokenWindows([text_file], tokenizer, max_length=12, seed=0, shuffle_buffer=4)
    stream = iter(windows)
    for _ in range(30):  # more than one pass over the 24 documents
        ids, words = next(stream)
        assert len(ids) == len(words) <= 12
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert words[0] == words[-1] == NO_WORD and NO_WORD not in words[1:-1]
    input_ids, attention_mask, word_ids = next(windows.batches(5, tokenizer.pad_token_id))
    assert input_ids.shape == attention_mask.shape == word_ids.shape and input_ids.shape[0] == 5


def test_window_stream_replays_and_skips(tokenizer, text_file):
    def stream(skip: int = 0):
        return TokenWindows([text_file], tokenizer, 16, seed=3, shuffle_buffer=8).batches(4, 0, skip=skip)

    first, again = stream(), stream()
    batches = [next(first) for _ in range(3)]
    assert all(torch.equal(batch[0], next(again)[0]) for batch in batches)  # a seeded stream replays
    assert torch.equal(next(stream(skip=2))[0], batches[2][0])  # resume: skip what was trained on
    assert not torch.equal(next(TokenWindows([text_file], tokenizer, 16, seed=4).batches(4, 0))[0], batches[0][0])


def test_beir_jsonl_gz_and_round_robin(tmp_path, tokenizer):
    corpus = tmp_path / "beir" / "toy" / "corpus.jsonl.gz"
    corpus.parent.mkdir(parents=True)
    with gzip.open(corpus, "wt") as handle:
        handle.write(json.dumps({"_id": "1", "title": "Title one", "text": "Body one."}) + "\n")
        handle.write(json.dumps({"_id": "2", "title": "", "text": ""}) + "\n")  # empty: skipped
        handle.write(json.dumps({"_id": "3", "text": "Body three."}) + "\n")
    lines = tmp_path / "lines.txt"
    lines.write_text("line a\n\nline b\n")
    assert resolve_text_file("beir/toy", root=tmp_path) == corpus
    assert list(iter_documents(corpus)) == ["Title one Body one.", "Body three."]
    from elasticir.pretraining.text import _round_robin

    assert list(_round_robin([corpus, lines])) == ["Title one Body one.", "line a", "Body three.", "line b"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "fine"}\n{"text": broken\n', "line 2: not valid JSON"),
    ('{"text": "fine"}\n{"title": "no body"}\n', "line 2: missing field(s) text"),
    ("", "no text"),
    ("\n  \n", "no text"),
    ('{"text": 5}\n', "line 1: `text` and `title` must be strings"),
])
def test_bad_input_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputFormatError, match=re.escape(message)) as info:
        check_text_files([path])
        list(iter_documents(path))
    assert str(path) in str(info.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere.txt"):
        resolve_text_file("nowhere.txt", root=tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(InputFormatError, match="unsupported file type"):
        resolve_text_file(str(tmp_path / "data.csv"), root=tmp_path)


# --- the model and its loss ------------------------------------------------------------------------------


def transform(head, hidden: torch.Tensor) -> torch.Tensor:
    """The head transform written out: LayerNorm(gelu(x W[:, :d]^T + b)) for a d-dim x."""
    dense, norm = head.transform.dense, head.transform.LayerNorm
    d = hidden.shape[-1]
    return F.layer_norm(F.gelu(hidden @ dense.weight[:, :d].T + dense.bias), norm.normalized_shape,
                        norm.weight, norm.bias, norm.eps)


def perturb_head(model: SMAE) -> None:
    """Move the head off its initialisation (identity LayerNorm, zero biases) so the formulas are exercised."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def test_sliced_head_reads_exactly_d_columns(encoder):
    model = SMAE(encoder, [(2, 8), (4, 32)])
    perturb_head(model)
    x = torch.randn(5, 32)
    for d in (8, 16, 32):
        assert torch.allclose(model.head.transform_prefix(x[:, :d]), transform(model.head, x[:, :d]), atol=1e-6)
        padded = torch.cat([x[:, :d], torch.zeros(5, 32 - d)], dim=1)  # = the full transform with zero tail
        assert torch.allclose(model.head.transform_prefix(x[:, :d]), model.head.transform(padded), atol=1e-5)


def test_pair_terms_ignore_state_columns_beyond_d(encoder, tokenizer):
    """Changing layer L's token states at columns >= d leaves the (L, d) terms unchanged; < d changes them."""
    model = SMAE(encoder, [(2, 8), (4, 32)]).eval()
    perturb_head(model)
    batch = batch_of(tokenizer, TEXTS[:2], Masker(tokenizer.mask_token_id, len(tokenizer)))
    block = encoder.encoder.layer[1]

    def terms_with(columns: slice) -> dict[str, torch.Tensor]:
        def hook(_module, _inputs, output):
            output = output.clone()
            output[..., columns] += 3.0
            return output

        handle = block.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model.terms(batch)
        finally:
            handle.remove()

    with torch.no_grad():
        base = model.terms(batch)
    beyond, within = terms_with(slice(8, None)), terms_with(slice(0, 8))
    for name in ("mlm(2,8)", "decoder(2,8)"):
        assert torch.equal(beyond[name], base[name])
        assert (within[name] - base[name]).abs() > 1e-6  # the decoder sees the CLS through attention: small


def test_decoder_input_is_embedded_sequence_with_the_pairs_cls_state(encoder, tokenizer):
    model = SMAE(encoder, [(1, 4), (3, 16)]).eval()
    perturb_head(model)
    batch = batch_of(tokenizer, TEXTS[:3], Masker(tokenizer.mask_token_id, len(tokenizer)))
    seen = []
    handle = model.decoder.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model.terms(batch)
        handle.remove()
        states = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         output_hidden_states=True).hidden_states
        embedded = encoder.embeddings(input_ids=batch.decoder_input_ids)
    assert len(seen) == 2
    for decoder_input, (layer, dim) in zip(seen, [(1, 4), (3, 16)]):
        assert decoder_input.shape == (3, batch.input_ids.shape[1], 32)
        assert torch.allclose(decoder_input[:, 0], transform(model.head, states[layer][:, 0, :dim]), atol=1e-5)
        assert torch.allclose(decoder_input[:, 1:], embedded[:, 1:], atol=1e-6)


def test_loss_equals_a_hand_computation(encoder, tokenizer):
    """Expected value from output_hidden_states of the plain HF model and the formulas written out:
    MLM(L,d) = CE(LN(gelu(h_L[:, :, :d] W[:, :d]^T + b)) E^T + bias, encoder labels);
    decoder(L,d) = CE(head(BertLayer_0([t(h_L[CLS, :d]); emb(decoder ids)[1:]])), decoder labels);
    loss = mean over pairs of (MLM + decoder) / 2."""
    pairs = [(1, 4), (2, 8), (4, 32)]
    model = SMAE(encoder, pairs).eval()
    perturb_head(model)
    first_layer = copy.deepcopy(encoder.encoder.layer[0])  # the decoder's initialisation
    batch = batch_of(tokenizer, TEXTS, Masker(tokenizer.mask_token_id, len(tokenizer)), seed=4)
    assert (batch.attention_mask == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        loss = model(batch)
        states = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         output_hidden_states=True).hidden_states
        assert len(states) == 5  # embeddings + 4 layers: states[L] is layer L's output
        words, bias = encoder.embeddings.word_embeddings.weight, model.head.bias
        additive = (1.0 - batch.attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        embedded = encoder.embeddings(input_ids=batch.decoder_input_ids)
        expected = []
        for layer, dim in pairs:
            hidden = states[layer][..., :dim]
            logits = transform(model.head, hidden) @ words.T + bias
            mlm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=-100)
            decoder_input = embedded.clone()
            decoder_input[:, 0] = transform(model.head, hidden[:, 0])
            decoded = first_layer(decoder_input, additive)
            decoded = decoded[0] if isinstance(decoded, tuple) else decoded
            decoder_logits = transform(model.head, decoded) @ words.T + bias
            decoder = F.cross_entropy(decoder_logits.reshape(-1, logits.shape[-1]), batch.decoder_labels.reshape(-1),
                                      ignore_index=-100)
            expected.append((mlm + decoder) / 2)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_plain_mlm_is_cross_entropy_at_the_last_layer(encoder, tokenizer):
    model = SMAE(encoder, [(4, 32)], decoder=False).eval()
    perturb_head(model)
    batch = batch_of(tokenizer, TEXTS, Masker(tokenizer.mask_token_id, len(tokenizer), decoder_ratio=None))
    with torch.no_grad():
        hidden = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        logits = transform(model.head, hidden) @ encoder.embeddings.word_embeddings.weight.T + model.head.bias
        expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1))
        assert model(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.decoder is None and set(model.terms(batch)) == {"mlm(4,32)"}


def test_one_pass_stops_after_the_deepest_pair(encoder, tokenizer):
    model = SMAE(encoder, [(1, 8), (2, 16)])
    calls = [0] * 4
    handles = [block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, block in enumerate(encoder.encoder.layer)]
    model(batch_of(tokenizer, TEXTS[:2], Masker(tokenizer.mask_token_id, len(tokenizer))))
    for handle in handles:
        handle.remove()
    assert calls == [1, 1, 0, 0]


def test_pairs_are_validated(encoder):
    with pytest.raises(ElasticIRError, match="does not grow"):
        SMAE(encoder, [(2, 16), (2, 32)])
    with pytest.raises(ElasticIRError, match="out of range"):
        SMAE(encoder, [(5, 32)])
    assert SMAE(encoder).pairs == [(1, 4), (2, 8), (3, 16), (4, 32)]  # default_pairs of 4 x 32


def test_head_from_a_masked_lm_checkpoint_or_new(tmp_path, tiny_model_dir, encoder):
    from transformers import AutoModel, BertForMaskedLM

    masked_lm = BertForMaskedLM(encoder.config)
    with torch.no_grad():
        masked_lm.cls.predictions.bias.normal_()
    masked_lm.save_pretrained(tmp_path / "mlm")
    model = SMAE(AutoModel.from_pretrained(tmp_path / "mlm"), [(4, 32)])
    assert model.load_heads(read_head_weights([tmp_path / "mlm"])) == ["head"]
    source = masked_lm.cls.predictions
    assert torch.equal(model.head.bias, source.bias)
    assert torch.equal(model.head.transform.dense.weight, source.transform.dense.weight)
    assert torch.equal(model.head.transform.LayerNorm.weight, source.transform.LayerNorm.weight)

    new = SMAE(encoder, [(4, 32)])  # a sentence-transformers folder: no head, BERT's initialisation
    assert read_head_weights([tiny_model_dir]) == {}
    assert new.head.bias.abs().sum() == 0 and new.head.transform.dense.bias.abs().sum() == 0
    assert new.head.transform.dense.weight.std().item() == pytest.approx(encoder.config.initializer_range, rel=0.2)
    assert new.head._tied[0] is encoder.embeddings.word_embeddings
    assert all(new.decoder.state_dict()[k].equal(v) for k, v in encoder.encoder.layer[0].state_dict().items())


# --- the loop --------------------------------------------------------------------------------------------


def test_nan_gradient_step_is_skipped():
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    before = {name: value.clone() for name, value in layer.state_dict().items()}
    layer(torch.randn(2, 4)).sum().backward()
    layer.weight.grad[0, 0] = float("nan")
    assert optimizer_step(optimizer, list(layer.parameters()), 1.0) is False
    assert all(torch.equal(layer.state_dict()[name], value) for name, value in before.items())
    assert not optimizer.state  # AdamW's moments were not touched either
    optimizer.zero_grad()
    layer(torch.randn(2, 4)).sum().backward()
    assert optimizer_step(optimizer, list(layer.parameters()), 1.0) is True
    assert not torch.equal(layer.weight, before["weight"])


def config_for(tiny_model_dir, text_file, out: Path, **overrides) -> PretrainConfig:
    values = {"base": str(tiny_model_dir), "data": [str(text_file)], "out": str(out), "max_steps": 3,
              "batch_size": 4, "max_length": 24, "checkpoint_steps": 1, "log_steps": 1, "device": "cpu", "seed": 0}
    return PretrainConfig(**{**values, **overrides})


class Interrupted(Exception):
    pass


def test_pretrain_saves_a_loadable_model_and_resumes_exactly(tmp_path, tiny_model_dir, text_file, monkeypatch):
    from sentence_transformers import SentenceTransformer

    full = pretrain(config_for(tiny_model_dir, text_file, tmp_path / "full"))
    meta = json.loads((full / "elastic_pretrain.json").read_text())
    assert meta["method"] == "smae" and meta["steps"] == 3 and meta["skipped_nan_steps"] == []
    assert meta["pairs"] == [[1, 4], [2, 8], [3, 16], [4, 32]] and len(meta["losses"]) == 3
    assert meta["data"]["files"][0]["sha256"] and meta["heads"]["loaded_from_base"] == []
    assert not (full / "checkpoint").exists()

    model, base = SentenceTransformer(str(full), device="cpu"), SentenceTransformer(str(tiny_model_dir), device="cpu")
    assert [type(module).__name__ for module in model] == [type(module).__name__ for module in base]
    embeddings = model.encode(TEXTS[:2])
    assert embeddings.shape == (2, 32) and abs(float((embeddings[0] ** 2).sum()) - 1) < 1e-5
    assert not torch.equal(torch.tensor(embeddings), torch.tensor(base.encode(TEXTS[:2])))
    heads = load_file(str(full / "smae_heads" / "model.safetensors"))
    assert "cls.predictions.transform.dense.weight" in heads and "decoder.output.dense.weight" in heads
    assert read_head_weights([full / "smae_heads"]).keys() == heads.keys()  # a later run can continue from it

    real_step, calls = pretrain_module.optimizer_step, []

    def dies_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return real_step(*args)

    resumed_config = config_for(tiny_model_dir, text_file, tmp_path / "resumed")
    monkeypatch.setattr(pretrain_module, "optimizer_step", dies_at_step_3)
    with pytest.raises(Interrupted):
        pretrain(resumed_config)
    assert (tmp_path / "resumed" / "checkpoint" / "state.pt").is_file()
    assert not (tmp_path / "resumed" / "elastic_pretrain.json").exists()
    monkeypatch.setattr(pretrain_module, "optimizer_step", real_step)
    resumed = pretrain(resumed_config)
    resumed_meta = json.loads((resumed / "elastic_pretrain.json").read_text())
    assert resumed_meta["resumed_at"] == [2]
    assert [entry["loss"] for entry in resumed_meta["losses"]] == [entry["loss"] for entry in meta["losses"]]
    expected, got = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)

    assert pretrain(resumed_config) == resumed  # finished: reused, not retrained
    with pytest.raises(ElasticIRError, match="different config"):
        pretrain(config_for(tiny_model_dir, text_file, tmp_path / "resumed", lr=5e-4))


def test_nan_loss_steps_are_counted_and_skipped(tmp_path, tiny_model_dir, text_file, monkeypatch):
    real_combine, calls = SMAE.combine, []

    def nan_at_step_2(self, terms):
        calls.append(1)
        loss = real_combine(self, terms)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(SMAE, "combine", nan_at_step_2)
    out = pretrain(config_for(tiny_model_dir, text_file, tmp_path / "nan", method="mlm", max_steps=3))
    meta = json.loads((out / "elastic_pretrain.json").read_text())
    assert meta["skipped_nan_steps"] == [2] and meta["method"] == "mlm" and meta["pairs"] == [[4, 32]]


def test_config_and_cli_errors(tmp_path, tiny_model_dir, text_file):
    from typer.testing import CliRunner

    from elasticir.cli import app

    with pytest.raises(ValueError, match="pairs apply to smae"):
        PretrainConfig(method="mlm", pairs=[(4, 32)], data=["x"], out="y")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = CliRunner().invoke(app, ["pretrain", "--base", str(tiny_model_dir), "--data", f"{text_file},{empty}",
                                      "--out", str(tmp_path / "o"), "--max-steps", "1"])
    assert result.exit_code == 2 and "error:" in result.output and "empty.txt: no text" in result.output
    assert not (tmp_path / "o").exists()  # input is checked before anything is created
    result = CliRunner().invoke(app, ["pretrain", "--data", str(text_file), "--out", str(tmp_path / "o"), "--pairs", "2-32"])
    assert result.exit_code == 2 and "LAYER:DIM" in result.output


def test_text_resolves_as_training_data_does(tmp_path):
    """A path, a path under the data root, and a BEIR dataset name all give the corpus file."""
    corpus = tmp_path / "data" / "beir" / "toyir" / "corpus.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(json.dumps({"_id": "d1", "title": "T", "text": "x"}) + "\n")
    root = tmp_path / "data"
    assert resolve_text_file("toyir", root) == corpus
    assert resolve_text_file("beir/toyir", root) == corpus
    assert resolve_text_file(str(corpus), root) == corpus
    with pytest.raises(DataNotFoundError, match="not found"):
        resolve_text_file("nothere", root)
