"""Let mteb (>= 2, checked on 2.26) evaluate one (layer L, dim d) cell of an ElasticEncoder itself.

`ElasticCellModel` implements mteb's encoder protocol (an `AbsEncoder` with `encode(DataLoader, *, task_metadata,
hf_split, hf_subset, prompt_type)` and an `mteb_model_meta` naming the cell as the experiment
{"layer": L, "embed_dim": d}): it encodes with early exit at layer L and keeps the first d coordinates
(L2-normalised, as our own scoring does). `OfflineSTSBenchmark` is mteb's STSBenchmark task reading
`<data root>/sts/stsbenchmark/test.jsonl.gz` instead of the hub. Together they are an independent check of our
evaluation code:

    model = ElasticCellModel(ElasticEncoder("all-MiniLM-L6-v2"), layer=6, dim=384)
    result = mteb.evaluate(model, OfflineSTSBenchmark(), cache=None)

This module imports mteb (slow, optional for the rest of elasticir): import it only where it is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from elasticir.cells import Cell
from elasticir.data.catalog import data_root as resolve_root
from elasticir.data.sts import load_sts
from elasticir.encoders import ElasticEncoder, truncate
from elasticir.encoders.prompts import choose
from elasticir.errors import ElasticIRError

try:
    import mteb
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta
    from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS
except ImportError:  # pragma: no cover - mteb is optional
    raise ElasticIRError("mteb is not installed; run `pip install 'mteb>=2'` to evaluate cells with mteb") from None


def _mteb_name(name: str) -> str:
    """mteb wants 'organization/model_name'; a local folder becomes 'elasticir/<folder name>'."""
    parts = name.strip("/").split("/")
    if len(parts) == 2 and all(parts) and not Path(name).expanduser().is_dir():
        return name
    return f"elasticir/{Path(name).name or 'model'}"


def _cell_model_meta(encoder: ElasticEncoder, layer: int, dim: int) -> ModelMeta:
    """An mteb ModelMeta for one cell: the model's name and revision, the cell as experiment kwargs."""
    info = encoder.info
    n_params = sum(p.numel() for p in encoder.model.parameters())
    return ModelMeta(
        loader=None, name=_mteb_name(info.name), revision=info.revision or "no_revision_available",
        release_date=None, languages=None, n_parameters=n_params,
        memory_usage_mb=round(n_params * encoder.model.dtype.itemsize / 2**20, 1), max_tokens=info.max_length,
        embed_dim=dim, license=None, open_weights=True, public_training_code=None, public_training_data=None,
        framework=["PyTorch"], similarity_fn_name="cosine", use_instructions=False, training_datasets=None,
        modalities=["text"], model_type=["dense"], experiment_kwargs={"layer": layer, "embed_dim": dim},
    )


class ElasticCellModel(AbsEncoder):
    """mteb encoder for the cell (layer, dim) of an ElasticEncoder (or a model name / folder to load one)."""

    def __init__(self, encoder: ElasticEncoder | str, layer: int, dim: int, *, batch_size: int = 64,
                 device: str | None = None, **_: Any) -> None:
        self.encoder = encoder if isinstance(encoder, ElasticEncoder) else ElasticEncoder(encoder, device=device)
        self.encoder.check_cells([Cell(layer, dim)])
        self.layer, self.dim, self.batch_size = layer, dim, batch_size
        self.model = self.encoder
        self.mteb_model_meta = _cell_model_meta(self.encoder, layer, dim)

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        info = self.encoder.info  # the prompt MTEB's own selection gives a sentence-transformers model
        prompt = choose(self.encoder.prompt_table, info.default_prompt_name, task_name=task_metadata.name,
                        task_type=task_metadata.type, prompt_type=getattr(prompt_type, "value", prompt_type)).text
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        pooled = self.encoder.encode(texts, [self.layer], batch_size=kwargs.get("batch_size", self.batch_size),
                                     prompt=prompt, show_progress=False)[self.layer]
        return truncate(pooled, self.dim, normalize=True)

    def __repr__(self) -> str:
        return f"ElasticCellModel({self.encoder.info.name!r}, layer={self.layer}, dim={self.dim})"


class OfflineSTSBenchmark(STSBenchmarkSTS):
    """mteb's STSBenchmark (test split) read from a local jsonl(.gz) file instead of the hub.

    `path` defaults to `<data root>/sts/stsbenchmark/test.jsonl.gz` ($ELASTICIR_DATA unless `data_root` is given).
    """

    def __init__(self, path: str | Path | None = None, data_root: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if path is None:
            path = Path(resolve_root(data_root)) / "sts" / "stsbenchmark" / "test.jsonl.gz"
        self.path = Path(path)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset, DatasetDict  # lazy: slow, only when the task's data is loaded

        if not self.path.is_file():
            raise ElasticIRError(f"{self.path}: no STSBenchmark file (jsonl with sentence1, sentence2, score)")
        pairs = load_sts(self.path)
        self.dataset = DatasetDict({"test": Dataset.from_dict({
            "sentence1": pairs.sentence1, "sentence2": pairs.sentence2, "score": pairs.scores.tolist()})})
        self.data_loaded = True


def evaluate_cell_with_mteb(encoder: ElasticEncoder, layer: int, dim: int, task=None, *,
                            batch_size: int = 64) -> dict[str, float]:
    """Run mteb's own evaluation of one cell (no result cache) and return the test scores of the default subset."""
    task = task if task is not None else OfflineSTSBenchmark()
    result = mteb.evaluate(ElasticCellModel(encoder, layer, dim, batch_size=batch_size), task, cache=None,
                           show_progress_bar=False, encode_kwargs={"batch_size": batch_size}, co2_tracker=False)
    (task_result,) = result.task_results
    (scores,) = [s for s in task_result.scores["test"] if s.get("hf_subset", "default") == "default"]
    return {k: v for k, v in scores.items() if isinstance(v, float)}
