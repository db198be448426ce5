"""Train an elastic encoder with the sentence-transformers trainer and one of our losses.

The trainer gives us what users expect of it (AdamW + linear warm-up, seeds, bf16 on CUDA, a progress bar,
periodic checkpoints and resume); the method only changes the loss module it is handed. The output folder is a
sentence-transformers model that loads as-is, plus `elastic.json`: method, trained cells, base model, data
checksums, steps, seed - written last, so a folder with it is a finished model and a folder without it is an
interrupted run that the same command resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from elasticir.cells import Cell, validate_cells
from elasticir.config import check_device, check_positive
from elasticir.encoders import (
    DEFAULT_MODEL,
    load_sentence_transformer,
    transformer_blocks,
    weights_sha256,
)
from elasticir.encoders.stack import ModuleStack
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write, provenance
from elasticir.outputs import claim_output, release_output
from elasticir.training import losses
from elasticir.training.data import TrainingData, check_specs, load_training_data
from elasticir.training.losses import ElasticLoss, LossConfig
from elasticir.training.recipes import RECIPE_KEYS, check_recipe, resolve_recipe

METADATA = "elastic.json"
METHODS = losses.names()  # the built-in methods (a loss registered later is accepted as well)
Preset = Literal["starbucks-sts", "starbucks-retrieval", "2dmse-st5", "2dmse-st6", "sortednet"]


class TrainConfig(BaseModel):
    """Every key of `elasticir train` (flags and YAML); what changes the trained weights is all here.

    The recipe keys (RECIPE_KEYS: method, pooling, similarity, ... negatives) left None are filled from
    `preset` (default: the method's own preset, starbucks-sts without a method) by `resolved()`.
    The keys stay flat (flags, YAML files, the `config` recorded in elastic.json); the keys a loss reads are
    validated by that loss's own config model (`loss_config()`, training.losses)."""

    model_config = ConfigDict(extra="forbid")

    preset: Preset | None = None
    method: str | None = None  # a registered loss (training.losses): srl, srl-grid, 2dmse, sortednet, mrl, plain
    base: str = DEFAULT_MODEL
    data: list[str]
    out: str
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    pairs: list[tuple[int, int]] | None = None  # srl / sortednet: the pair list (default: from the model shape)
    cell: tuple[int, int] | None = None  # plain: the trained cell (default: full); separate baselines set it
    truncate_layers: bool = False  # plain at (L, d): drop the layers above L, so the output is an L-layer model
    layers: list[int] | None = None  # srl-grid / 2dmse layer pool
    dims: list[int] | None = None  # srl-grid / 2dmse / mrl dims
    pooling: Literal["model", "mean", "cls"] | None = None  # "model": the base model's own pooling
    similarity: Literal["cosine", "dot"] | None = None  # of the base loss (MNRL / CoSENT)
    scale: float | None = None  # the base loss's scale (1 / its softmax temperature)
    normalize: bool | None = None  # L2-normalise each cell again after the cut
    kl: Literal["scores", "embedding", "none"] | None = None
    kl_point: Literal["output", "pooled"] | None = None  # where embedding KLs read: after Normalize or before
    kl_weight: float | None = None  # None with a preset's None: the loss's own default
    temperature: float | None = None  # KL temperature (SRL scores KL: default 1 / scale; 2DMSE: 0.3)
    detach: bool | None = None  # detach the KL teacher
    cells_per_step: int | None = None  # srl-grid: sample this many cells per step (None = all)
    layers_per_step: int = 1  # 2dmse
    dims_per_step: int = 1  # 2dmse
    layer_weighting: Literal["uniform", "inverse", "log"] | None = None  # 2dmse
    schedule: Literal["random", "cyclic"] | None = None  # sortednet: which sub-network each step
    negatives: int | None = None  # BEIR training groups: hard negatives per query
    miner: Literal["bm25", "model", "none"] = "bm25"
    max_length: int | None = None
    checkpoint_steps: int = 200
    data_root: str | None = None
    device: str | None = None
    recompute: bool = False

    @field_validator("method")
    @classmethod
    def _registered_method(cls, method: str | None) -> str | None:
        if method is not None and method not in losses.names():
            raise PydanticCustomError("method", f"not a registered loss; choose one of {', '.join(losses.names())}")
        return method

    def loss_config(self) -> LossConfig:
        """The chosen loss's own config from the flat keys it declares (of a resolved config: method set),
        validated by the loss's model; the keys other methods read are not its business."""
        return losses.lookup(self.method).settings(self.model_dump())

    def resolved(self) -> tuple[TrainConfig, dict]:
        """This config with every recipe key filled from its preset, and the record of which preset and
        which overrides (for elastic.json); refuses choices that disagree."""
        explicit = {key: getattr(self, key) for key in RECIPE_KEYS}
        preset, values, overrides = resolve_recipe(explicit, self.preset)
        return self.model_copy(update={**values, "preset": preset}), {"preset": preset, "overrides": overrides}

    def numeric(self) -> dict:
        """The keys that change the weights (not where they go or whether to redo them)."""
        return self.model_dump(mode="json", exclude={"out", "recompute", "device", "data_root"})


def _build_base_loss(config: TrainConfig, model, kind: str):
    """The base loss the data calls for (MNRL for pairs/triplets, CoSENT for scores) on the chosen similarity."""
    from sentence_transformers import util  # lazy here and below: slow, only when training
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    dot = config.similarity == "dot"
    if kind == "pairs":
        return MultipleNegativesRankingLoss(model, scale=config.scale,
                                            similarity_fct=util.dot_score if dot else util.cos_sim)
    return CoSENTLoss(model, scale=config.scale,
                      similarity_fct=util.pairwise_dot_score if dot else util.pairwise_cos_sim)


def build_loss(config: TrainConfig, model, data: TrainingData) -> ElasticLoss:
    """The method's loss around the base loss, from a resolved config (every recipe key set): the registered
    loss of `method`, built from its own config."""
    check_recipe(config.model_dump(), data_kind=data.kind)
    base = _build_base_loss(config, model, data.kind)
    return losses.lookup(config.method).build(model, base, config.loss_config())

def _load_base(config: TrainConfig):
    """The base model as a SentenceTransformer with the recipe's pooling, cut to the trained cell's layers for
    a separate baseline."""
    model, folder = load_sentence_transformer(config.base, config.device)
    if config.max_length:
        model.max_seq_length = config.max_length
    if config.pooling not in (None, "model"):
        _set_pooling(model, config.pooling)
    shape = model[0].auto_model.config
    if config.truncate_layers:
        if config.cell is None:
            raise ElasticIRError("truncate_layers needs the trained cell (L, d): set cell")
        layer = config.cell[0]
        validate_cells([Cell(*config.cell)], shape.num_hidden_layers, output_width(model))
        del transformer_blocks(model[0].auto_model, shape.num_hidden_layers)[layer:]
        shape.num_hidden_layers = layer
    return model, folder


def _set_pooling(model, mode: str) -> None:
    """Replace the Pooling module by one of `mode` (it has no weights); the saved model keeps the new one."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    old = model[1]
    if not isinstance(old, Pooling):
        raise ElasticIRError(f"pooling {mode!r}: the model's second module is {type(old).__name__}, not Pooling")
    model._modules[next(name for name, module in model._modules.items() if module is old)] = Pooling(
        old.embedding_dimension, pooling_mode=mode, include_prompt=old.include_prompt)


def _check_batches(data: TrainingData, batch_size: int) -> None:
    """Only whole batches are trained (drop_last): a dataset with fewer rows than a batch would never be seen,
    and with all of them that small training would run 0 steps yet save the base model as if trained."""
    small = {name: len(dataset) for name, dataset in data.datasets.items() if len(dataset) < batch_size}
    if small:
        listed = ", ".join(f"{name} ({rows} rows)" for name, rows in small.items())
        raise ElasticIRError(
            f"--batch-size {batch_size} is larger than the training data: {listed}; only whole batches are "
            f"trained, so no step would use it. Fix: --batch-size {min(small.values())} or less, or more rows"
        )


def _complete(checkpoint: Path) -> bool:
    """Whether the trainer finished writing `checkpoint`: it writes trainer_state.json last (after the weights,
    optimiser, scheduler and RNG states), so a checkpoint without a whole one was cut short (kill -9)."""
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def _checkpoint(out: Path) -> Path | None:
    """The last complete checkpoint; incomplete ones (a run killed while writing one) are removed, so the run
    resumes from the last complete one and the trainer's rotation never keeps a broken one over a whole one."""
    found = sorted((p for p in (out / "checkpoints").glob("checkpoint-*")
                    if p.is_dir() and p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if _complete(p)]
    for broken in (p for p in found if p not in complete):
        print(f"{broken}: incomplete checkpoint (interrupted while it was written); skipped and removed",
              file=sys.stderr)
        shutil.rmtree(broken, ignore_errors=True)
    return complete[-1] if complete else None


def train(config: TrainConfig, callbacks: list | None = None) -> Path:
    """Train (or resume, or reuse) the model described by `config`; return its folder.

    `callbacks`: transformers TrainerCallbacks (progress hooks, early stops) passed to the trainer."""
    config, recipe = config.resolved()
    out = Path(config.out)
    _check_budget(config)
    config.loss_config()  # the loss's keys checked before the model loads
    check_specs(config.data, config.data_root)
    if claim_output(out, config.numeric(), started="train_config.json", finished=METADATA, what="training",
                    recompute=config.recompute) == "finished":
        print(f"{out}: already trained with this config (pass --recompute to train again)", file=sys.stderr)
        return out
    try:
        model, base_folder = _load_base(config)
        data = load_training_data(config.data, root=config.data_root, negatives=config.negatives,
                                  miner=config.miner, seed=config.seed, model=config.base)
        _check_batches(data, config.batch_size)
        loss = build_loss(config, model, data)
        trainer = _make_trainer(config, model, data, loss, out, callbacks)
        resume = _checkpoint(out)
        if resume:
            print(f"resuming from {resume}", file=sys.stderr)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - started
        if trainer.state.global_step < 1:  # never present an untrained copy of the base as a trained model
            raise ElasticIRError(f"training ran 0 steps ({data.rows} rows, --batch-size {config.batch_size}); "
                                 f"nothing was saved as trained in {out}. Fix: a smaller --batch-size or more data")
    except BaseException:
        if _checkpoint(out) is None:  # nothing to resume: give the folder back, so the corrected command runs
            release_output(out)
        raise
    model.save(str(out))
    metadata = _metadata(config, recipe, loss, data, base_folder, trainer, seconds, resume)
    atomic_write(out / METADATA, json.dumps(metadata, indent=2))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the finished model supersedes them
    return out


def _check_budget(config: TrainConfig) -> None:
    if config.max_steps < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ElasticIRError("max_steps and batch_size must be at least 1 and lr positive")
    check_positive(config.max_length, "--max-length")
    check_device(config.device)


def _make_trainer(config: TrainConfig, model, data: TrainingData, loss: ElasticLoss, out: Path, callbacks):
    """The sentence-transformers trainer: AdamW with linear warm-up, seeds, bf16 on CUDA, checkpoints."""
    import torch
    from datasets import DatasetDict
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    cuda = torch.cuda.is_available() and (config.device or "cuda").startswith("cuda")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=round(config.warmup_ratio * config.max_steps),  # an int: transformers 4 and 5 agree
        seed=config.seed,
        data_seed=config.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        # MNRL treats every other row of a batch as a negative: a duplicate text would be a false negative
        batch_sampler=BatchSamplers.NO_DUPLICATES if data.kind == "pairs" else BatchSamplers.BATCH_SAMPLER,
        save_strategy="steps",
        save_steps=config.checkpoint_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, config.max_steps // 20)),
        report_to="none",
        dataloader_drop_last=True,
    )
    # several files: a DatasetDict, which the trainer samples one dataset per batch
    train_dataset = DatasetDict(data.datasets) if len(data.datasets) > 1 else next(iter(data.datasets.values()))
    return SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                      callbacks=callbacks)


def _metadata(config: TrainConfig, recipe: dict, loss: ElasticLoss, data: TrainingData, base_folder: Path,
              trainer, seconds: float, resume: Path | None) -> dict:
    """elastic.json: what was trained from what, with which recipe and overrides, and how long it took."""
    return {
        "format": "elasticir-trained/1",
        "method": config.method,
        "recipe": recipe,
        "created_at": datetime.now(UTC).isoformat(),
        "base": {"name": config.base, "path": str(base_folder), "weights_sha256": weights_sha256(base_folder)},
        "loss": {"class": type(loss).__name__, **loss.get_config_dict()},
        "trained_cells": [list(cell) for cell in loss.trained_cells()],
        "pairs": [list(cell) for cell in loss.report_pairs()],
        "data": {"specs": config.data, "kind": data.kind, "rows": data.rows, "files": data.checksums(),
                 "notes": data.notes},
        "config": config.numeric(),
        "train_seconds": seconds,
        "resumed_from": resume.name if resume else None,
        "log_history": [entry for entry in trainer.state.log_history if "loss" in entry],
        **provenance(),
    }


def train_separate(config: TrainConfig, cells: list[tuple[int, int]], *, variant: str = "exact") -> list[Path]:
    """One plain model per cell, same data, steps and seed: `exact` trains the first L layers at width d
    (the separate baseline); `full-width` trains L layers at full width and leaves d to
    evaluation-time truncation (the weaker Starbucks-STS variant, kept under its own name)."""
    if variant not in ("exact", "full-width"):
        raise ElasticIRError(f"variant {variant!r}: choose exact or full-width")
    if not cells:
        raise ElasticIRError("no cells given; pass --cells 2:32,4:64,...")
    folders: list[Path] = []
    members: list[dict] = []
    for layer, dim in cells:
        if variant == "exact":
            cell, name = (layer, dim), Cell(layer, dim).slug
        else:
            cell, name = (layer, _hidden_size(config.base)), f"L{layer}-full-width"
        folder = Path(config.out) / name
        if folder not in folders:  # full-width: one model per layer, whatever the dims
            folders.append(train(config.model_copy(
                update={"method": "plain", "out": str(folder), "truncate_layers": True, "cell": cell})))
            members.append({"folder": name, "cell": list(cell)})
    # which cell each model serves (a full-width model: every dim of its layer), read by `--baseline FOLDER`;
    # models of an earlier call into the same folder (same variant) stay listed
    manifest = Path(config.out) / "separate.json"
    earlier = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if earlier.get("variant") == variant:
        members = [m for m in earlier["members"] if m["folder"] not in {n["folder"] for n in members}] + members
    atomic_write(manifest, json.dumps(
        {"format": "elasticir-separate/1", "variant": variant, "members": members}, indent=2))
    return folders


def _hidden_size(model: str) -> int:
    """The width of the model's output embedding (its module stack's, a Dense head included)."""
    return output_width(load_sentence_transformer(model, "cpu")[0])


def output_width(model) -> int:
    """The width of a SentenceTransformer's output embedding (its module stack's; a Dense head sets it): the
    grid's widest dim, as the evaluation sizes it."""
    return ModuleStack.of(model).output_width(model[0].auto_model.config.hidden_size)
