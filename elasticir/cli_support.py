"""What every `elasticir` command shares: one-line errors and YAML configs overridden by flags.

Its own module so that command modules (elasticir.cli, elasticir.pretraining.cli) import it without importing
each other.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer
import yaml
from rich.console import Console

from elasticir.errors import ElasticIRError

err = Console(stderr=True)


def friendly_errors(command):
    """Print our errors as one clear message, not a traceback, and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ElasticIRError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)  # paths stay whole
            raise typer.Exit(2) from None

    return wrapper


def load_config(kind: type, config_file: Path | None, **flags):
    """A `kind` (pydantic config) from an optional YAML file, overridden by the flags that were given."""
    from pydantic import ValidationError

    values = {}
    if config_file:
        try:
            values = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ElasticIRError(f"cannot read config {config_file}: {exc}") from None
    values.update({key: value for key, value in flags.items() if value is not None})
    try:
        return kind(**values)
    except ValidationError as exc:
        raise ElasticIRError(f"invalid configuration{f' in {config_file}' if config_file else ''}:\n{exc}") from None
