"""What every `elasticir` command shares: one-line errors, YAML configs overridden by flags, and options
generated from a config's fields.

Its own module so that command modules (elasticir.cli, elasticir.pretraining.cli) import it without importing
each other.
"""

from __future__ import annotations

import errno
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from elasticir.cells import parse_int_list, parse_pairs
from elasticir.config import group_type, leaf_fields
from elasticir.errors import ElasticIRError

err = Console(stderr=True)

# OS failures that are the user's environment, not a bug: reported in one line naming the file
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG}


def _print_error(message: str) -> None:
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
            _print_error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = exc.filename or "a file"
            _print_error(f"cannot write or read {where}: {exc.strerror}; free space, fix the permissions or "
                        "choose another --out")
            raise typer.Exit(2) from None

    return wrapper


def _flag_of(name: str, field) -> str:
    """The command-line flag of a config field: its declared one, else its name with dashes."""
    declared = (field.json_schema_extra or {}).get("flags") if field is not None else None
    return declared[0] if declared else "--" + name.replace("_", "-")


def _leaf_loc(kind: type, loc: tuple) -> tuple:
    """A pydantic error location without the groups the field sits in: what the user wrote (flat)."""
    while loc and (field := kind.model_fields.get(str(loc[0]))) is not None and (group := group_type(field)):
        kind, loc = group, loc[1:]
    return loc


def _format_validation(exc, source: str, kind: type) -> str:
    """Pydantic's errors as `--flag value: problem`, one per line, naming the flag or YAML key; a single error
    without a file is the one line itself."""
    fields, lines = leaf_fields(kind), []
    for error in exc.errors():
        loc = _leaf_loc(kind, error["loc"])
        key = ".".join(str(part) for part in loc) or "(config)"
        flag = _flag_of(str(loc[0]), fields.get(str(loc[0]))) if loc else ""
        got = error.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown option (see --help for the options)")
        elif error["type"] == "greater_than_equal" and loc:
            bound = error["ctx"]["ge"]
            lines.append(f"{flag} {got!r}: must be {'a whole number ' if isinstance(bound, int) else ''}>= {bound}")
        else:
            lines.append(f"{key} ({flag}): {error['msg']}{shown}" if flag else f"{key}: {error['msg']}{shown}")
    if len(lines) == 1 and not source:
        return lines[0]
    return f"invalid configuration{source}:\n" + "\n".join(f"  {line}" for line in lines)


def _list_item_type(annotation) -> type | None:
    """int, str or tuple for a `list[...]` field (optional or not), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is list:
            (item,) = typing.get_args(candidate)
            return typing.get_origin(item) or item
    return None


def _coerce_flag(kind: type, name: str, value):
    """A flag's text as the config field wants it, decided by the field's type, so every command turns flags
    into a config the same way: comma lists into lists (`1,2,6`, `a,b`, `2:32,6:384`), paths into strings."""
    if isinstance(value, Path):
        return str(value)
    field = leaf_fields(kind).get(name)
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
    by `_coerce_flag`)."""

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
    values.update({key: _coerce_flag(kind, key, value) for key, value in flags.items() if value is not None})
    try:
        return kind(**values)
    except ValidationError as exc:
        raise ElasticIRError(_format_validation(exc, f" in {config_file}" if config_file else "", kind)) from None


# --- options generated from a config ----------------------------------------------------------------------------

def _cli_type(annotation) -> type:
    """What the option parses: int, float and bool as such; everything else (lists, choices) as text, which
    `_coerce_flag` and the config's own validation turn into the field's value."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_optional(annotation) else [annotation]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, bool) else str


def _is_optional(annotation) -> bool:
    return type(None) in typing.get_args(annotation) and typing.get_origin(annotation) is not typing.Literal


def _decls(name: str, field) -> list[str]:
    """The flags of a field: declared, else from its name; a switch that is on by default (or unset) also
    gets its --no- form (--bm25/--no-bm25), one that is off by default is a plain flag (--recompute)."""
    declared = (field.json_schema_extra or {}).get("flags")
    if declared:
        return list(declared)
    flag = "--" + name.replace("_", "-")
    if _cli_type(field.annotation) is bool and field.default is not False:
        return [f"{flag}/--no-{flag[2:]}"]
    return [flag]


def config_options(kind: type, *, without: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One option per field of `kind`, its groups walked to any depth, skipping the groups and fields named in
    `without` and fields declared `cli=False`. Every option defaults to None (not given): the YAML file's value
    or the field's default then applies."""
    params = []
    for name, field in kind.model_fields.items():
        if name in without or (field.json_schema_extra or {}).get("cli") is False:
            continue
        if group := group_type(field):
            params += config_options(group, without=without)
            continue
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=_annotation(name, field)))
    return params


def _annotation(name: str, field):
    """The option's type and flags; its help escaped, since typer reads help as rich markup (`[distributed]`
    and `MODEL[@L:D]` are text)."""
    return Annotated[_cli_type(field.annotation) | None,
                     typer.Option(*_decls(name, field), help=escape(field.description or ""))]


def field_option(kind: type, name: str):
    """The generated option of one config field, as the annotation of a hand-written command's parameter
    (`data_root: field_option(RunConfig, "data_root") = None`): the same flag and help wherever it is used."""
    return _annotation(name, leaf_fields(kind)[name])


def extra_option(name: str, annotation, default=None) -> inspect.Parameter:
    """A command's own option (not a config field), e.g. `extra_option("smoke", Annotated[bool, typer.Option(...)])`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_options(*groups: list[inspect.Parameter]):
    """Give a `def command(**flags)` the options in `groups` (lists of parameters), in order: typer reads a
    command's options from its signature, so the generated ones read as if written out."""

    def decorate(command):
        command.__signature__ = inspect.Signature([p for group in groups for p in group])
        return command

    return decorate
