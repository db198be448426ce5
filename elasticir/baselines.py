"""Baseline grids: one run directory whose cells come from different models (separately trained models, model
families such as the compact BERTs), compared cell by cell with an elastic model.

A SPEC names the baseline in one of three forms:
  - a run directory (or leaderboard JSON): used as it is;
  - a `train-separate` output folder: its `separate.json` (or, for older folders, each model's `elastic.json`)
    says which cell each model serves; an `exact` model serves its (L, d), a `full-width` model every dim of its
    layer row;
  - a YAML file mapping cells to models: `"4:256": google/bert_uncased_L-4_H-256_A-4`, a folder (relative to
    the YAML file) or a name under $ELASTICIR_MODELS, optionally `model@L:d` to take another cell of that model.

Each member model is evaluated by the ordinary runner (same datasets, subset, index and settings as the
elastic run, its own run directory, so finished member evaluations are reused by their content key), and the
cells it serves are copied, with their per-pair / per-query files, into one assembled run directory whose
leaderboard records per cell the member's name, weights sha256 and own shape.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError
from rich.console import Console

from elasticir.cells import Cell, cell_range_error, default_dims
from elasticir.config import RunConfig
from elasticir.encoders.cost import EncoderShape
from elasticir.encoders.model import resolve_model_path, transformer_folder
from elasticir.errors import ElasticIRError
from elasticir.io import atomic_write
from elasticir.progress import stage
from elasticir.report.rundir import read_csv_any
from elasticir.results.assemble import write_leaderboard
from elasticir.results.schema import Leaderboard, load_leaderboard
from elasticir.results.store import RunFolder, run_id
from elasticir.runner import run

MANIFEST = "separate.json"


@dataclass(frozen=True)
class Member:
    """One grid cell of a baseline and the model (and that model's own cell) that fills it."""

    cell: Cell
    model: str
    source: Cell
    where: str  # for messages: "file.yaml line 3 (key "4:256")" or the model folder


@dataclass
class Spec:
    """A parsed baseline SPEC: a finished run (`run`), or members to evaluate (`grid`)."""

    path: Path
    kind: str  # "run", "separate" or "yaml"
    members: list[Member] = field(default_factory=list)
    rows: list[tuple[int, str, str]] = field(default_factory=list)  # full-width: (layer, model, where)

    @property
    def name(self) -> str:
        """The baseline's label in reports: the YAML's stem, or "separate <folder>" for train-separate."""
        if self.kind == "yaml" or "separate" in self.path.name:
            return self.path.stem
        return f"separate {self.path.name}"

    def expand(self, dims: list[int] | None) -> list[Member]:
        """Every member, full-width rows filled at `dims` (default: the model's default dims) up to its width."""
        members = list(self.members)
        for layer, model, where in self.rows:
            hidden = _member_shape(model, where).hidden_size
            for dim in [d for d in (dims or default_dims(hidden)) if d <= hidden]:
                members.append(Member(Cell(layer, dim), model, Cell(layer, dim), where))
        _check_unique(members)
        return members


@dataclass
class Outcome:
    """The assembled baseline run directory, and which member datasets were evaluated now or reused."""

    dir: Path
    evaluated: list[str]
    reused: list[str]

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.dir)


# --- parsing ----------------------------------------------------------------------------------------------------
def parse_spec(spec: str | Path) -> Spec:
    """Read a SPEC (run directory, leaderboard JSON, train-separate folder, or YAML); errors name the file/line."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        return Spec(path, "run")
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _parse_yaml(path)
    if path.is_dir() and RunFolder(path).is_run():
        return Spec(path, "run")
    if path.is_dir():
        return _parse_separate(path)
    raise ElasticIRError(f"--baseline {spec}: not a run directory, leaderboard JSON, train-separate folder or "
                         "baseline YAML (.yaml/.yml); give one of these")


def _member_shape(model: str, where: str):
    """The member's EncoderShape from its config.json (no weights loaded); an error naming `where`."""

    try:
        folder = transformer_folder(resolve_model_path(model)[0])
    except ElasticIRError as exc:
        raise ElasticIRError(f"{where}: cannot load model {model!r}: {exc}") from None
    shape = EncoderShape.from_folder(folder)
    if shape is None:
        raise ElasticIRError(f"{where}: {model!r} ({folder}) has no config.json with hidden_size and "
                             "num_hidden_layers; is it a transformer encoder folder?")
    return shape


def _check_member(member: Member) -> None:
    shape = _member_shape(member.model, member.where)
    if message := cell_range_error(*member.source, shape.num_layers, shape.hidden_size):
        raise ElasticIRError(f"{member.where}: cell {member.source} is outside {member.model!r} "
                             f"({shape.num_layers} layers x {shape.hidden_size} dims): {message}. Fix: map the cell "
                             "to a model that has it, or take one of its cells with MODEL@LAYER:DIM")


def _check_unique(members: list[Member]) -> None:
    seen: dict[Cell, Member] = {}
    for member in members:
        if member.cell in seen:
            raise ElasticIRError(f"{member.where}: cell {member.cell} already has a member "
                                 f"({seen[member.cell].model!r}, {seen[member.cell].where}); give each cell one model")
        seen[member.cell] = member


def _parse_yaml(path: Path) -> Spec:
    """The mapping `"L:d": model[@L:d]`, with YAML line numbers (yaml.compose keeps every node's position)."""
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        raise ElasticIRError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise ElasticIRError(f"{path}: a baseline YAML maps cells to models, e.g. \"4:256\": MODEL; found no mapping")
    members = []
    for key, value in root.value:
        where = f"{path} line {key.start_mark.line + 1} (key {key.value!r})"
        try:
            cell = Cell.parse(key.value)
        except ElasticIRError as exc:
            raise ElasticIRError(f"{where}: {exc}") from None
        if cell.layer < 1 or cell.dim < 1:  # no model has it: layer 0 is the embedding output, not a cell
            raise ElasticIRError(f"{where}: cell {cell} is not a grid cell: "
                                 f"{cell_range_error(*cell, max(cell.layer, 1), max(cell.dim, 1))}. Fix: key the "
                                 "cell as LAYER:DIM with layer >= 1 and dim >= 1, e.g. \"4:256\"")
        if not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
            raise ElasticIRError(f"{where}: the value must be one model (hub id, folder or name), optionally MODEL@L:D")
        model, source = _split_source(str(value.value).strip(), where)
        local = path.parent / model
        members.append(Member(cell, str(local.resolve()) if local.is_dir() else model, source or cell, where))
    _check_unique(members)
    for member in members:
        _check_member(member)
    return Spec(path, "yaml", members)


def _split_source(text: str, where: str) -> tuple[str, Cell | None]:
    """MODEL@L:D -> (MODEL, Cell); MODEL -> (MODEL, None). A hub id never contains '@'."""
    if "@" not in text:
        return text, None
    model, _, cell = text.rpartition("@")
    try:
        return model, Cell.parse(cell)
    except ElasticIRError as exc:
        raise ElasticIRError(f"{where}: {text!r}: {exc} (after '@')") from None


def _parse_separate(folder: Path) -> Spec:
    """A train-separate folder: the manifest, else each sub-folder's elastic.json (folders written before the
    manifest existed)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        entries = json.loads(manifest.read_text())["members"]
        variant = json.loads(manifest.read_text())["variant"]
    else:
        entries, variant = [], None
        for sub in sorted(p for p in folder.iterdir() if (p / "elastic.json").is_file()):
            trained = json.loads((sub / "elastic.json").read_text())["trained_cells"]
            full_width = sub.name.endswith("-full-width")
            entries.append({"folder": sub.name, "cell": trained[0]})
            variant = "full-width" if full_width else "exact"
    if not entries:
        raise ElasticIRError(f"{folder}: no {MANIFEST} and no model folders with elastic.json; is it a "
                             "train-separate output folder (or a run directory without leaderboard.json)?")
    spec = Spec(folder, "separate")
    for entry in entries:
        model, cell = str((folder / entry["folder"]).resolve()), Cell(*entry["cell"])
        if not (folder / entry["folder"]).is_dir():
            raise ElasticIRError(f"{manifest}: member folder {entry['folder']} is missing; train it again with "
                                 "elasticir train-separate")
        if variant == "full-width":
            spec.rows.append((cell.layer, model, str(folder / entry["folder"])))
        else:
            spec.members.append(Member(cell, model, cell, str(folder / entry["folder"])))
    _check_unique(spec.members)
    return spec


def widen_dims(config, spec: Spec | None, encoder):
    """`config` with a grid that covers every cell of the baseline, checked before any encoding.

    A baseline cell the elastic model lacks (a layer or dim beyond its shape) has nothing to compare with: one
    error naming the YAML line / member folder. Without --dims the baseline members' widths are added to the
    default dims (and an elasticir-trained model's own widths, as the runner adds them); explicit --dims or
    --layers that leave a baseline cell out are widened to include it, with a note."""
    if spec is None or spec.kind == "run":
        return config
    num_layers, hidden = encoder.num_layers, encoder.hidden_size
    _check_cells_fit(spec, num_layers, hidden, f"the elastic model {encoder.info.name} ({num_layers} layers x "
                    f"{hidden} dims)", f"map only cells the elastic model has (layers 1..{num_layers}, dims "
                    f"1..{hidden})")
    cells = [m.cell for m in spec.members]
    update, added = {}, []
    if config.dims is None and cells:
        trained = {c.dim for c in encoder.info.trained_pairs or []}
        update["dims"] = sorted(set(default_dims(hidden)) | trained | {c.dim for c in cells})
    elif config.dims is not None and (extra := sorted({c.dim for c in cells} - set(config.dims))):
        update["dims"] = sorted(set(config.dims) | set(extra))
        added.append(f"dims {','.join(map(str, extra))} (--dims {','.join(map(str, config.dims))})")
    wanted_layers = {c.layer for c in cells} | {layer for layer, _, _ in spec.rows}
    if config.layers is not None and (extra := sorted(wanted_layers - set(config.layers))):
        update["layers"] = sorted(set(config.layers) | set(extra))
        added.append(f"layers {','.join(map(str, extra))} (--layers {','.join(map(str, config.layers))})")
    if added:
        _note(f"note: the baseline {spec.path} has cells outside the grid; added {' and '.join(added)} so every "
              "baseline cell has an elastic cell to compare with")
    return config.model_copy(update=update) if update else config


def _check_cells_fit(spec: Spec, num_layers: int, hidden: int, what: str, fix: str,
                    layers=None, dims=None) -> None:
    """Every baseline cell (and full-width row) within `num_layers` x `hidden` and, when given, within the grid's
    `layers` / `dims`; else one error naming the YAML line or member folder of the first cell that is not."""
    for member in spec.members:
        message = cell_range_error(*member.cell, num_layers, hidden)
        if message is None and layers is not None and member.cell.layer not in layers:
            message = f"layer {member.cell.layer} is not in the grid's layers {list(layers)}"
        if message is None and dims is not None and member.cell.dim not in dims:
            message = f"dim {member.cell.dim} is not in the grid's dims {list(dims)}"
        if message:
            raise ElasticIRError(f"{member.where}: baseline cell {member.cell} is outside {what}, so it has nothing "
                                 f"to compare with: {message}. Fix: {fix}")
    for layer, _, where in spec.rows:
        if not 1 <= layer <= num_layers or (layers is not None and layer not in layers):
            raise ElasticIRError(f"{where}: baseline layer row {layer} is outside {what}, so it has nothing to "
                                 f"compare with. Fix: {fix}")


def _note(text: str) -> None:
    Console(stderr=True, soft_wrap=True, markup=False, highlight=False).print(text)


# --- evaluation -------------------------------------------------------------------------------------------------
def run_with_baseline(config, encoder=None):
    """runner.run, then the baseline `config.baseline` names, evaluated with the run's protocol on its grid.

    The SPEC is parsed first (a broken one stops before any work) and the elastic grid is widened to the
    baseline's cells once the model is known; the outcome's `baseline` is the assembled baseline directory."""

    spec = parse_spec(config.baseline) if config.baseline else None
    widened = {}

    def widen(config, encoder):
        widened["config"] = widen_dims(config, spec, encoder)
        return widened["config"]

    outcome = run(config, encoder, widen=widen)
    if outcome is not None and spec is not None:
        outcome.baseline = evaluate(spec, widened["config"], list(outcome.leaderboard.grid.dims))
    return outcome


def evaluate(spec: Spec, config, dims: list[int] | None = None) -> Outcome:
    """Evaluate what is missing of every member with `config`'s protocol and assemble the baseline run directory.

    A run-directory SPEC is returned as it is. `dims`: the elastic grid's dims (full-width rows fill them)."""

    if spec.kind == "run":
        return Outcome(spec.path, [], [])
    members = spec.expand(dims)
    by_model: dict[str, list[Member]] = {}
    for member in members:
        by_model.setdefault(member.model, []).append(member)
    evaluated, reused, outcomes = [], [], {}
    for model, served in by_model.items():
        sources = sorted({m.source for m in served})
        stage(f"baseline member {model}: cells {' '.join(map(str, sources))}")
        member_config = config.model_copy(update={
            "model": model, "layers": sorted({c.layer for c in sources}), "dims": sorted({c.dim for c in sources}),
            "pairs": [tuple(c) for c in sources], "bm25": False, "pooling": None, "baseline": None,
            # members are compared at float32 cells: precision points and funnels belong to the elastic run
            "precisions": ["float32"], "funnels": None, "query_layers": None, "doc_layers": None})
        outcome = run(member_config)
        outcomes[model] = outcome
        names = [d.name for d in outcome.leaderboard.datasets]
        reused += [f"{Path(model).name} {d}" for d in names if d in outcome.skipped]
        evaluated += [f"{Path(model).name} {d}" for d in names if d not in outcome.skipped]
    directory = assemble(spec, members, outcomes, config)
    return Outcome(directory, evaluated, reused)


def _member_record(member: Member, board: Leaderboard) -> dict:

    shape = EncoderShape.from_folder(member.model) or _member_shape(member.model, member.where)
    model = board.model
    return {"name": model.name, "path": model.path, "hub_id": model.hub_id, "weights_sha256": model.weights_sha256,
            "num_layers": model.num_layers, "hidden_size": model.hidden_size,
            "intermediate_size": shape.intermediate_size, "vocab_size": shape.vocab_size, "pooling": model.pooling,
            "source": tuple(member.source), "run_id": board.run_id}


def assemble(spec: Spec, members: list[Member], outcomes: dict, config) -> Path:
    """One run directory from the members' run directories: each grid cell's rows, per-query values and
    per-pair cosines are the member's at its source cell, relabelled to the grid cell."""
    boards = {model: outcome.leaderboard for model, outcome in outcomes.items()}
    first = boards[members[0].model]
    identity = [(tuple(m.cell), tuple(m.source), boards[m.model].model.weights_sha256, boards[m.model].run_id)
                for m in sorted(members, key=lambda m: m.cell)]
    combined = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    folder = RunFolder(Path(config.out) / run_id(f"baseline-{spec.name}", {"members": identity}))
    directory = folder.dir
    stage(f"baseline grid: assembling {len(members)} cells into {directory}")
    wanted = set(config.sts) | set(config.retrieval)  # a member folder may hold other datasets of earlier runs
    datasets = [d for d in first.datasets if d.name in wanted]
    for record in datasets:
        _check_same_data(record, boards, spec)
        part = folder.part(record.task, record.name)
        part.dir.mkdir(parents=True, exist_ok=True)
        if record.task == "sts":
            _assemble_pair_scores(members, outcomes, record.name, part)
        else:
            _assemble_per_query(members, outcomes, record.name, part)
    table, results = _assemble_cells(members, outcomes, boards, wanted)
    cells = sorted({m.cell for m in members})
    write_leaderboard(
        folder, table, run_id=directory.name,
        model={"name": spec.name, "path": str(spec.path), "hub_id": None, "revision": None,
               "weights_sha256": combined, "num_layers": max(c.layer for c in cells),
               "hidden_size": max(c.dim for c in cells), "pooling": first.model.pooling,
               "normalize": first.model.normalize, "max_length": first.model.max_length, "dtype": first.model.dtype,
               "device": first.model.device, "training": {"baseline_grid": spec.kind}},
        config=config.model_dump(mode="json", exclude={"baseline"}) | {
            "model": None, "sts": [d.name for d in datasets if d.task == "sts"],
            "retrieval": [d.name for d in datasets if d.task == "retrieval"],
            "baseline_grid": {"spec": str(spec.path), "kind": spec.kind, "members": [
                {"cell": list(m.cell), "model": m.model, "source": list(m.source),
                 "weights_sha256": boards[m.model].model.weights_sha256, "hub_id": boards[m.model].model.hub_id,
                 "name": boards[m.model].model.name} for m in members]},
            "numeric": {"weights_sha256": combined, "members": [list(map(list, i[:2])) + [i[2]] for i in identity]}},
        grid={"layers": sorted({c.layer for c in cells}), "dims": sorted({c.dim for c in cells}),
              "pairs": [tuple(c) for c in cells], "cells": [tuple(c) for c in cells]},
        datasets=datasets, main_metric=first.main_metric, results=results,
        notes=[f"baseline grid from {spec.path} ({spec.kind}): cell {m.cell} = {boards[m.model].model.name} "
               f"(sha256 {boards[m.model].model.weights_sha256[:12]}, {boards[m.model].model.num_layers} x "
               f"{boards[m.model].model.hidden_size}) at its cell {m.source}" for m in members],
        subset=first.subset, seed=config.seed,
        timings=[t for b in boards.values() for t in b.timings if t.stage != "total"])
    return directory


def _check_same_data(record, boards: dict, spec: Spec) -> None:
    """Every member read the same files (sha256) for this dataset: otherwise cells would not be comparable."""
    wanted = [f.sha256 for f in record.files]
    for model, board in boards.items():
        other = next((d for d in board.datasets if d.name == record.name), None)
        if other is None or [f.sha256 for f in other.files] != wanted or other.n_examples != record.n_examples:
            raise ElasticIRError(f"baseline {spec.path}: member {model} was evaluated on other data for "
                                 f"{record.name}; re-run with the same --data-root and limits")


def _assemble_cells(members, outcomes, boards, wanted: set[str]) -> tuple[pd.DataFrame, list[dict]]:
    frames, results = [], []
    for member in members:
        board = boards[member.model]
        record = _member_record(member, board)
        latency = {e.layer: e.ms_per_text for e in board.encode_latency}
        rows = outcomes[member.model].cells
        rows = rows[(rows.layer == member.source.layer) & (rows.dim == member.source.dim)
                    & rows.dataset.isin(wanted)].copy()
        rows["layer"], rows["dim"] = member.cell.layer, member.cell.dim
        frames.append(rows)
        costs = {"encode_ms_per_text": latency[member.source.layer]} if member.source.layer in latency else {}
        for cell in board.results:
            if (cell.layer, cell.dim) == tuple(member.source) and cell.dataset in wanted:
                results.append({"dataset": cell.dataset, "layer": member.cell.layer, "dim": member.cell.dim,
                                "metrics": cell.metrics, "costs": {**cell.costs, **costs}, "member": record})
    table = pd.concat(frames, ignore_index=True).sort_values(["task", "dataset", "layer", "dim"], kind="stable")
    return table, results


def _assemble_pair_scores(members, outcomes, dataset: str, part) -> None:
    cosines, gold = [], None
    for member in members:
        path = outcomes[member.model].folder.part("sts", dataset).pair_scores
        with np.load(path) as data:
            cells = [tuple(int(v) for v in c) for c in data["cells"]]
            cosines.append(data["cosines"][cells.index(tuple(member.source))])
            if gold is not None and not np.allclose(gold, data["gold"]):
                raise ElasticIRError(f"{path}: gold scores differ from the other members'; same data expected")
            gold = data["gold"]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, cosines=np.stack(cosines), gold=gold,
                        cells=np.array([tuple(m.cell) for m in members], dtype=np.int64))
    atomic_write(part.pair_scores, buffer.getvalue())


def _assemble_per_query(members, outcomes, dataset: str, part) -> None:

    frames = []
    for member in members:
        frame = read_csv_any(outcomes[member.model].folder.part("retrieval", dataset).per_query)
        frame = frame[(frame.layer == member.source.layer) & (frame.dim == member.source.dim)].copy()
        frame["layer"], frame["dim"] = member.cell.layer, member.cell.dim
        frames.append(frame)
    atomic_write(part.per_query, gzip.compress(pd.concat(frames).to_csv(index=False).encode()))


# --- report and reproduce ---------------------------------------------------------------------------------------
def baseline_for_report(spec: str | Path, run_dir: str | Path) -> Path:
    """The baseline directory for `report RUN --baseline SPEC`: a run as is; a grid evaluated (what is missing)
    with the recorded protocol of RUN, into RUN's parent folder."""

    parsed = parse_spec(spec)
    if parsed.kind == "run":
        return parsed.path
    board = load_leaderboard(RunFolder(run_dir).leaderboard)
    _check_cells_fit(parsed, board.model.num_layers, board.model.hidden_size,
                    f"the run {run_dir} (layers {list(board.grid.layers)}, dims {list(board.grid.dims)})",
                    "re-run the elastic model with --layers/--dims covering the baseline's cells (or run it with "
                    "--baseline, which widens its grid), or drop the cell from the baseline",
                    layers=board.grid.layers, dims=board.grid.dims)
    values = {k: v for k, v in board.config.items() if k not in ("numeric", "baseline", "baseline_grid")}
    values["out"] = str(Path(run_dir).parent)
    return evaluate(parsed, run_config(RunConfig, values, run_dir), list(board.grid.dims)).dir


def run_config(kind, values: dict, where) -> object:
    """The recorded config as a RunConfig, or one error naming the leaderboard it came from."""

    try:
        return kind(**values)
    except ValidationError as exc:
        raise ElasticIRError(f"{where}: the recorded config is not a valid run config for this elasticir "
                             f"(re-run it with this version):\n{exc}") from None
