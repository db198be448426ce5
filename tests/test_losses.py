"""Elastic training losses: values against hand computations, gradient reach, early exit, validation.

The expected values never use the loss code: hidden states come from the plain Hugging Face model with
output_hidden_states=True (every layer runs), pooling is written out, and so are the InfoNCE, CoSENT and KL
formulas.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling

from elasticir.cells import Cell, Grid
from elasticir.errors import ElasticIRError
from elasticir.training import FullGridSRLLoss, MRLLoss, PlainLoss, SortedNetLoss, SRLLoss, TwoDMSELoss

QUERIES = ["a man plays a guitar", "the cat sleeps on the sofa", "stock prices fell today", "kids swim"]
POSITIVES = ["someone plays music", "a sleeping kitten", "shares dropped sharply on monday", "children swim"]
NEGATIVES = ["a dog runs in the park", "the market rose", "a plane takes off from the airport", "rain"]
STS_LABELS = torch.tensor([4.2, 0.4, 3.5, 1.0])
SCALE = 20.0  # the base losses' default scale; the SRL scores-KL temperature defaults to 1 / SCALE
N, H = 4, 32  # the tiny model's shape; its default pairs are (1,4) (2,8) (3,16) (4,32)


@pytest.fixture(scope="module")
def shared_model(tiny_model_dir):
    return SentenceTransformer(str(tiny_model_dir), device="cpu").eval()  # eval: no dropout, exact values


@pytest.fixture
def model(shared_model):
    shared_model.zero_grad(set_to_none=True)
    return shared_model


@pytest.fixture(scope="module")
def cls_model(shared_model):
    return SentenceTransformer(modules=[shared_model[0], Pooling(H, pooling_mode="cls")], device="cpu").eval()


def features(model, *columns):
    return [model.preprocess(list(texts)) for texts in columns]


def blocks(model):
    return model[0].auto_model.encoder.layer


# ---- the independent reference ----


def pooled_layers(model, texts, mode="mean"):
    """{layer: pooled embedding} for layers 1..N from hidden_states, pooled by hand."""
    batch = model.preprocess(list(texts))
    keys = ("input_ids", "attention_mask", "token_type_ids")
    states = model[0].auto_model(**{k: batch[k] for k in keys}, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    if mode == "cls":
        return {layer: states[layer][:, 0] for layer in range(1, N + 1)}
    return {layer: (states[layer] * mask).sum(1) / mask.sum(1) for layer in range(1, N + 1)}


def cut(embeddings, dim):
    return F.normalize(embeddings[:, :dim], dim=-1)


def infonce(queries, candidates):
    """MultipleNegativesRankingLoss: cross-entropy of scaled cosines, query i's positive is candidate i."""
    scores = SCALE * cut(queries, queries.shape[1]) @ cut(candidates, candidates.shape[1]).T
    return -torch.log_softmax(scores, dim=1).diagonal().mean()


def cosent(a, b, labels):
    """log(1 + sum over label_i > label_j of exp(s_j - s_i)), s = scaled cosine."""
    s = SCALE * F.cosine_similarity(a, b)
    pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if labels[i] > labels[j]]
    return torch.log(1 + sum(torch.exp(s[j] - s[i]) for i, j in pairs))


def kl(student, teacher):
    """sum over rows of KL(softmax(teacher) || softmax(student)), divided by the number of rows."""
    p = torch.softmax(teacher, dim=-1)
    return (p * (torch.log(p) - torch.log_softmax(student, dim=-1))).sum() / len(p)


def retrieval_cell(columns, layer, dim):
    """(InfoNCE, in-batch cosine scores) of one cell; columns = [queries, positives, negatives...]."""
    queries = cut(columns[0][layer], dim)
    candidates = cut(torch.cat([column[layer] for column in columns[1:]]), dim)
    return infonce(queries, candidates), queries @ candidates.T


# ---- values ----


def test_plain_loss_is_the_base_loss_at_the_full_cell(model):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = PlainLoss(model, MultipleNegativesRankingLoss(model))
    expected, _ = retrieval_cell(columns, N, H)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


def test_plain_loss_at_a_cell_is_the_separate_baseline(model):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = PlainLoss(model, MultipleNegativesRankingLoss(model), cell=(2, 8))
    expected, _ = retrieval_cell(columns, 2, 8)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


def test_mrl_sums_weighted_dims_of_the_last_layer(model):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = MRLLoss(model, MultipleNegativesRankingLoss(model), dims=[8, 16, 32], weights=[1.0, 0.5, 0.25])
    expected = sum(w * retrieval_cell(columns, N, d)[0] for d, w in [(8, 1.0), (16, 0.5), (32, 0.25)])
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cells_are_prefixes_of_the_layer_outputs_pooled_as_the_model_pools(model, cls_model, pooling):
    model = cls_model if pooling == "cls" else model
    loss = PlainLoss(model, MultipleNegativesRankingLoss(model))
    (column,) = loss.embed(features(model, QUERIES), [3, 1])
    expected = pooled_layers(model, QUERIES, pooling)
    assert sorted(column) == [1, 3]
    for layer in (1, 3):
        torch.testing.assert_close(column[layer], expected[layer])
    torch.testing.assert_close(loss.cell([column], Cell(3, 8))[0], cut(expected[3], 8))


def test_srl_scores_kl_equals_hand_computation(model):
    columns = [pooled_layers(model, texts) for texts in (QUERIES, POSITIVES, NEGATIVES)]
    loss = SRLLoss(model, MultipleNegativesRankingLoss(model))  # default pairs, kl="scores"
    terms = loss.terms(features(model, QUERIES, POSITIVES, NEGATIVES), None)
    assert list(terms) == [
        "base(4,32)", "base(1,4)", "kl(1,4)", "base(2,8)", "kl(2,8)", "base(3,16)", "kl(3,16)"
    ]
    expected, full_scores = retrieval_cell(columns, N, H)
    for layer, dim in [(1, 4), (2, 8), (3, 16)]:
        base, scores = retrieval_cell(columns, layer, dim)
        expected = expected + base + kl(scores * SCALE, full_scores * SCALE)  # temperature 1/SCALE divides
    torch.testing.assert_close(sum(terms.values()), expected)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES, NEGATIVES), None), expected)


@pytest.mark.parametrize("kl_point", ["output", "pooled"])
def test_srl_embedding_kl_with_cosent_equals_hand_computation(model, kl_point):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = SRLLoss(model, CoSENTLoss(model), pairs=[(1, 8), (2, 16), (4, 32)], kl="embedding", kl_point=kl_point)
    # output: the model's sentence_embedding (this model ends with Normalize), cut; pooled: the raw pooled vector
    point = (lambda x: F.normalize(x, dim=-1)) if kl_point == "output" else (lambda x: x)
    expected = cosent(columns[0][N], columns[1][N], STS_LABELS)
    for layer, dim in [(1, 8), (2, 16)]:
        student = torch.cat([point(column[layer])[:, :dim] for column in columns])
        teacher = torch.cat([point(column[N])[:, :dim] for column in columns])
        expected = expected + cosent(columns[0][layer][:, :dim], columns[1][layer][:, :dim], STS_LABELS)
        expected = expected + 0.3 * kl(student, teacher)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), STS_LABELS), expected)


def test_srl_without_kl_is_the_sum_of_base_losses(model):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = SRLLoss(model, MultipleNegativesRankingLoss(model), pairs=[(2, 8), (3, 16)], kl="none")
    expected = sum(retrieval_cell(columns, layer, dim)[0] for layer, dim in [(2, 8), (3, 16), (N, H)])
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


def test_full_grid_srl_covers_every_cell(model):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    grid = Grid.for_model(N, H, layers=[2, 4], dims=[8, 32])
    loss = FullGridSRLLoss(model, MultipleNegativesRankingLoss(model), grid, temperature=0.5)
    expected, full_scores = retrieval_cell(columns, N, H)
    for layer, dim in [(2, 8), (2, 32), (4, 8)]:
        base, scores = retrieval_cell(columns, layer, dim)
        expected = expected + base + kl(scores / 0.5, full_scores / 0.5)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


def test_full_grid_srl_samples_cells_reproducibly(model):
    batch = features(model, QUERIES, POSITIVES)

    def sampled(seed):
        base = MultipleNegativesRankingLoss(model)
        loss = FullGridSRLLoss(model, base, cells_per_step=2, seed=seed, kl="none")
        with torch.no_grad():
            return [tuple(loss.terms(batch, None)) for _ in range(6)]

    steps = sampled(7)
    assert steps == sampled(7)
    assert all(len(step) == 3 and step[0] == "base(4,32)" for step in steps)  # full cell + 2 sampled
    assert len({key for step in steps for key in step}) > 3  # the sample changes from step to step


@pytest.mark.parametrize(
    "weighting, weight",
    [("uniform", lambda L: 1.0), ("inverse", lambda L: 1 / L), ("log", lambda L: 1 / (1 + math.log(1 + L)))],
)
def test_2dmse_all_layers_and_dims_equals_hand_computation(model, weighting, weight):
    columns = [pooled_layers(model, QUERIES), pooled_layers(model, POSITIVES)]
    loss = TwoDMSELoss(
        model, MultipleNegativesRankingLoss(model), dims=[8, 32], layers_per_step=-1, dims_per_step=-1,
        layer_weighting=weighting,
    )
    # the KL reads the model's output (normalised: this model ends with Normalize), full width
    teacher = F.normalize(torch.cat([column[N] for column in columns]), dim=-1) / 0.3
    expected = sum(retrieval_cell(columns, N, dim)[0] for dim in (8, 32))
    for layer in (1, 2, 3):
        base = sum(retrieval_cell(columns, layer, dim)[0] for dim in (8, 32))
        student = F.normalize(torch.cat([column[layer] for column in columns]), dim=-1) / 0.3
        expected = expected + weight(layer) / 3 * base + 0.3 * kl(student, teacher)
    torch.testing.assert_close(loss(features(model, QUERIES, POSITIVES), None), expected)


def test_2dmse_default_step_is_final_plus_one_layer_at_one_dim_each(model):
    batch = features(model, QUERIES, POSITIVES)

    def sampled(seed):
        loss = TwoDMSELoss(model, MultipleNegativesRankingLoss(model), dims=[4, 8, 16, 32], seed=seed)
        with torch.no_grad():
            return [tuple(loss.terms(batch, None)) for _ in range(6)]

    steps = sampled(1)
    assert steps == sampled(1)
    for final, prior, kl_key in steps:
        layer = int(prior[5:].split(",")[0])
        assert final.startswith("base(4,") and 1 <= layer <= 3 and kl_key == f"kl({layer})"


# ---- gradients ----


def trained_blocks(model):
    """Per transformer block: did any of its parameters get a nonzero gradient?"""
    return [any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters()) for b in blocks(model)]


def test_a_shallow_cell_trains_only_its_layers(model):
    loss = PlainLoss(model, MultipleNegativesRankingLoss(model), cell=(2, 8))
    loss(features(model, QUERIES, POSITIVES), None).backward()
    assert trained_blocks(model) == [True, True, False, False]
    assert all(p.grad is None for block in blocks(model)[2:] for p in block.parameters())  # never even ran
    assert model[0].auto_model.embeddings.word_embeddings.weight.grad is not None


def backward_each(model, terms, names):
    """Which blocks each named term alone trains."""
    reached = {}
    for name in names:
        model.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        reached[name] = trained_blocks(model)
    return reached


def test_srl_terms_reach_their_layers_and_the_scores_teacher_is_detached(model):
    loss = SRLLoss(model, MultipleNegativesRankingLoss(model))
    terms = loss.terms(features(model, QUERIES, POSITIVES), None)
    reached = backward_each(model, terms, ["base(1,4)", "kl(1,4)", "base(3,16)", "kl(3,16)", "base(4,32)"])
    assert reached == {
        "base(1,4)": [True, False, False, False],
        "kl(1,4)": [True, False, False, False],  # no gradient through the full-model teacher
        "base(3,16)": [True, True, True, False],
        "kl(3,16)": [True, True, True, False],
        "base(4,32)": [True, True, True, True],
    }
    model.zero_grad(set_to_none=True)
    loss(features(model, QUERIES, POSITIVES), None).backward()
    assert trained_blocks(model) == [True] * N


def test_srl_embedding_kl_teacher_is_not_detached(model):
    loss = SRLLoss(model, CoSENTLoss(model), kl="embedding")
    terms = loss.terms(features(model, QUERIES, POSITIVES), STS_LABELS)
    assert backward_each(model, terms, ["kl(1,4)"]) == {"kl(1,4)": [True] * N}


@pytest.mark.parametrize("detach, teacher_trained", [(True, False), (False, True)])
def test_2dmse_detach_controls_the_teacher_gradient(model, detach, teacher_trained):
    loss = TwoDMSELoss(model, MultipleNegativesRankingLoss(model), layers=[1], detach=detach)
    terms = loss.terms(features(model, QUERIES, POSITIVES), None)
    assert backward_each(model, terms, ["kl(1)"]) == {"kl(1)": [True] + [teacher_trained] * 3}


def test_an_optimiser_step_lowers_the_loss(shared_model):
    model = copy.deepcopy(shared_model)
    loss = SRLLoss(model, MultipleNegativesRankingLoss(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = features(model, QUERIES, POSITIVES, NEGATIVES)
    values = []
    for _ in range(3):
        optimizer.zero_grad()
        value = loss(batch, None)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert values[-1] < values[0]


# ---- one pass per column, early exit ----


def block_calls(model, run):
    calls = [0] * N
    handles = [
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(blocks(model))
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def test_an_srl_step_runs_the_encoder_once_per_column(model):
    loss = SRLLoss(model, MultipleNegativesRankingLoss(model))
    batch = features(model, QUERIES, POSITIVES, NEGATIVES)
    hooks = [list(block._forward_hooks) for block in blocks(model)]  # transformers may keep its own
    assert block_calls(model, lambda: loss(batch, None)) == [3] * N
    assert [list(block._forward_hooks) for block in blocks(model)] == hooks  # the loss leaves none behind


def test_a_shallow_cell_exits_early(model):
    loss = PlainLoss(model, MultipleNegativesRankingLoss(model), cell=(2, 8))
    batch = features(model, QUERIES, POSITIVES)
    assert block_calls(model, lambda: loss(batch, None)) == [2, 2, 0, 0]


# ---- validation ----


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([(5, 8)], "layer 5 is out of range"),
        ([(0, 8)], "layer 0 is out of range"),
        ([(2, 64)], "dim 64 is out of range"),
        ([(2, 8), (1, 16)], r"\(1,16\) does not grow from \(2,8\)"),
        ([(1, 8), (2, 8)], r"\(2,8\) does not grow from \(1,8\)"),
        ([], "empty"),
    ],
)
def test_bad_pair_lists_are_refused(model, pairs, message):
    with pytest.raises(ElasticIRError, match=message):
        SRLLoss(model, MultipleNegativesRankingLoss(model), pairs=pairs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m, b: SRLLoss(m, b, kl="cosine"), "kl='cosine': choose one of scores, embedding, none"),
        (lambda m, b: SRLLoss(m, b, kl="embedding", temperature=0.05), "has no softmax temperature"),
        (lambda m, b: SRLLoss(m, b, kl_point="after"), "kl_point='after'"),
        (lambda m, b: TwoDMSELoss(m, b, kl="scores"), "kl \\(2DMSE\\)='scores'"),
        (lambda m, b: FullGridSRLLoss(m, b, cells_per_step=0), "cells_per_step=0"),
        (lambda m, b: TwoDMSELoss(m, b, layers=[2, 4]), "final layer 4 is always trained"),
        (lambda m, b: TwoDMSELoss(m, b, dims_per_step=0), "dims_per_step=0"),
        (lambda m, b: TwoDMSELoss(m, b, layer_weighting="linear"), "layer_weighting='linear'"),
        (lambda m, b: MRLLoss(m, b, dims=[8, 64]), "dim 64 is out of range"),
        (lambda m, b: PlainLoss(m, b, cell=(9, 8)), "layer 9 is out of range"),
        (lambda m, b: PlainLoss(m, torch.nn.MSELoss()), "has no compute_loss_from_embeddings"),
    ],
)
def test_bad_settings_are_refused(model, make, message):
    with pytest.raises(ElasticIRError, match=message):
        make(model, MultipleNegativesRankingLoss(model))


def test_a_multi_mode_pooling_trains_the_cells_the_evaluation_reads(shared_model):
    """mean+max Pooling gives 2H coordinates; a cell is a prefix of that output, in training as in evaluation."""
    pooling = Pooling(H, pooling_mode=("mean", "max"))
    stacked = SentenceTransformer(modules=[shared_model[0], pooling], device="cpu")
    loss = PlainLoss(stacked, MultipleNegativesRankingLoss(stacked))
    assert loss.full.dim == 2 * H
    batch = stacked.tokenize(QUERIES)
    columns = loss.embed([batch], [loss.full.layer])
    expected = torch.nn.functional.normalize(stacked(dict(batch))["sentence_embedding"], dim=-1)
    torch.testing.assert_close(loss.cell(columns, loss.full)[0], expected, atol=1e-5, rtol=0)


def test_a_module_without_layerwise_meaning_is_refused(shared_model):
    from sentence_transformers.sentence_transformer.modules import WeightedLayerPooling

    layers = shared_model[0].auto_model.config.num_hidden_layers
    stacked = SentenceTransformer(modules=[shared_model[0], WeightedLayerPooling(H, num_hidden_layers=layers,
                                                                                 layer_start=1)], device="cpu")
    with pytest.raises(ElasticIRError, match="WeightedLayerPooling .* not supported"):
        PlainLoss(stacked, MultipleNegativesRankingLoss(stacked))


def test_scores_kl_needs_candidates(model):
    loss = SRLLoss(model, CoSENTLoss(model))
    with pytest.raises(ElasticIRError, match="candidate column"):
        loss(features(model, QUERIES), STS_LABELS)


def test_every_loss_answers_its_trained_cells_and_report_pairs(model):
    base = MultipleNegativesRankingLoss(model)
    diagonal = [Cell(1, 4), Cell(2, 8), Cell(3, 16), Cell(4, 32)]
    cases = [
        (PlainLoss(model, base), [Cell(4, 32)], diagonal),
        (PlainLoss(model, base, cell=(2, 8)), [Cell(2, 8)], [Cell(2, 8)]),
        (MRLLoss(model, base, dims=[8, 32]), [Cell(4, 8), Cell(4, 32)], diagonal),
        (SRLLoss(model, base, pairs=[(1, 8), (3, 16)]), [Cell(1, 8), Cell(3, 16), Cell(4, 32)],
         [Cell(1, 8), Cell(3, 16)]),
        (FullGridSRLLoss(model, base, Grid.for_model(N, H, layers=[2, 4], dims=[8, 32])),
         [Cell(2, 8), Cell(2, 32), Cell(4, 8), Cell(4, 32)], diagonal),
        (TwoDMSELoss(model, base, layers=[2], dims=[8, 32]), [Cell(2, 8), Cell(2, 32), Cell(4, 8), Cell(4, 32)],
         diagonal),
        (SortedNetLoss(model, base, cells=[(1, 4), (2, 8)]), [Cell(1, 4), Cell(2, 8), Cell(4, 32)],
         [Cell(1, 4), Cell(2, 8), Cell(4, 32)]),
    ]
    for loss, trained, pairs in cases:
        assert (loss.trained_cells(), loss.report_pairs()) == (trained, pairs), type(loss).__name__


def test_kl_is_a_word_in_every_loss(model):
    base = MultipleNegativesRankingLoss(model)
    batch = features(model, QUERIES, POSITIVES)
    with torch.no_grad():
        assert not any(key.startswith("kl") for key in TwoDMSELoss(model, base, kl="none").terms(batch, None))
        assert not any(key.startswith("kl") for key in SRLLoss(model, base, kl="none").terms(batch, None))
    with pytest.raises(ElasticIRError, match="kl \\(2DMSE\\)=True"):
        TwoDMSELoss(model, base, kl=True)  # the former boolean
