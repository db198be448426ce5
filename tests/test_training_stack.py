"""Training keeps the base model's module stack: a Dense head and prompts are trained through, saved and reloaded,
and the loss reads the stack's output at every cell, as the evaluation does."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from test_training import config, triplets  # noqa: F401  (the triplets fixture)

from elasticir.cells import Cell
from elasticir.encoders import ElasticEncoder
from elasticir.training.losses import MRLLoss
from elasticir.training.trainer import train

TEXTS = ["a man plays a guitar", "markets fell", "kids are swimming in a pool"]


@pytest.fixture(scope="module")
def dense_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with mean Pooling, a Dense 32 -> 16 (Tanh) head, Normalize, and a query prompt."""
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("dense") / "model"
    modules = [Transformer(str(tiny_model_dir), max_seq_length=64), Pooling(32, pooling_mode="mean"),
               Dense(32, 16, activation_function=torch.nn.Tanh()), Normalize()]
    SentenceTransformer(modules=modules, prompts={"query": "q: ", "STS": "similar: "}, device="cpu").save(str(folder))
    return folder


def test_the_loss_reads_the_stack_output_at_every_cell(dense_model_dir):
    model = SentenceTransformer(str(dense_model_dir), device="cpu")
    loss = MRLLoss(model, _mnrl(model), dims=[4, 16])
    assert loss.full == Cell(4, 16)  # the output width, after the Dense head
    features = model.tokenize(TEXTS)
    columns = loss.embed([features], [2, 4])
    expected = model(dict(features))["sentence_embedding"]
    torch.testing.assert_close(loss.cell(columns, Cell(4, 16))[0], F.normalize(expected, dim=-1), atol=1e-5, rtol=0)
    with torch.no_grad():  # a shallower layer: hidden_states[2] through Pooling, Dense and Normalize
        hidden = model[0].auto_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                                     output_hidden_states=True).hidden_states[2]
        state = {**features, "token_embeddings": hidden}
        for module in list(model)[1:]:
            state = module(state)
    torch.testing.assert_close(loss.cell(columns, Cell(2, 4))[0].detach(),
                               F.normalize(state["sentence_embedding"][:, :4], dim=-1), atol=1e-5, rtol=0)


def _mnrl(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(model)


def test_training_saves_and_reloads_the_same_stack(tmp_path, dense_model_dir, triplets):  # noqa: F811
    folder = train(config(dense_model_dir, [triplets], tmp_path / "mrl", method="mrl", dims=[4, 8, 16], lr=1e-3))
    meta = json.loads((folder / "elastic.json").read_text())
    assert {tuple(cell) for cell in meta["trained_cells"]} == {(4, 4), (4, 8), (4, 16)}
    base, trained = ElasticEncoder(str(dense_model_dir), device="cpu"), ElasticEncoder(str(folder), device="cpu")
    assert trained.info.head == base.info.head == ["Dense(32->16,Tanh)"]
    assert trained.info.prompts == {"query": "q: ", "STS": "similar: "} and trained.hidden_size == 16
    # the head was trained (the loss reads through it), and the saved folder encodes as sentence-transformers
    before = SentenceTransformer(str(dense_model_dir), device="cpu")[2].linear.weight
    after = SentenceTransformer(str(folder), device="cpu")[2].linear.weight
    assert not torch.equal(before, after)
    st = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    ours = trained.encode(TEXTS, [4], prompt="q: ", show_progress=False)[4]
    np.testing.assert_allclose(ours, st, atol=1e-5)


def test_two_identical_trainings_have_the_same_weights(tmp_path, tiny_model_dir, triplets):  # noqa: F811
    """No randomly initialised unused module (BERT's pooler) makes two identical runs differ."""
    first = train(config(tiny_model_dir, [triplets], tmp_path / "a", method="plain"))
    second = train(config(tiny_model_dir, [triplets], tmp_path / "b", method="plain"))
    assert ElasticEncoder(str(first), device="cpu").info.weights_sha256 == \
        ElasticEncoder(str(second), device="cpu").info.weights_sha256
