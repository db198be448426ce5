"""`elasticir pretrain`: SMAE or plain MLM pre-training on raw text (a typer sub-app and its command).

Kept apart from `elasticir.cli` (which registers `pretrain_command`) so that importing one never imports the
other half-initialised; the error handling is the same rule: an ElasticIRError is one line and exit code 2.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from elasticir.cells import parse_pairs
from elasticir.errors import ElasticIRError

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)


def _one_line_errors(command):
    """An ElasticIRError prints as `error: <message>` on stderr and exits 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ElasticIRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _config(config_file: Path | None, **flags):
    """A PretrainConfig from an optional YAML file, overridden by the flags that were given."""
    import yaml
    from pydantic import ValidationError

    from elasticir.pretraining.pretrain import PretrainConfig

    values = {}
    if config_file:
        try:
            values = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ElasticIRError(f"cannot read config {config_file}: {exc}") from None
    values.update({key: value for key, value in flags.items() if value is not None})
    try:
        return PretrainConfig(**values)
    except ValidationError as exc:
        raise ElasticIRError(f"invalid configuration{f' in {config_file}' if config_file else ''}:\n{exc}") from None


@app.command("pretrain")
@_one_line_errors
def pretrain_command(
    method: Annotated[str | None, typer.Option(help="smae (Starbucks-MAE) or mlm (plain MLM; default smae).")] = None,
    base: Annotated[str | None, typer.Option(help="Model to start from: hub id or local folder.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Comma list of raw-text files: .jsonl(.gz) with `text` (BEIR corpora: title + text) or .txt(.gz), "
        "one document per line; a folder with corpus.jsonl; relative paths also resolve under the data root.")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (a sentence-transformers model).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps (default 1000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step (default 32).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate, cosine decay (default 1e-4).")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed of data order, windows, masks and dropout.")] = None,
    pairs: Annotated[str | None, typer.Option(
        help="smae pair list LAYER:DIM,... (default derived from the model shape).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's own).")] = None,
    checkpoint_steps: Annotated[int | None, typer.Option(help="Save a resumable checkpoint every N steps.")]
    = None,
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: $ELASTICIR_DATA).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when present).")] = None,
    recompute: Annotated[bool | None, typer.Option("--recompute", help="Delete --out and train again.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with any of these options (flags win).")] = None,
) -> None:
    """Pre-train an encoder with SMAE or MLM; an interrupted run resumes from its checkpoint when re-run."""
    from elasticir.pretraining.pretrain import pretrain

    folder = pretrain(_config(
        config, method=method, base=base,
        data=[part.strip() for part in data.split(",") if part.strip()] if data else None,
        out=str(out) if out else None, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed,
        pairs=[tuple(cell) for cell in parse_pairs(pairs)] if pairs else None, max_length=max_length,
        checkpoint_steps=checkpoint_steps, data_root=str(data_root) if data_root else None, device=device,
        recompute=recompute))
    typer.echo(f"model: {folder}  (fine-tune it: elasticir train --base {folder}; "
               f"evaluate it: elasticir run --model {folder})")
