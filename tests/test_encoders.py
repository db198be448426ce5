import numpy as np
import pytest
import torch

from elasticir.cells import Cell, Grid, default_dims, default_pairs, parse_int_list, parse_pairs
from elasticir.encoders import ElasticEncoder, truncate
from elasticir.errors import ElasticIRError

TEXTS = ["short one", "a somewhat longer sentence about nothing in particular", "third", "a fourth text here"]


def count_executed_blocks(encoder, layers):
    executed = []
    handles = [block.register_forward_hook(lambda m, i, o, n=n: executed.append(n))
               for n, block in enumerate(encoder._blocks, start=1)]
    try:
        encoder.encode(TEXTS, layers, batch_size=8, show_progress=False)
    finally:
        for handle in handles:
            handle.remove()
    return executed


@pytest.mark.parametrize("layers, expected", [([1], [1]), ([2], [1, 2]), ([1, 3], [1, 2, 3]), ([4], [1, 2, 3, 4])])
def test_early_exit_runs_only_the_needed_layers(tiny_encoder, layers, expected):
    assert count_executed_blocks(tiny_encoder, layers) == expected


def test_no_hooks_are_left_on_the_model(tiny_encoder):
    tiny_encoder.encode(TEXTS, [2], show_progress=False)
    assert all(len(block._forward_hooks) == 0 for block in tiny_encoder._blocks)


def test_per_layer_embeddings_equal_hidden_states_pooling(tiny_encoder):
    layers = [1, 2, 3, 4]
    ours = tiny_encoder.encode(TEXTS, layers, batch_size=3, show_progress=False)
    batch = tiny_encoder.tokenize(TEXTS)
    with torch.no_grad():
        hidden = tiny_encoder.model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    for layer in layers:
        expected = torch.nn.functional.normalize((hidden[layer] * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        np.testing.assert_allclose(ours[layer], expected, atol=1e-5)  # the folder's stack ends with Normalize


def test_output_order_does_not_depend_on_batching(tiny_encoder):
    one = tiny_encoder.encode(TEXTS, [2], batch_size=1, show_progress=False)[2]
    many = tiny_encoder.encode(TEXTS, [2], batch_size=64, show_progress=False)[2]
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_cls_pooling_takes_the_first_token(tiny_model_dir):
    encoder = ElasticEncoder(str(tiny_model_dir), pooling="cls", device="cpu")
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        hidden = encoder.model(**batch, output_hidden_states=True).hidden_states
    expected = torch.nn.functional.normalize(hidden[3][:, 0], dim=-1).numpy()  # then the folder's Normalize
    np.testing.assert_allclose(encoder.encode(TEXTS, [3], show_progress=False)[3], expected, atol=1e-5)


def test_sentence_transformers_folder_settings_are_read(tiny_encoder):
    info = tiny_encoder.info
    assert (info.num_layers, info.hidden_size, info.pooling, info.normalize, info.max_length) == (4, 32, "mean", True, 64)
    assert len(info.weights_sha256) == 64


def test_truncate_is_a_normalised_prefix():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(5, 16)).astype(np.float32)
    cut = truncate(full, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cut * np.linalg.norm(full[:, :4], axis=1, keepdims=True), full[:, :4], rtol=1e-5)
    np.testing.assert_array_equal(truncate(full, 4, normalize=False), full[:, :4])


@pytest.mark.parametrize("layers, dims, message", [
    ([5], [32], "layers 1..4"), ([0], [32], "layers 1..4"), ([2], [33], "1..32"), ([2], [0], "1..32"),
])
def test_bad_layer_or_dim_is_a_clear_error(layers, dims, message):
    with pytest.raises(ElasticIRError, match=message):
        Grid.for_model(4, 32, layers, dims)


def test_truncate_refuses_a_dim_wider_than_the_embedding():
    with pytest.raises(ElasticIRError, match="1..8"):
        truncate(np.zeros((2, 8), dtype=np.float32), 9)


def test_encoder_refuses_layer_beyond_model(tiny_encoder):
    with pytest.raises(ElasticIRError, match="layers 1..4"):
        tiny_encoder.encode(TEXTS, [5], show_progress=False)


def test_defaults_follow_the_model_shape():
    assert default_dims(384) == [32, 64, 128, 256, 384]
    assert Grid.for_model(6, 384).cells[:2] == [Cell(1, 32), Cell(1, 64)] and len(Grid.for_model(6, 384).cells) == 30
    assert default_pairs(6, 384) == [Cell(1, 16), Cell(2, 32), Cell(3, 64), Cell(4, 128), Cell(5, 256), Cell(6, 384)]
    assert default_pairs(12, 768) == [Cell(2, 32), Cell(4, 64), Cell(6, 128), Cell(8, 256), Cell(10, 512),
                                      Cell(12, 768)]


def test_cli_lists_are_parsed_or_refused():
    assert parse_int_list("1, 2,6", "layers") == [1, 2, 6]
    assert parse_pairs("2:32,6:384") == [Cell(2, 32), Cell(6, 384)]
    with pytest.raises(ElasticIRError, match="--layers"):
        parse_int_list("1,x", "layers")
    with pytest.raises(ElasticIRError, match="LAYER:DIM"):
        parse_pairs("2-32")
