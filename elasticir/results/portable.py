"""A leaderboard fit to publish: the same numbers, without the paths of the machine that produced it.

A run directory's leaderboard.json records where things were on that machine (model folder, data files, output
folder), which the run's own report reads. A published copy names the model by hub id and weights sha256 and
the data by paths relative to the data root plus sha256, which is all `reproduce` needs elsewhere.

    python -m elasticir.results.portable results/<run>/leaderboard.json --hub-id org/name > leaderboards/<name>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path, PurePosixPath

from elasticir.results.schema import Leaderboard

PORTABLE_NOTE = "machine paths replaced for publication (model by hub id, data relative to the data root)"


def relative_data_path(path: str) -> str:
    """`/x/y/data/beir/scifact/corpus.jsonl` -> `beir/scifact/corpus.jsonl` (the data-root layout)."""
    parts = PurePosixPath(path).parts
    for anchor in ("sts", "beir", "pairs", "qrels"):
        if anchor in parts:
            return str(PurePosixPath(*parts[parts.index(anchor):]))
    return PurePosixPath(path).name


def _local_path(value: str | None) -> bool:
    return bool(value) and (value.startswith(("/", "~")) or value[1:3] == ":\\")


def _model_names(model: dict, hub_id: str | None, assembled: bool) -> tuple[str | None, str]:
    """The model's hub id (given, recorded, or its name when that is no path; none for an assembled grid) and
    its short name (the hub id's or folder's last part)."""
    hub_id = hub_id or model.get("hub_id")
    if hub_id is None and not _local_path(model["name"]) and not assembled:
        hub_id = model["name"]
    return hub_id, (hub_id or model["name"]).rstrip("/").split("/")[-1]


def portable_model(model: dict, hub_id: str | None = None, *, assembled: bool = False) -> dict:
    """A model record (`ModelInfo.as_dict()`) named by hub id, its folder path replaced by the folder's name;
    the weights' sha256 and every other field untouched."""
    hub_id, short = _model_names(model, hub_id, assembled)
    return model | {"hub_id": hub_id, "name": hub_id or short,
                    "path": short if _local_path(model["path"]) else model["path"]}


def make_portable(board: dict, hub_id: str | None = None) -> dict:
    """A copy of a leaderboard dict with machine paths replaced; numbers, checksums and config are untouched."""
    board = json.loads(json.dumps(board))
    model = board["model"]
    assembled = "baseline_grid" in board["config"]
    hub_id, short = _model_names(model, hub_id, assembled)
    local_model = {model["path"], model["name"], board["config"].get("model")}
    model.update(portable_model(model, hub_id, assembled=assembled))
    if _local_path(board["config"].get("model")):
        board["config"]["model"] = hub_id or short
    for key in ("out", "data_root", "cache_dir"):
        if _local_path(board["config"].get(key)):
            board["config"][key] = "results" if key == "out" else None
    for record in board["datasets"]:
        for file in record["files"]:
            file["path"] = relative_data_path(file["path"])
        settings = record.get("settings") or {}
        if _local_path(settings.get("model")):  # what the part ran: the model named as above (a member: its folder)
            settings["model"] = hub_id or short if settings["model"] in local_model else _short(settings["model"])
        for key in ("data_root", "cache_dir", "ray_address"):
            if _local_path(settings.get(key)):
                settings[key] = None
        if str(record.get("source") or "").startswith(("hf:", "http", "ir_datasets:")):
            digest = hashlib.sha256("".join(f["sha256"] for f in record["files"]).encode()).hexdigest()[:16]
            record.update(official_source=record["source"], source=f"local sha256:{digest}")
    for baseline in board.get("baselines", []):
        if _local_path(baseline.get("run_file")):
            parts = PurePosixPath(baseline["run_file"]).parts
            baseline["run_file"] = str(PurePosixPath(*parts[parts.index(board["run_id"]) + 1:])) \
                if board["run_id"] in parts else PurePosixPath(baseline["run_file"]).name
    _portable_members(board)
    command = board["command"]
    for i, arg in enumerate(command):
        if arg in local_model:
            command[i] = hub_id or short
        elif _local_path(arg):  # --out or --data-root of that machine
            command[i] = "results" if i and command[i - 1] == "--out" else PurePosixPath(arg).name
    if PORTABLE_NOTE not in board.get("notes", []):
        board.setdefault("notes", []).append(PORTABLE_NOTE)
    return board


def _short(value: str | None) -> str | None:
    return PurePosixPath(value).name if _local_path(value) else value


def _portable_members(board: dict) -> None:
    """A baseline grid's member models (per cell and in the config) by hub id or folder name, not path."""
    for cell in board["results"]:
        if member := cell.get("member"):
            member.update(path=_short(member.get("path")), name=member.get("hub_id") or _short(member["name"]))
    config = board["config"]
    config["baseline"] = _short(config.get("baseline"))
    if grid := config.get("baseline_grid"):
        grid["spec"] = _short(grid["spec"])
        for member in grid["members"]:
            member.update(model=member.get("hub_id") or _short(member["model"]), name=_short(member["name"]))
    board["model"]["path"] = _short(board["model"]["path"])
    base = (board["model"].get("training") or {}).get("base")
    if isinstance(base, dict) and _local_path(base.get("path")):  # a trained model's base, named as given
        base["path"] = base.get("name") if not _local_path(base.get("name")) else _short(base["path"])
    board["notes"] = [" ".join(_short(word) or word for word in note.split(" ")) for note in board.get("notes", [])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("leaderboard", type=Path)
    parser.add_argument("--hub-id", help="The model's hub id, when the run loaded it from a local folder.")
    args = parser.parse_args(argv)
    board = make_portable(json.loads(args.leaderboard.read_text()), args.hub_id)
    Leaderboard.model_validate(board)  # still a valid leaderboard
    sys.stdout.write(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
