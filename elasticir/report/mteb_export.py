"""Export every cell of a run in MTEB's result layout (mteb >= 2), the cell as an MTEB "experiment".

    <out>/results/<model name, '/' -> '__'>/<revision>/experiments/<experiment name>/<TaskName>.json
                                                                                   /model_meta.json

The experiment is {"layer": L, "embed_dim": d}; its folder name is MTEB's serialisation of those kwargs
("embed_dim_384__layer_6"). The full model (deepest layer, full width) is also written without an experiment,
at <revision>/<TaskName>.json, which is where MTEB looks for the plain model. Each task JSON follows
mteb.results.TaskResult (dataset_revision, task_name, mteb_version, scores {split: [{main_score, hf_subset,
languages, <metrics>}]}, evaluation_time, kg_co2_emissions, date). `mteb.load_results` / `ResultCache` read
the folder with load_experiments="match_name". mteb itself is optional: task names and revisions of the
default datasets are built in, other datasets are looked up in mteb's registry when it is installed.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from elasticir.encoders.cost import EncoderShape, params_touched
from elasticir.errors import ElasticIRError
from elasticir.report.rundir import RunData, load_run

# elasticir dataset name -> (MTEB task name, dataset revision, split, languages); revisions from mteb 2.26
KNOWN_TASKS = {
    "stsbenchmark": ("STSBenchmark", "b0fddb56ed78048fa8b90373c8a3cfc37b684831", "test", ["eng-Latn"]),
    "sts12": ("STS12", "a0d554a64d88156834ff5ae9920b964011b16384", "test", ["eng-Latn"]),
    "sickr": ("SICK-R", "20a6d6f312dd54037fe07a32d58e5e168867909d", "test", ["eng-Latn"]),
    "scifact": ("SciFact", "d56462d0e63a25450459c4f213e49ffdb866f7f9", "test", ["eng-Latn"]),
}
TASK_NAMES = {  # names only; revisions come from mteb when installed
    "sts13": "STS13", "sts14": "STS14", "sts15": "STS15", "sts16": "STS16", "nfcorpus": "NFCorpus",
    "arguana": "ArguAna", "fiqa": "FiQA2018", "scidocs": "SCIDOCS", "trec-covid": "TRECCOVID",
    "quora": "QuoraRetrieval", "msmarco": "MSMARCO", "nq": "NQ", "hotpotqa": "HotpotQA", "fever": "FEVER",
    "climate-fever": "ClimateFEVER", "dbpedia-entity": "DBPedia", "webis-touche2020": "Touche2020",
    "touche2020": "Touche2020",
}
METRIC_NAMES = {"nDCG@10": "ndcg_at_10", "RR@10": "mrr_at_10", "R@100": "recall_at_100", "R@1000": "recall_at_1000",
                "R(rel=2)@1000": "recall_at_1000_rel_2"}


def _experiment_name(layer: int, dim: int) -> str:
    """MTEB's folder name for experiment_kwargs {"layer": L, "embed_dim": d} (sorted key_value, '__'-joined)."""
    return f"embed_dim_{dim}__layer_{layer}"


def _task_info(dataset: str, split: str) -> tuple[str, str | None, str, list[str]]:
    if dataset in KNOWN_TASKS:
        return KNOWN_TASKS[dataset]
    name = TASK_NAMES.get(dataset, dataset)
    try:  # optional: mteb knows the dataset revision and languages
        import mteb  # lazy: slow, and optional

        metadata = mteb.get_task(name).metadata
        return name, metadata.dataset.get("revision"), split, list(metadata.eval_langs)
    except Exception:  # noqa: BLE001 - mteb missing or the task unknown to it
        return name, None, split, ["eng-Latn"]


def _scores(row: dict, task: str, subset_languages: list[str]) -> dict:
    if task == "sts":
        scores = {"pearson": row["pearson"], "spearman": row["spearman"], "cosine_pearson": row["pearson"],
                  "cosine_spearman": row["spearman"], "main_score": row["spearman"]}
    else:
        scores = {METRIC_NAMES.get(k, k): v for k, v in row.items() if k in METRIC_NAMES}
        scores["main_score"] = scores.get("ndcg_at_10")
    return {**{k: float(v) for k, v in scores.items() if v is not None}, "hf_subset": "default",
            "languages": subset_languages}


def _model_meta(run: RunData, layer: int | None, dim: int | None, revision: str) -> dict:
    model = run.board.model
    shape = EncoderShape.from_folder(model.path)
    layers = layer or model.num_layers
    n_params = params_touched(shape, layers)["total"] if shape else None
    meta = {
        "name": model.name, "revision": revision, "release_date": None, "languages": ["eng-Latn"],
        "n_parameters": n_params, "memory_usage_mb": round(n_params * 4 / 2**20, 1) if n_params else None,
        "max_tokens": model.max_length, "embed_dim": dim or model.hidden_size, "license": None, "open_weights": True,
        "public_training_code": None, "public_training_data": None, "framework": ["Sentence Transformers", "PyTorch"],
        "reference": None, "similarity_fn_name": model.similarity,
        "use_instructions": bool(any(d.prompts for d in run.board.datasets)), "training_datasets": None,
        "adapted_from": None, "superseded_by": None, "modalities": ["text"], "model_type": ["dense"],
        "citation": None, "contacts": None,
        "experiment_kwargs": {"layer": layer, "embed_dim": dim} if layer is not None else None,
        "loader": None, "loader_kwargs": {}, "is_cross_encoder": None,
    }
    return meta


def _folder_name(text: str, field: str, run: RunData) -> str:
    """`text` as one folder name of the MTEB layout, or an error: a leaderboard's model name or revision must not
    climb out of (or jump away from) the --mteb folder."""
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        raise ElasticIRError(f"{run.dir}: leaderboard {field} {text!r} cannot be a folder name of the MTEB results "
                             "layout (it would write outside --mteb); correct it in leaderboard.json")
    return text


def export_mteb(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every cell of the run as MTEB task results (one file per task per cell) + model_meta.json."""
    run = load_run(run_dir)
    model = run.board.model
    revision = model.revision or "no_revision_available"
    base = (Path(out_dir) / "results" / _folder_name(model.name.replace("/", "__").replace(" ", "_"), "model.name", run)
            / _folder_name(revision, "model.revision", run))
    try:  # the installed mteb's version, without importing it (slow)
        mteb_version = version("mteb")
    except Exception:  # noqa: BLE001
        mteb_version = "2.0.0"
    timestamp = run.board.created_at.timestamp()
    seconds = {}
    for timing in run.board.timings:
        seconds[timing.dataset] = seconds.get(timing.dataset, 0.0) + timing.seconds
    full = run.full_cell if run.full_cell in run.grid_cells else None
    written: list[Path] = []
    targets = [(cell, base / "experiments" / _experiment_name(*cell)) for cell in run.grid_cells]
    if full:
        targets.append((None, base))
    for cell, folder in targets:
        layer, dim = cell if cell else full
        folder.mkdir(parents=True, exist_ok=True)
        for dataset in run.datasets:
            record = next(d for d in run.board.datasets if d.name == dataset)
            task_name, dataset_revision, split, languages = _task_info(dataset, record.split)
            rows = run.table(dataset)
            row = rows[(rows.layer == layer) & (rows.dim == dim)]
            if row.empty:
                continue
            result = {
                "dataset_revision": dataset_revision, "task_name": task_name, "mteb_version": mteb_version,
                "scores": {split: [_scores(row.iloc[0].to_dict(), record.task, languages)]},
                "evaluation_time": seconds.get(dataset), "kg_co2_emissions": None, "date": timestamp,
            }
            path = folder / f"{task_name}.json"
            path.write_text(json.dumps(result, indent=2))
            written.append(path)
        meta_path = folder / "model_meta.json"
        meta_path.write_text(json.dumps(_model_meta(run, *(cell or (None, None)), revision), indent=2, default=str))
        written.append(meta_path)
    return written
