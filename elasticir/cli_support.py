"""What every `elasticir` command shares: one-line errors and YAML configs overridden by flags.

Its own module so that command modules (elasticir.cli, elasticir.pretraining.cli) import it without importing
each other.
"""

from __future__ import annotations

import errno
import functools
import typing
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from elasticir.cells import parse_int_list, parse_pairs
from elasticir.errors import ElasticIRError

err = Console(stderr=True)

# OS failures that are the user's environment, not a bug: reported in one line naming the file
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG}


def print_error(message: str) -> None:
    """One `error:` line; the message is escaped, so a path like `[/data]` is printed, not read as markup."""
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)  # paths stay whole


def friendly_errors(command):
    """Print our errors (and disk-full / permission failures) as one clear message, not a traceback, and
    exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ElasticIRError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = exc.filename or "a file"
            print_error(f"cannot write or read {where}: {exc.strerror}; free space, fix the permissions or "
                        "choose another --out")
            raise typer.Exit(2) from None

    return wrapper


def _format_validation(exc, source: str) -> str:
    """Pydantic's errors as `key: problem (got value)`, one per line, naming the flag or YAML key."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(config)"
        got = error.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        if error["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown option (see --help for the options)")
        else:
            lines.append(f"  {key} (--{key.split('.')[0].replace('_', '-')}): {error['msg']}{shown}")
    return f"invalid configuration{source}:\n" + "\n".join(lines)


def _list_item_type(annotation) -> type | None:
    """int, str or tuple for a `list[...]` field (optional or not), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is list:
            (item,) = typing.get_args(candidate)
            return typing.get_origin(item) or item
    return None


def coerce_flag(kind: type, name: str, value):
    """A flag's text as the config field wants it, decided by the field's type, so every command turns flags
    into a config the same way: comma lists into lists (`1,2,6`, `a,b`, `2:32,6:384`), paths into strings."""
    if isinstance(value, Path):
        return str(value)
    field = kind.model_fields.get(name)
    if not isinstance(value, str) or field is None:
        return value
    item = _list_item_type(field.annotation)
    if item is int:
        return parse_int_list(value, name.replace("_", "-"))
    if item is tuple:
        return parse_pairs(value)
    if item is str:  # one rule for every comma list: "" is the empty list, an empty item ("a,,b", "a,") an error
        parts = [part.strip() for part in value.split(",")]
        if value.strip() and not all(parts):
            flag = "--" + name.replace("_", "-")
            raise ElasticIRError(f"{flag} {value!r}: item {parts.index('') + 1} of the comma list is empty; "
                                 f"write the list without empty items (e.g. {','.join(p for p in parts if p)})")
        return [part for part in parts if part]
    return value


def load_config(kind: type, config_file: Path | None, **flags):
    """A `kind` (pydantic config) from an optional YAML file, overridden by the flags that were given (converted
    by `coerce_flag`)."""
    from pydantic import ValidationError

    values = {}
    if config_file:
        try:
            values = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ElasticIRError(f"cannot read config {config_file}: {exc}") from None
        except UnicodeDecodeError:
            raise ElasticIRError(f"cannot read config {config_file}: not UTF-8 text") from None
        if not isinstance(values, dict):
            raise ElasticIRError(
                f"config {config_file} must be a YAML mapping of option: value (e.g. `layers: [1, 6]`), "
                f"got a {type(values).__name__}"
            )
    values.update({key: coerce_flag(kind, key, value) for key, value in flags.items() if value is not None})
    try:
        return kind(**values)
    except ValidationError as exc:
        raise ElasticIRError(_format_validation(exc, f" in {config_file}" if config_file else "")) from None
