"""The pre-training loop: SMAE or plain MLM on raw text, with checkpoints, resume and a loadable output.

Why a hand-written loop and not the transformers `Trainer`? Resuming a *streamed* corpus exactly needs the
stream replayed to the same batch and the masks drawn from a per-step seed, and SMAE's rule "skip an optimiser
step whose gradient has a NaN" needs a look at the gradient between backward and step; both are a few lines
here and hooks-and-flags there. The building blocks are torch's and transformers' (AdamW, clipping, the cosine
schedule with warm-up, bf16 autocast on CUDA; fp32 on CPU).

The output folder is the base model trained in place and saved as a sentence-transformers model (same pooling
and normalisation modules as the base, so `SentenceTransformer(out)` and `ElasticEncoder(out)` load it as
they load the base), `smae_heads/` (the MLM head and decoder, which fine-tuning never needs) and
`elastic_pretrain.json`, written last: a folder with it is finished, a folder without it is an interrupted
run that the same call resumes from `checkpoint/`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from elasticir.data.catalog import data_root
from elasticir.encoders import (
    DEFAULT_MODEL,
    default_device,
    load_sentence_transformer,
    refused_pickle,
    transformer_folder,
    weights_sha256,
)
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write, file_checksum, provenance
from elasticir.outputs import claim_output, release_output
from elasticir.pretraining.masking import Masker
from elasticir.pretraining.smae import SMAE, read_head_weights
from elasticir.pretraining.text import TokenWindows, check_text_files, resolve_text_file

METADATA = "elastic_pretrain.json"
STARTED = "pretrain_config.json"
HEADS = "smae_heads"
CHECKPOINT = "checkpoint"
log = logging.getLogger(__name__)


class PretrainConfig(BaseModel):
    """Every key of `elasticir pretrain` (flags and YAML); `numeric()` is what changes the trained weights."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["smae", "mlm"] = "smae"
    base: str = DEFAULT_MODEL
    data: list[str] = Field(min_length=1)
    out: str
    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    pairs: list[tuple[int, int]] | None = None  # smae: default from the model shape; mlm trains the full cell
    max_length: int | None = Field(None, ge=3)  # tokens per window (default: the model's own max length)
    encoder_mask: float = Field(0.2, gt=0, lt=1)
    decoder_mask: float = Field(0.4, gt=0, lt=1)  # smae only
    checkpoint_steps: int = Field(500, ge=1)
    log_steps: int = Field(10, ge=1)
    data_root: str | None = None
    device: str | None = None
    recompute: bool = False

    @model_validator(mode="after")
    def _method_options(self) -> PretrainConfig:
        if self.method == "mlm" and self.pairs is not None:
            raise ValueError("pairs apply to smae; mlm trains the last layer at full width")
        if self.method == "smae" and self.decoder_mask < self.encoder_mask:
            raise ValueError("decoder_mask must be at least encoder_mask (encoder-masked words are also "
                             "decoder-masked)")
        return self

    def numeric(self) -> dict:
        """The keys that change the weights (not where they go, how often to save or log)."""
        return self.model_dump(mode="json", exclude={"out", "recompute", "device", "data_root",
                                                     "checkpoint_steps", "log_steps"})


@dataclass
class Progress:
    """What a checkpoint must carry for a resumed run to continue as if never stopped."""

    step: int = 0
    skipped_steps: list[int] = field(default_factory=list)  # steps whose gradient had a NaN/inf
    losses: list[dict] = field(default_factory=list)  # one entry per `log_steps`: mean loss and terms
    pending: list[dict] = field(default_factory=list)  # per-step losses since the last entry
    seconds: float = 0.0
    resumed_at: list[int] = field(default_factory=list)


def optimizer_step(optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor], max_grad_norm: float) -> bool:
    """Clip the gradient and step; skip the update entirely (False) when the gradient has a NaN or inf.

    The clipped norm is NaN/inf exactly when some gradient entry is, so one reduction answers both.
    """
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if not torch.isfinite(norm):
        return False
    optimizer.step()
    return True


def _save_checkpoint(path: Path, model: SMAE, optimizer, scheduler, progress: Progress) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "progress": asdict(progress), "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path / "state.pt")  # a crash mid-save leaves the previous checkpoint whole


def _load_checkpoint(path: Path, model: SMAE, optimizer, scheduler) -> Progress:
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ElasticIRError(refused_pickle(path / "state.pt")) from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**state["progress"])


def _optimizer(model: SMAE, config: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases or LayerNorm gains), as BERT is trained."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class _Session:
    """Everything one pre-training run holds while it trains."""

    config: PretrainConfig
    out: Path
    files: list[Path]
    st: object  # the SentenceTransformer whose first module is trained and saved
    base_folder: Path
    transformer_folder: Path
    model: SMAE
    heads_from: str | None
    max_length: int
    windows: TokenWindows
    masker: Masker
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT


def pretrain(config: PretrainConfig) -> Path:
    """Pre-train (or resume, or reuse) the model described by `config`; return the output folder."""
    out = Path(config.out)
    root = Path(config.data_root) if config.data_root else data_root()
    files = [resolve_text_file(spec, root) for spec in config.data]
    check_text_files(files)
    if claim_output(out, config.numeric(), started=STARTED, finished=METADATA, what="pre-training",
                    recompute=config.recompute) == "finished":
        print(f"{out}: already pre-trained with this config (pass --recompute to train again)", file=sys.stderr)
        return out
    try:
        session = _open_session(config, out, files)
        progress = _resume(session)
        _train_steps(session, progress)
    except BaseException:
        if not (out / CHECKPOINT / "state.pt").is_file():  # nothing to resume: give the folder back
            release_output(out)
        raise
    _save_outputs(session, progress)
    shutil.rmtree(session.checkpoint, ignore_errors=True)  # the finished model supersedes it
    return out


def _open_session(config: PretrainConfig, out: Path, files: list[Path]) -> _Session:
    """Load the base model, wrap it with the SMAE heads, and build the data stream, masker and optimiser."""
    from transformers import get_cosine_schedule_with_warmup  # lazy here and below: slow, only when training

    device = torch.device(config.device) if config.device else default_device()
    st, base_folder = load_sentence_transformer(config.base, device)
    transformer_path = transformer_folder(base_folder)
    encoder, tokenizer = st[0].auto_model, st.tokenizer
    shape = encoder.config
    pairs = config.pairs if config.method == "smae" else [(shape.num_hidden_layers, shape.hidden_size)]
    torch.manual_seed(config.seed)  # a new head's initialisation, then dropout (data and masks have own seeds)
    model = SMAE(encoder, pairs, decoder=config.method == "smae").to(device)
    heads_from = model.load_heads(read_head_weights([transformer_path, base_folder / HEADS]))
    max_length = min(config.max_length or st.max_seq_length or 512, shape.max_position_embeddings)
    masker = Masker(tokenizer.mask_token_id, len(tokenizer), config.encoder_mask,
                    config.decoder_mask if config.method == "smae" else None)
    optimizer = _optimizer(model, config)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * config.max_steps),
                                                config.max_steps)
    return _Session(config, out, files, st, base_folder, transformer_path, model, heads_from, max_length,
                    TokenWindows(files, tokenizer, max_length, seed=config.seed), masker, optimizer, scheduler,
                    device)


def _resume(session: _Session) -> Progress:
    """The progress of an interrupted run (model, optimiser, schedule and RNG restored), else a fresh one."""
    if (session.checkpoint / "state.pt").is_file():
        progress = _load_checkpoint(session.checkpoint, session.model, session.optimizer, session.scheduler)
        progress.resumed_at.append(progress.step)
        print(f"{session.out}: resuming from step {progress.step}", file=sys.stderr)
        return progress
    return Progress()


def _train_steps(session: _Session, progress: Progress) -> None:
    """Steps progress.step+1 .. max_steps: masked batch, loss, NaN-guarded update, log entries, checkpoints."""
    config, model, device = session.config, session.model, session.device
    tokenizer = session.st.tokenizer
    parameters = [p for group in session.optimizer.param_groups for p in group["params"]]
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    batches = session.windows.batches(config.batch_size, tokenizer.pad_token_id, skip=progress.step)
    bar = tqdm(total=config.max_steps, initial=progress.step, desc=f"{config.method} pre-training",
               unit="step", disable=None)
    model.train()
    started = time.perf_counter() - progress.seconds
    for step in range(progress.step + 1, config.max_steps + 1):
        input_ids, attention_mask, word_ids = next(batches)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        batch = session.masker(input_ids, attention_mask, word_ids, generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = model.terms(batch)
            loss = model.combine(terms)
        loss.backward()
        if not optimizer_step(session.optimizer, parameters, config.max_grad_norm):
            progress.skipped_steps.append(step)
            log.warning("step %d: the gradient has a NaN/inf; optimiser step skipped (%d so far)",
                        step, len(progress.skipped_steps))
        session.optimizer.zero_grad(set_to_none=True)
        lr = session.scheduler.get_last_lr()[0]  # the rate this step used
        session.scheduler.step()
        progress.pending.append({"loss": loss.item(), **{name: value.item() for name, value in terms.items()}})
        progress.step = step
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % config.log_steps == 0 or step == config.max_steps:
            _log_entry(progress, config, lr, time.perf_counter() - started, to_stderr=bool(bar.disable))
        if step % config.checkpoint_steps == 0 and step < config.max_steps:
            progress.seconds = time.perf_counter() - started
            _save_checkpoint(session.checkpoint, model, session.optimizer, session.scheduler, progress)
    bar.close()
    progress.seconds = time.perf_counter() - started


def _log_entry(progress: Progress, config: PretrainConfig, lr: float, seconds: float, *, to_stderr: bool) -> None:
    """Average the pending per-step losses into one log entry; without a terminal also print it as a line."""
    pending = progress.pending
    progress.losses.append({"step": progress.step, "lr": lr,
                            **{key: sum(entry[key] for entry in pending) / len(pending) for key in pending[0]}})
    progress.pending = []
    if to_stderr:  # no terminal (a log file): one line per log entry instead of a bar
        print(f"{config.method} step {progress.step}/{config.max_steps}: loss {progress.losses[-1]['loss']:.4f}, "
              f"lr {lr:.2e}, {seconds:.0f} s", file=sys.stderr, flush=True)


def _save_outputs(session: _Session, progress: Progress) -> None:
    """The sentence-transformers folder, the heads under smae_heads/, and the metadata that marks it finished."""
    from safetensors.torch import save_file

    config, out, model = session.config, session.out, session.model
    session.st.save(str(out), create_model_card=False)
    heads = out / HEADS
    heads.mkdir(exist_ok=True)
    save_file({key: value.detach().contiguous().cpu() for key, value in model.head_state_dict().items()},
              str(heads / "model.safetensors"))
    atomic_write(heads / "config.json", json.dumps({
        "method": config.method, "pairs": [list(cell) for cell in model.pairs],
        "decoder_layers": int(model.decoder is not None),
        "tied": "cls.predictions.decoder.weight is the encoder's word embeddings (not stored here)",
    }, indent=2))
    metadata = {
        "format": "elasticir-pretrained/1",
        "method": config.method,
        "created_at": datetime.now(UTC).isoformat(),
        "base": {"name": config.base, "path": str(session.base_folder),
                 "weights_sha256": weights_sha256(session.transformer_folder)},
        "heads": {"path": HEADS, "loaded_from_base": session.heads_from},
        "pairs": [list(cell) for cell in model.pairs],
        "data": {"specs": config.data, "files": [file_checksum(path) for path in session.files]},
        "steps": progress.step,
        "seed": config.seed,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "max_length": session.max_length,
        "config": config.numeric(),
        "losses": progress.losses,
        "skipped_nan_steps": progress.skipped_steps,
        "resumed_at": progress.resumed_at,
        "wall_seconds": progress.seconds,
        **provenance(),
    }
    atomic_write(out / METADATA, json.dumps(metadata, indent=2))
