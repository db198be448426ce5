"""Real public models with module stacks beyond Pooling + Normalize, against sentence-transformers (slow; each test
runs when the model folder is under $ELASTICIR_MODELS, as ../shared/tools/fetch_models.sh builds it — the
models are never downloaded by the tests)."""

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from elasticir.cells import Grid
from elasticir.data.catalog import CATALOG
from elasticir.encoders import ElasticEncoder
from elasticir.encoders.prompts import dataset_prompts
from elasticir.evaluation.standalone import evaluate_sts

pytestmark = pytest.mark.slow


def model_folder(name: str) -> Path:
    root = os.environ.get("ELASTICIR_MODELS")
    folder = Path(root) / name if root else None
    if folder is None or not (folder / "modules.json").is_file():
        pytest.skip(f"{name} is not under $ELASTICIR_MODELS (build it with ../shared/tools/fetch_models.sh)")
    return folder


def test_embeddinggemma_sts_cells_equal_sentence_transformers(shared_data):
    """EmbeddingGemma (Gemma3, mean Pooling, Dense 768->3072->768, Normalize, task prompts): the STS prompt MTEB
    selects, and at (24, d) for its MRL dims the vectors and Spearman of sentence-transformers' truncate_dim."""
    import mteb
    from mteb.models.abs_encoder import get_prompt_name
    from sentence_transformers import SentenceTransformer

    from elasticir.data.sts import load_sts
    from elasticir.data.subset import subset_sts

    folder = model_folder("embeddinggemma-300m")
    pairs = subset_sts(load_sts(shared_data / "sts" / "stsbenchmark" / "test.jsonl.gz"), 40, 0)
    encoder = ElasticEncoder(str(folder), device="cpu", max_length=128)
    spec = CATALOG["stsbenchmark"]
    prompt = dataset_prompts(encoder.info.prompts, encoder.info.default_prompt_name, task="sts",
                             task_name=spec.mteb_name, task_type=spec.mteb_type)["text"]
    st = SentenceTransformer(str(folder), device="cpu")
    st.max_seq_length = 128
    assert prompt.name == get_prompt_name(st.prompts, mteb.get_task("STSBenchmark").metadata, None) == "STS"
    dims = [128, 256, 512, 768]
    grid = Grid.for_model(24, 768, [24], dims)
    ours = evaluate_sts(encoder, pairs, grid, prompt=prompt.text, show_progress=False).cells.set_index("dim")
    texts = pairs.sentence1 + pairs.sentence2
    full = encoder.encode(texts, [24], prompt=prompt.text, show_progress=False)[24]
    for dim in dims:
        reference = st.encode(texts, prompt_name="STS", truncate_dim=dim, convert_to_numpy=True)
        np.testing.assert_allclose(full[:, :dim], reference, atol=1e-5)
        unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        half = len(pairs.sentence1)
        cosine = np.einsum("ij,ij->i", unit[:half], unit[half:])
        assert abs(ours.loc[dim, "spearman"] - spearmanr(cosine, pairs.scores).statistic) < 1e-4


def test_mpnet_every_layer_equals_the_layerwise_embedding():
    """all-mpnet-base-v2 (12 x 768, the Starbucks shape): each layer equals hidden_states[L] through the modules."""
    import torch
    from sentence_transformers import SentenceTransformer

    folder = model_folder("all-mpnet-base-v2")
    texts = ["A man is playing a guitar.", "The stock market fell sharply on Monday after the report."]
    encoder = ElasticEncoder(str(folder), device="cpu")
    ours = encoder.encode(texts, range(1, 13), show_progress=False)
    st = SentenceTransformer(str(folder), device="cpu")
    features = st.tokenize(texts)
    with torch.no_grad():
        hidden = st[0].auto_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                                  output_hidden_states=True).hidden_states
        for layer in range(1, 13):
            state = {**features, "token_embeddings": hidden[layer]}
            for module in list(st)[1:]:
                state = module(state)
            np.testing.assert_allclose(ours[layer], state["sentence_embedding"].numpy(), atol=1e-5)
