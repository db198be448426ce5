"""Output folders that long jobs (training, pre-training) claim: only a folder elasticir made is ever deleted.

A job records the settings that change its result in the folder it claims, beside a marker file; a re-run with
the same settings resumes or reuses it, one with different settings is refused, and `--recompute` deletes the
folder only when the marker says elasticir made it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write

OUTPUT_MARKER = ".elasticir-output.json"  # in every output folder elasticir made: only such a folder is deleted


def _made_by_elasticir(folder: Path) -> bool:
    """Whether `folder` carries the marker elasticir writes into the output folders it claims."""
    try:
        return json.loads((Path(folder) / OUTPUT_MARKER).read_text()).get("made_by") == "elasticir"
    except (OSError, ValueError, AttributeError):
        return False


def claim_output(out: Path, numeric: dict, *, started: str, finished: str, what: str,
                 recompute: bool = False) -> str:
    """Claim `out` for a long job (training, pre-training) described by `numeric`, the keys that change its
    result. Returns "finished" when it already holds this exact finished job (its `finished` file exists), so
    the caller reuses it; "resume" when it holds this job unfinished; "new" after recording `numeric` in
    `started` and the output marker (OUTPUT_MARKER) in a new or empty folder. A folder holding a different job,
    or anything else, is refused rather than mixed; `recompute` deletes it first, but only a folder elasticir
    made (one with the marker): a folder of the user's is refused with the same message as without it."""
    out = Path(out)
    refused = f"{out} exists and is not an elasticir {what} folder; choose another --out"
    if out.exists() and not out.is_dir():
        raise ElasticIRError(f"--out {out} is a file, not a folder; choose another --out")
    if recompute and out.is_symlink():
        raise ElasticIRError(f"--out {out} is a symbolic link; --recompute deletes only a real folder elasticir "
                             f"made: pass the folder it points to ({out.resolve()}) as --out")
    if recompute and out.exists() and any(out.iterdir()):
        if not _made_by_elasticir(out):
            raise ElasticIRError(f"{refused} (--recompute deletes only a folder elasticir made, one with "
                                 f"{OUTPUT_MARKER})")
        shutil.rmtree(out)
    if (out / started).is_file():
        previous = json.loads((out / started).read_text())
        if previous != numeric:
            changed = sorted(k for k in previous.keys() | numeric.keys() if previous.get(k) != numeric.get(k))
            recompute_hint = (", or pass --recompute to delete it and start again" if _made_by_elasticir(out)
                              else f" (it lacks {OUTPUT_MARKER}, so --recompute will not delete it)")
            raise ElasticIRError(
                f"{out} holds a {what} run with a different config (differs in: {', '.join(changed)}). "
                f"Fix: choose another --out{recompute_hint}"
            )
        return "finished" if (out / finished).is_file() else "resume"
    if out.exists() and any(out.iterdir()):
        raise ElasticIRError(refused)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / OUTPUT_MARKER, json.dumps({"made_by": "elasticir", "what": what, "created_folder": created},
                                                 indent=2))
    atomic_write(out / started, json.dumps(numeric, indent=2))
    return "new"


def release_output(out: Path) -> None:
    """Give back a claimed folder whose job failed before it made anything resumable, so a corrected command
    can claim it: the folder goes if elasticir created it (all in it is elasticir's), else it is emptied (it
    was empty when claimed). A folder without the marker is left alone."""
    out = Path(out)
    if not _made_by_elasticir(out):
        return
    created = json.loads((out / OUTPUT_MARKER).read_text()).get("created_folder", False)
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
