"""Training presets against transcriptions of the original code, and the refused combinations.

Each preset's loss (built exactly as `elasticir train` builds it) must equal, in value and in every parameter
gradient to 1e-6, a transcription of the code it names, written here from the model's hidden states without
our loss code: the Starbucks STS `StarbucksLoss`, the Starbucks retrieval `SrlDenseModel` (Tevatron),
sentence-transformers <= 5 and 6 `AdaptiveLayerLoss(MatryoshkaLoss)`, and SortedNet's one-sub-network step.
Every check runs on a tiny BERT (in float64) with and without a Normalize module: the KL point only matters
with one.
"""

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from sentence_transformers.sentence_transformer.modules import Pooling

from elasticir.errors import ElasticIRError
from elasticir.training.recipes import PRESETS
from elasticir.training.trainer import TrainConfig, build_loss

QUERIES = ["a man plays a guitar", "the cat sleeps on the sofa", "stock prices fell today", "kids swim"]
POSITIVES = ["someone plays music", "a sleeping kitten", "shares dropped sharply on monday", "children swim"]
NEGATIVES_1 = ["a dog runs in the park", "the market rose", "a plane takes off from the airport", "rain"]
NEGATIVES_2 = ["an old bridge", "green tea is hot", "a quiet library", "the train is late"]
N, H = 4, 32
PAIRS = [(1, 4), (2, 8), (3, 16), (4, 32)]  # the tiny model's default pair list
PAIRS_DATA = SimpleNamespace(kind="pairs")


@pytest.fixture(scope="module")
def transformer(tiny_model_dir):
    # float64: the comparison then shows formula differences, not float32 summation order (~1e-6 here)
    return SentenceTransformer(str(tiny_model_dir), device="cpu").eval()[0].double()


def make_model(transformer, pooling: str, normalize: bool):
    modules = [transformer, Pooling(H, pooling_mode=pooling)] + ([Normalize()] if normalize else [])
    model = SentenceTransformer(modules=modules, device="cpu").eval()
    model.zero_grad(set_to_none=True)
    return model


def config(**keys):
    resolved, _ = TrainConfig(data=["x.jsonl"], out="unused", **keys).resolved()
    return resolved


# ---- the transcriptions: sentence_embedding of every layer, then the original formulas ----


def sentence_embeddings(model, texts, pooling, normalize):
    """{layer: the model's output for that layer}: hidden_states pooled by hand, L2-normalised if the model
    has a Normalize module (what `sentence_embedding` is, and what Tevatron's normalize flag does)."""
    batch = model.preprocess(list(texts))
    keys = ("input_ids", "attention_mask", "token_type_ids")
    states = model[0].auto_model(**{k: batch[k] for k in keys}, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pool = (lambda s: s[:, 0]) if pooling == "cls" else (lambda s: (s * mask).sum(1) / mask.sum(1))
    return {layer: F.normalize(pool(states[layer]), dim=-1) if normalize else pool(states[layer])
            for layer in range(1, N + 1)}


def mnrl(columns, layer, dim, scale=20.0):
    """sentence-transformers MultipleNegativesRankingLoss on the first `dim` coordinates (cos_sim)."""
    queries = F.normalize(columns[0][layer][:, :dim], dim=-1)
    docs = F.normalize(torch.cat([column[layer] for column in columns[1:]])[:, :dim], dim=-1)
    return F.cross_entropy(scale * queries @ docs.T, torch.arange(len(queries)))


def kl_batchmean(student_logits, teacher_logits):
    return F.kl_div(F.log_softmax(student_logits, dim=-1), F.softmax(teacher_logits, dim=-1), reduction="batchmean")


def starbucks_sts(columns):
    """StarbucksLoss(MNRL, layers/dims = the pair list, kl_div_weight 1, kl_temperature 0.3): the full cell's
    loss, then per smaller pair its loss + KL(sentence_embedding[:, :d] vs the final one's [:, :d]) * 0.3 * 1,
    the final embedding a clone (not detached)."""
    loss = mnrl(columns, N, H)
    final = torch.cat([column[N] for column in columns])
    for layer, dim in PAIRS[:-1]:
        loss = loss + mnrl(columns, layer, dim)
        embeddings = torch.cat([column[layer] for column in columns])
        loss = loss + kl_batchmean(embeddings[:, :dim], final.clone()[:, :dim]) * 0.3 * 1.0
    return loss


def starbucks_retrieval(columns, temperature=1.0, kl_weight=1.0):
    """SrlDenseModel.forward (sub_model_sampling off): Tevatron groups (query i: its positive, then its
    negatives), dot products of prefixes, cross-entropy at target i * group size, KL to the detached full
    scores, all divided by the one temperature."""
    queries = torch.stack([columns[0][layer] for layer in range(1, N + 1)])  # [layers, q, h]
    passages = torch.stack([torch.cat([torch.stack([column[layer][i] for column in columns[1:]])
                                       for i in range(len(QUERIES))]) for layer in range(1, N + 1)])
    target = torch.arange(len(QUERIES)) * (passages.size(1) // queries.size(1))
    layer_index = [layer - 1 for layer, _ in PAIRS]
    q, p = queries[layer_index], passages[layer_index]
    all_scores = torch.einsum("lqh,ldh->lqdh", q, p)
    full = all_scores[-1].sum(-1)
    loss = F.cross_entropy(full / temperature, target)
    teacher = full.detach()
    for index, (_, dim) in enumerate(PAIRS[:-1]):
        scores = all_scores[index, :, :, :dim].sum(-1)
        loss = loss + F.cross_entropy(scores / temperature, target)
        loss = loss + kl_weight * F.kl_div(F.log_softmax(scores / temperature, dim=1),
                                           F.softmax(teacher / temperature, dim=1), reduction="batchmean")
    return loss


def adaptive_layer(columns, layers, dims, weight, detach):
    """AdaptiveLayerLoss(MatryoshkaLoss(MNRL, dims)) with every listed layer and dim: the final layer's
    Matryoshka loss, then per prior layer its Matryoshka loss * weight(layer) / #layers and
    KL(log_softmax(emb / 0.3), softmax(final / 0.3)) * 0.3 * 1 on full-width sentence embeddings."""
    loss = sum(mnrl(columns, N, dim) for dim in dims)
    final = F.softmax(torch.cat([column[N] for column in columns]) / 0.3, dim=-1)
    final = final.detach() if detach else final
    for layer in layers:
        loss = loss + sum(mnrl(columns, layer, dim) for dim in dims) * weight(layer) / len(layers)
        embeddings = torch.cat([column[layer] for column in columns])
        loss = loss + F.kl_div(F.log_softmax(embeddings / 0.3, dim=-1), final, reduction="batchmean") * 0.3
    return loss


# ---- loss and gradients equal ----


def value_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    value = compute()
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return value.detach(), grads


def assert_same(model, ours, reference):
    value, grads = value_and_grads(model, ours)
    expected, expected_grads = value_and_grads(model, reference)
    torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-6, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def texts(negatives):
    return [QUERIES, POSITIVES, NEGATIVES_1, NEGATIVES_2][: 2 + negatives]


CASES = {
    # preset: (pooling, negatives, extra TrainConfig keys, transcription)
    "starbucks-sts": ("mean", 1, {}, lambda cols: starbucks_sts(cols)),
    "starbucks-retrieval": ("cls", 2, {}, lambda cols: starbucks_retrieval(cols)),
    "2dmse-st5": ("mean", 1, {"layers": [1, 2, 3], "dims": [8, 32], "layers_per_step": -1, "dims_per_step": -1},
                  lambda cols: adaptive_layer(cols, [1, 2, 3], [8, 32], lambda L: 1 / L, detach=False)),
    # sentence-transformers 6 also samples the embedding output; with one listed layer that cannot happen
    "2dmse-st6": ("mean", 1, {"layers": [2], "dims": [8, 32], "dims_per_step": -1},
                  lambda cols: adaptive_layer(cols, [2], [8, 32], lambda L: 1.0, detach=True)),
}


@pytest.mark.parametrize("normalize", [True, False], ids=["with-normalize", "without-normalize"])
@pytest.mark.parametrize("preset", list(CASES))
def test_preset_equals_the_original_formula(transformer, preset, normalize):
    pooling, negatives, extra, transcription = CASES[preset]
    model = make_model(transformer, pooling, normalize)
    loss = build_loss(config(preset=preset, **extra), model, PAIRS_DATA)
    batch = texts(negatives)
    features = [model.preprocess(list(column)) for column in batch]
    assert_same(model, lambda: loss(features, None), lambda: transcription(
        [sentence_embeddings(model, column, pooling, normalize) for column in batch]))


def test_the_old_kl_point_is_the_pooled_vector_and_differs_with_normalize(transformer):
    model = make_model(transformer, "mean", True)
    batch = [model.preprocess(list(column)) for column in (QUERIES, POSITIVES)]
    output = build_loss(config(preset="starbucks-sts"), model, PAIRS_DATA).terms(batch, None)
    pooled = build_loss(config(preset="starbucks-sts", kl_point="pooled"), model, PAIRS_DATA).terms(batch, None)
    columns = [sentence_embeddings(model, column, "mean", False) for column in (QUERIES, POSITIVES)]
    student = torch.cat([column[2] for column in columns])[:, :8]
    teacher = torch.cat([column[N] for column in columns])[:, :8]
    torch.testing.assert_close(pooled["kl(2,8)"], 0.3 * kl_batchmean(student, teacher))
    assert pooled["kl(2,8)"] > 5 * output["kl(2,8)"]  # a unit vector's softmax is nearly flat


def test_2dmse_log_weighting_is_sentence_transformers_6(transformer):
    model = make_model(transformer, "mean", True)
    loss = build_loss(config(preset="2dmse-st6", layer_weighting="log"), model, PAIRS_DATA)
    assert [loss.layer_weight(layer) for layer in (1, 3)] == [1 / (1 + math.log(2)), 1 / (1 + math.log(4))]


# ---- SortedNet ----


@pytest.mark.parametrize("normalize", [True, False], ids=["with-normalize", "without-normalize"])
def test_sortednet_trains_one_sub_network_per_step_as_scheduled(transformer, normalize):
    model = make_model(transformer, "mean", normalize)
    loss = build_loss(config(preset="sortednet", seed=3), model, PAIRS_DATA)
    features = [model.preprocess(list(column)) for column in (QUERIES, POSITIVES)]
    expected_rng = random.Random(3)  # the documented schedule: uniform over the sorted list, Random(seed)
    columns = [sentence_embeddings(model, column, "mean", normalize) for column in (QUERIES, POSITIVES)]
    seen = []
    for _ in range(8):
        layer, dim = PAIRS[expected_rng.randrange(len(PAIRS))]
        terms = loss.terms(features, None)
        assert list(terms) == [f"base({layer},{dim})"]
        torch.testing.assert_close(terms[f"base({layer},{dim})"], mnrl(columns, layer, dim), atol=1e-6, rtol=1e-6)
        seen.append((layer, dim))
    assert len(set(seen)) > 1


def test_sortednet_cyclic_schedule_goes_smallest_to_largest(transformer):
    model = make_model(transformer, "mean", True)
    loss = build_loss(config(preset="sortednet", schedule="cyclic"), model, PAIRS_DATA)
    assert [tuple(loss.next_cell()) for _ in range(6)] == PAIRS + PAIRS[:2]
    assert [list(cell) for cell in loss.trained_cells()] == [list(pair) for pair in PAIRS]


# ---- the recipe record and the refused combinations ----


def test_presets_set_every_recipe_key_and_overrides_are_recorded():
    resolved, record = TrainConfig(data=["x"], out="o", preset="starbucks-retrieval", kl_weight=0.5).resolved()
    assert (resolved.pooling, resolved.similarity, resolved.normalize, resolved.temperature,
            resolved.negatives, resolved.kl) == ("cls", "dot", False, 1.0, 7, "scores")
    assert record == {"preset": "starbucks-retrieval", "overrides": {"kl_weight": 0.5}}
    _, default = TrainConfig(data=["x"], out="o").resolved()
    assert default == {"preset": "starbucks-sts", "overrides": {}}
    _, by_method = TrainConfig(data=["x"], out="o", method="2dmse").resolved()
    assert by_method == {"preset": "2dmse-st6", "overrides": {}}
    assert set(PRESETS) >= {"starbucks-sts", "starbucks-retrieval", "2dmse-st5", "2dmse-st6", "sortednet"}


@pytest.mark.parametrize("keys, message", [
    ({"preset": "starbucks-retrieval", "similarity": "cosine"}, "base loss would score cosines while the KL"),
    ({"kl": "scores", "normalize": False}, "base loss would score cosines while the KL"),
    ({"preset": "starbucks-retrieval", "kl_point": "pooled"}, "kl_point applies to embedding KLs"),
    ({"preset": "starbucks-sts", "temperature": 0.05}, "has no softmax temperature"),
    ({"method": "2dmse", "kl": "scores"}, "2DMSE's KL is 'embedding'"),
    ({"method": "srl", "layer_weighting": "log"}, "layer_weighting is not used by method 'srl'"),
    ({"preset": "sortednet", "kl_weight": 1.0}, "kl_weight is not used by method 'sortednet'"),
    ({"preset": "2dmse-st6", "kl": "none", "temperature": 0.5}, "no KL term to weight"),
])
def test_disagreeing_choices_are_refused_with_the_reason(keys, message):
    with pytest.raises(ElasticIRError, match=message):
        TrainConfig(data=["x"], out="o", **keys).resolved()


def test_score_kl_on_scored_pairs_is_refused(transformer):
    model = make_model(transformer, "mean", True)
    with pytest.raises(ElasticIRError, match="needs queries and candidates"):
        build_loss(config(kl="scores"), model, SimpleNamespace(kind="scored"))
