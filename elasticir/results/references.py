"""Published numbers as checks: reference files (references/*.yaml) and the comparison of a leaderboard with them.

A reference is one number someone published for one (model, dataset, split, cell, metric): MTEB's per-model
results, pyserini's two-click BM25 reproductions, the Starbucks paper's tables, model cards. Each carries its
tolerance and where it was printed, so `elasticir check` can say for every cell that has one whether it matches,
differs (by how much, against that tolerance) or was not run, the way pyserini's 2CR pairs every run with its
expected scores. Reference files are data from others: a malformed one is refused with the file and entry named.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from elasticir.errors import ElasticIRError
from elasticir.results.schema import Leaderboard

DEFAULT_REFERENCES = Path(__file__).resolve().parents[2] / "references"
STATUSES = ("matches", "differs", "not run", "subset", "other weights")


class Reference(BaseModel):
    """One published number. `model` (a hub id, or the name a paper gives an unreleased model) or `baseline` (a
    non-elastic baseline's name, e.g. bm25-flat, checked against the leaderboard's baselines) says what scored
    it; `cell` is (layers, dims), absent for a baseline."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    revision: str | None = None
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    baseline: str | None = None
    dataset: str = Field(min_length=1)
    split: str = Field(min_length=1)
    cell: tuple[int, int] | None = None
    metric: str = Field(min_length=1)
    value: float
    tolerance: float = Field(ge=0)
    url: str = Field(min_length=1)
    where: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_subject(self) -> Reference:
        if (self.model is None) == (self.baseline is None):
            raise ValueError("give exactly one of model (a hub id or name) and baseline (e.g. bm25-flat)")
        if self.model is not None and self.cell is None:
            raise ValueError("a model's reference needs its cell: [layers, dims]")
        if not math.isfinite(self.value):
            raise ValueError(f"value {self.value} is not a finite number")
        return self

    def label(self) -> str:
        subject = self.baseline or self.model
        cell = f" L{self.cell[0]} d{self.cell[1]}" if self.cell else ""
        return f"{subject} {self.dataset}/{self.split}{cell} {self.metric}"


class ReferenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    description: str
    tolerance_rule: str
    references: list[Reference]


@dataclass(frozen=True)
class _Sourced:
    source: str
    reference: Reference


def _entry_of(exc: ValidationError, data: object) -> str:
    """'references[i] (what it names): field: problem' of the first validation error."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    where = ".".join(str(part) for part in loc) or "top level"
    if len(loc) >= 2 and loc[0] == "references" and isinstance(loc[1], int):
        entry = data["references"][loc[1]] if isinstance(data, dict) else None
        named = " ".join(str(entry.get(k)) for k in ("model", "baseline", "dataset", "metric")
                         if isinstance(entry, dict) and entry.get(k) is not None)
        field = ".".join(str(part) for part in loc[2:]) or "entry"
        where = f"references[{loc[1]}]{f' ({named})' if named else ''} {field}"
    return f"{where}: {error['msg']}"


def load_reference_file(path: Path) -> ReferenceFile:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ElasticIRError(f"{path}: no such reference file; give a references/*.yaml file or folder") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ElasticIRError(f"{path}: not a readable YAML reference file ({str(exc).splitlines()[0]}); "
                             "fix the file") from None
    try:
        return ReferenceFile.model_validate(data)
    except ValidationError as exc:
        raise ElasticIRError(f"{path}: {_entry_of(exc, data)}; fix that entry") from None


def load_references(path: str | Path | None = None) -> list[_Sourced]:
    """Every reference of a file, or of every *.yaml under a folder (default: the repository's references/)."""
    path = Path(path) if path is not None else DEFAULT_REFERENCES
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files:
        raise ElasticIRError(f"{path}/: no *.yaml reference files; give --references a file or a folder of them")
    return [_Sourced(f.source, ref) for f in map(load_reference_file, files) for ref in f.references]


# ----------------------------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class CheckResult:
    source: str
    reference: Reference
    status: str  # one of STATUSES
    observed: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.observed is None else self.observed - self.reference.value


def _model_ids(board: Leaderboard) -> set[str]:
    return {name for name in (board.model.hub_id, board.model.name) if name}


def _observed(board: Leaderboard, ref: Reference) -> float | None:
    """The leaderboard's value of the reference's cell (float32 points only) or baseline, None when not run."""
    if ref.baseline is not None:
        rows = [b.metrics for b in board.baselines if b.name == ref.baseline and b.dataset == ref.dataset]
    else:
        rows = [c.metrics for c in board.results if c.dataset == ref.dataset and (c.layer, c.dim) == ref.cell
                and c.precision in (None, "float32") and c.member is None]
    values = [m[ref.metric] for m in rows if ref.metric in m]
    return float(values[0]) if values else None


def _applies(board: Leaderboard, ref: Reference) -> bool:
    """A model's references apply to its runs; a baseline's to runs that ran that baseline somewhere."""
    if ref.baseline is not None:
        return any(b.name == ref.baseline for b in board.baselines)
    return ref.model in _model_ids(board)


def check_board(board: Leaderboard, references: list[_Sourced]) -> list[CheckResult]:
    """Every reference that applies to this leaderboard, with its status. A subset run is never compared with a
    full-data reference ("subset"); a reference pinned to other weights (sha256) is not compared either."""
    splits = {d.name: d.split for d in board.datasets}
    results = []
    for item in references:
        ref = item.reference
        if not _applies(board, ref):
            continue
        observed = _observed(board, ref) if splits.get(ref.dataset) == ref.split else None
        if observed is None:
            status = "not run"
        elif board.subset:
            status = "subset"
        elif ref.model and ref.weights_sha256 and ref.weights_sha256 != board.model.weights_sha256:
            status = "other weights"
        elif not math.isnan(observed) and abs(observed - ref.value) <= ref.tolerance + 1e-12:
            status = "matches"
        else:
            status = "differs"
        results.append(CheckResult(item.source, ref, status, observed))
    return results


def counts_by_source(results: list[CheckResult]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for result in results:
        counts.setdefault(result.source, Counter())[result.status] += 1
    return counts


def summary_line(results: list[CheckResult]) -> str:
    parts = []
    for source, counts in sorted(counts_by_source(results).items()):
        shown = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        parts.append(f"{source}: {shown}")
    return "; ".join(parts) if parts else "no reference applies to this model or its baselines"


def result_rows(results: list[CheckResult]) -> list[list[str]]:
    """[status, source, what, published, observed, delta / tolerance, where] per result, compared ones first."""
    order = {status: i for i, status in enumerate(("differs", "matches", "other weights", "subset", "not run"))}
    rows = []
    for r in sorted(results, key=lambda r: (order[r.status], r.source, r.reference.label())):
        ref = r.reference
        observed = "" if r.observed is None else f"{r.observed:.4f}"
        delta = "" if r.delta is None else f"{r.delta:+.4f} / {ref.tolerance:g}"
        rows.append([r.status, r.source, ref.label(), f"{ref.value:.4f}", observed, delta, f"{ref.url} ({ref.where})"])
    return rows


ROW_HEADER = ["status", "source", "reference", "published", "ours", "delta / tol", "published at"]


def references_html(boards: list[Leaderboard], labels: list[str], e=None) -> list[str]:
    """The leaderboard page's section: per run, every compared reference (matches / differs) and how many more
    were not run; nothing when no reference folder is there (an installed copy without the repository)."""
    e = e or html.escape
    if not DEFAULT_REFERENCES.is_dir():
        return []
    references = load_references()
    parts = ["<h2>Published references</h2>",
             ('<p class="note">Each run\'s cells against the numbers published for its model (references/*.yaml; '
             "<code>elasticir check RUN</code> lists every one).</p>")]
    for board, label in zip(boards, labels):
        results = check_board(board, references)
        compared = [row for row in result_rows(results) if row[0] in ("matches", "differs")]
        parts.append(f"<h3>{e(label)}: {e(summary_line(results))}</h3>")
        if compared:
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in ROW_HEADER[:-1])
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f'<td class="num">{e(c)}</td>' if 3 <= j <= 5 else f"<td>{e(c)}</td>"
                                       for j, c in enumerate(row[:-1])) + "</tr>" for row in compared]
            parts.append("</tbody></table>")
    return parts
