"""Re-run a leaderboard on this machine and list every metric that moved.

`reproduce(path)` finds the model by its identity (hub id and weights sha256, not the path of the machine that
ran it), re-runs the recorded config into `results/reproduce/` (resumable like any run: an interrupted
reproduce picks up its finished datasets; nothing temporary is left behind), and lists every metric, of every
cell and baseline, that moved by more than the tolerance; changed weights or data files are flagged
explicitly. Costs and timings are machine-dependent and not compared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from pydantic import ValidationError

from elasticir.baselines import Member, Spec, evaluate, run_config
from elasticir.cells import Cell
from elasticir.config import RunConfig
from elasticir.encoders.model import resolve_model_path, weights_sha256
from elasticir.errors import ElasticIRError
from elasticir.model_lookup import models_root, root_candidates
from elasticir.progress import stage
from elasticir.results.schema import Leaderboard, load_leaderboard
from elasticir.results.store import RunFolder, resolve_path
from elasticir.runner import run

DEFAULT_OUT = Path("results") / "reproduce"


@dataclass(frozen=True)
class Difference:
    """One way a re-run differs from the recorded leaderboard.

    kind: "metric" (a cell's metric; a quantised point's metric is named "<precision> <metric>", an asymmetric
    point's "doc layer <Ld> <metric>"), "baseline" (a
    baseline's metric), "funnel" (a funnel's metric, named "funnel <funnel> <metric>"), "missing" / "extra" (a cell, metric or
    baseline only on one side), "weights" (model weights sha256), "data" (a data file's sha256), "config" (a
    numeric setting such as dtype or max_length resolved differently).
    """

    kind: str
    dataset: str | None
    layer: int | None
    dim: int | None
    metric: str | None
    recorded: float | str | None
    reproduced: float | str | None

    @property
    def delta(self) -> float | None:
        if isinstance(self.recorded, float) and isinstance(self.reproduced, float):
            return self.reproduced - self.recorded
        return None

    def __str__(self) -> str:
        where = " ".join(part for part in (
            self.dataset, f"({self.layer},{self.dim})" if self.layer is not None else None, self.metric) if part)
        delta = f" (Δ {self.delta:+.2e})" if self.delta is not None else ""
        return f"{self.kind}: {where}: recorded {self.recorded} -> reproduced {self.reproduced}{delta}"


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance


def compare_leaderboards(recorded: Leaderboard, reproduced: Leaderboard, *, tolerance: float = 1e-4) -> list[Difference]:
    """Every metric beyond `tolerance`, plus changed weights / data / numeric settings (costs and timings not)."""
    diffs: list[Difference] = []
    if recorded.model.weights_sha256 != reproduced.model.weights_sha256:
        diffs.append(Difference("weights", None, None, None, "weights_sha256", recorded.model.weights_sha256,
                                reproduced.model.weights_sha256))
    new_files = {d.name: d.files for d in reproduced.datasets}
    for record in recorded.datasets:
        files = new_files.get(record.name, [])
        for i, old in enumerate(record.files):
            new = next((f for f in files if Path(f.path).name == Path(old.path).name), files[i] if i < len(files) else None)
            if new is None or new.sha256 != old.sha256:
                diffs.append(Difference("data", record.name, None, None, f"sha256 {Path(old.path).name}", old.sha256,
                                        new.sha256 if new else None))
    old_numeric, new_numeric = recorded.config.get("numeric", {}), reproduced.config.get("numeric", {})
    for key in sorted(set(old_numeric) | set(new_numeric)):
        if key != "weights_sha256" and old_numeric.get(key) != new_numeric.get(key):
            diffs.append(Difference("config", None, None, None, key, str(old_numeric.get(key)),
                                    str(new_numeric.get(key))))

    def compare(kind: str, dataset: str, layer, dim, old: dict[str, float], new: dict[str, float] | None) -> None:
        if new is None:
            diffs.append(Difference("missing", dataset, layer, dim, None, "recorded", None))
            return
        for metric in sorted(set(old) | set(new)):
            if metric not in new or metric not in old:
                diffs.append(Difference("missing" if metric not in new else "extra", dataset, layer, dim, metric,
                                        old.get(metric), new.get(metric)))
            elif not _close(old[metric], new[metric], tolerance):
                diffs.append(Difference(kind, dataset, layer, dim, metric, old[metric], new[metric]))

    def named(precision: str | None, metrics: dict[str, float] | None) -> dict[str, float] | None:
        """A quantised (or asymmetric) point's metrics carry its precision (doc layer) in their names, so a
        difference says which point."""
        return metrics if metrics is None or precision is None else {f"{precision} {m}": v for m, v in metrics.items()}

    def point(cell) -> str | None:
        """The point's precisions and layers beyond the cell: the encoder's (when not the reference), the doc
        layer (asymmetric points) and the index precision."""
        encoder = f"encoder {cell.encoder_precision}" if cell.encoder_precision not in (None, "float32") else None
        doc = f"doc layer {cell.doc_layer}" if cell.doc_layer is not None else None
        return " ".join(p for p in (encoder, doc, cell.precision) if p) or None

    def key(c) -> tuple:
        return c.dataset, c.layer, c.dim, point(c)

    new_cells = {key(c): c for c in reproduced.results}
    for cell in recorded.results:
        new = new_cells.pop(key(cell), None)
        compare("metric", cell.dataset, cell.layer, cell.dim, named(point(cell), cell.metrics),
                named(point(cell), new.metrics if new else None))
    for found in sorted(new_cells, key=str):
        diffs.append(Difference("extra", found[0], found[1], found[2], found[3], None, "reproduced"))
    new_baselines = {(b.dataset, b.name): b.metrics for b in reproduced.baselines}
    for baseline in recorded.baselines:
        compare("baseline", baseline.dataset, None, None,
                {f"{baseline.name} {k}": v for k, v in baseline.metrics.items()},
                {f"{baseline.name} {k}": v for k, v in new_baselines.pop((baseline.dataset, baseline.name)).items()}
                if (baseline.dataset, baseline.name) in new_baselines else None)
    for dataset, name in sorted(new_baselines):
        diffs.append(Difference("extra", dataset, None, None, name, None, "reproduced"))
    new_funnels = {(f.dataset, f.funnel): f.metrics for f in reproduced.funnels}
    for funnel in recorded.funnels:
        new = new_funnels.pop((funnel.dataset, funnel.funnel), None)
        compare("funnel", funnel.dataset, None, None, named(f"funnel {funnel.funnel}", funnel.metrics),
                named(f"funnel {funnel.funnel}", new))
    for dataset, name in sorted(new_funnels):
        diffs.append(Difference("extra", dataset, None, None, f"funnel {name}", None, "reproduced"))
    return diffs


def _weights_of(folder: Path) -> str:
    return weights_sha256(folder)  # as the encoder records it: the transformer's weights and its modules'



def find_model(board: Leaderboard, model: str | Path | None = None) -> tuple[str, list[str]]:
    """The model to re-run `board` with, and notes on the folders passed over.

    Order: `model` (a folder or hub id the user gave), the models root ($ELASTICIR_MODELS) under the hub id or
    the recorded name, the hub id itself (hub or wheel), the recorded path. A folder found automatically must
    hold the recorded weights (sha256); one given with `model` is used as given and a different sha256 is
    reported as a difference.
    """
    if model is not None:
        return str(model), []
    record = board.model
    wanted = record.weights_sha256
    names = [n for n in (record.hub_id, record.name, str(board.config.get("model") or "")) if n]
    candidates: list[Path] = [c for n in names for c in root_candidates(n)]
    for hub_id in dict.fromkeys(n for n in names if "/" in n and not Path(n).is_absolute()):
        try:
            candidates.append(resolve_model_path(hub_id)[0])
        except ElasticIRError:
            pass  # offline and not in a wheel: the other places may still have it
    candidates += [Path(p) for p in (record.path, board.config.get("model")) if p and Path(p).is_dir()]
    passed = []
    for folder in dict.fromkeys(c.resolve() for c in candidates):
        try:
            found = _weights_of(folder)
        except ElasticIRError as exc:
            passed.append(f"{folder} ({exc})")
            continue
        if found == wanted:
            return str(folder), passed
        passed.append(f"{folder} (weights sha256 {found[:12]}, not {wanted[:12]})")
    root = models_root()
    raise ElasticIRError(
        f"cannot find the model {record.hub_id or record.name} with weights sha256 {wanted[:12]}... "
        f"({'tried: ' + '; '.join(passed) if passed else 'not under the models root, not on the hub or in a wheel'}"
        f"; models root: {root or 'unset'}). Fix: pass --model FOLDER, or put the model under $ELASTICIR_MODELS "
        f"as <root>/{(record.hub_id or record.name).rstrip('/').split('/')[-1]}"
    )


def reproduce(path: str | Path, *, tolerance: float = 1e-4, out: str | Path | None = None,
              data_root: str | Path | None = None, device: str | None = None, encoder=None,
              model: str | Path | None = None) -> list[Difference]:
    """Re-run the recorded config and return what differs beyond `tolerance` (an empty list: reproduced).

    The run goes to `out` (default results/reproduce) with its own cache, so nothing from the original run is
    reused; re-running an interrupted reproduce resumes it. `data_root` / `device` override the recorded ones
    (a run recorded on CPU re-runs on CPU unless `device` says otherwise); `model` names the model folder when
    it is not found by itself; `encoder` (an ElasticEncoder) skips loading the model, e.g. in tests.
    """
    path = resolve_path(path)
    board = load_leaderboard(path)
    if "baseline_grid" in board.config:  # cells from several models: each member re-run, the grid re-assembled
        new = _reproduce_grid(board, Path(out) if out is not None else DEFAULT_OUT, data_root, device)
        return compare_leaderboards(board, new, tolerance=tolerance)
    values = {k: v for k, v in board.config.items() if k not in ("numeric", "baseline")}
    notes: list[str] = []
    if encoder is None:
        values["model"], notes = find_model(board, model)
        stage(f"reproduce {path}: model {values['model']}")
    target = Path(out) if out is not None else DEFAULT_OUT
    overrides = {"model": values["model"], "out": str(target), "cache_dir": None, "recompute": False}
    if data_root is not None:
        overrides["data_root"] = str(data_root)
    if device is not None:
        overrides["device"] = device
    elif values.get("device") is None and board.model.device == "cpu":
        overrides["device"] = "cpu"  # a CPU run stays on CPU (fp32) even where a GPU would be picked by default
    configs = []
    for settings, names in part_groups(board) or [({}, {"sts": values.get("sts", []),
                                                           "retrieval": values.get("retrieval", [])})]:
        group = values | settings | {"sts": names["sts"], "retrieval": names["retrieval"]} | overrides
        try:
            configs.append(RunConfig(**group))
        except ValidationError as exc:
            raise ElasticIRError(f"{path}: the recorded config is not a valid run config for this elasticir:\n{exc}") from None
    for note in notes:
        stage(f"passed over {note}")
    for config in configs:  # into one run directory: the last one's summary holds every part
        outcome = run(config, encoder)
    stage(f"reproduce: re-run in {outcome.dir}")
    return compare_leaderboards(board, outcome.leaderboard, tolerance=tolerance)


def part_groups(board: Leaderboard) -> list[tuple[dict, dict[str, list[str]]]]:
    """The recorded datasets grouped by the settings their parts ran with ({} for a part that recorded none,
    from an older elasticir: the run's config applies), in recorded order: one re-run per group, so parts that
    different commands wrote into one run directory (`eval retrieval --no-bm25`, then `eval sts`) are each
    replayed as they ran, not with the last command's flags."""
    groups: dict[str, tuple[dict, dict[str, list[str]]]] = {}
    for record in board.datasets:
        settings = record.settings or {}
        key = json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, (settings, {"sts": [], "retrieval": []}))[1][record.task].append(record.name)
    return list(groups.values())


def format_differences(differences: Sequence[Difference], tolerance: float = 1e-4) -> str:
    if not differences:
        return f"reproduced: every metric within {tolerance:g} of the recorded value"
    return f"{len(differences)} difference(s) beyond {tolerance:g}:\n" + "\n".join(f"  {d}" for d in differences)


def _reproduce_grid(board: Leaderboard, out: Path, data_root=None, device=None) -> Leaderboard:
    """Re-run a baseline grid: each member found by its identity (hub id / name + weights sha256), the recorded
    protocol, into `out`; returns the new grid's leaderboard."""
    recorded = board.config["baseline_grid"]
    members = []
    for entry in recorded["members"]:
        record = SimpleNamespace(weights_sha256=entry["weights_sha256"], hub_id=entry.get("hub_id"),
                                 name=entry["name"], path=entry["model"])
        model, _ = find_model(SimpleNamespace(model=record, config={"model": entry["model"]}))
        members.append(Member(Cell(*entry["cell"]), model, Cell(*entry["source"]), model))
    values = {k: v for k, v in board.config.items() if k not in ("numeric", "baseline_grid", "baseline")}
    values.update(out=str(out), cache_dir=None, recompute=False, model=members[0].model)
    if data_root is not None:
        values["data_root"] = str(data_root)
    if device is not None:
        values["device"] = device
    spec = Spec(Path(recorded["spec"]), recorded["kind"], members)
    return load_leaderboard(RunFolder(evaluate(spec, run_config(RunConfig, values, recorded["spec"])).dir).leaderboard)
