"""Dataset names -> where the files live locally, where they officially come from, and how big they should be.

Local first: `<data root>/sts/<name>/<split>.jsonl.gz` and `<data root>/beir/<name>/` (the layout of
shared/data/README.md). Any such folder is usable by its name even when the catalog does not list it. A catalogued
dataset that is missing locally is downloaded from its official source when the network allows; otherwise we
fail fast, naming the path searched and how to provide the files.
"""

from __future__ import annotations

import difflib
import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from elasticir.errors import DataNotFoundError, ElasticIRError
from elasticir.network import network_allowed

Task = Literal["sts", "retrieval"]
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
DEFAULT_DATA_ROOT = Path("~/.cache/elasticir/data").expanduser()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: Task
    split: str = "test"
    source: str | None = None  # "hf:<dataset id>", a BEIR zip URL, or a note for sets that need a licence
    expected_rows: int | None = None  # STS pairs, or retrieval test queries
    expected_docs: int | None = None
    remove_self_hits: bool = False  # BEIR and pyserini drop a hit whose doc id equals the query id
    zip_subfolder: str | None = None  # cqadupstack forums live inside one zip
    mteb_name: str | None = None  # the MTEB task name: what MTEB's prompt selection keys on (None: not in MTEB)

    @property
    def mteb_type(self) -> str:
        """The MTEB task type of this dataset's task (the prompt selection's fallback key)."""
        return "STS" if self.task == "sts" else "Retrieval"


def _sts(name: str, hf: str, rows: int, mteb: str) -> DatasetSpec:
    return DatasetSpec(name, "sts", "test", f"hf:mteb/{hf}", rows, mteb_name=mteb)


def _beir(name: str, docs: int, queries: int, split: str = "test", **kw) -> DatasetSpec:
    return DatasetSpec(name, "retrieval", split, kw.pop("source", BEIR_URL.format(name)), queries, docs, **kw)


_CQA = {  # forum: (docs, test queries), BEIR paper table
    "android": (22998, 699), "english": (40221, 1570), "gaming": (45301, 1595), "gis": (37637, 885),
    "mathematica": (16705, 804), "physics": (38316, 1039), "programmers": (32176, 876), "stats": (42269, 652),
    "tex": (68184, 2906), "unix": (47382, 1072), "webmasters": (17405, 506), "wordpress": (48605, 541),
}  # fmt: skip
_LICENSED = "licensed: build with the BEIR instructions, put under <data root>/beir/{}"

CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        _sts("stsbenchmark", "stsbenchmark-sts", 1379, "STSBenchmark"),
        _sts("sts12", "sts12-sts", 3108, "STS12"),
        _sts("sts13", "sts13-sts", 1500, "STS13"),
        _sts("sts14", "sts14-sts", 3750, "STS14"),
        _sts("sts15", "sts15-sts", 3000, "STS15"),
        _sts("sts16", "sts16-sts", 1186, "STS16"),
        _sts("sickr", "sickr-sts", 9927, "SICK-R"),
        _beir("scifact", 5183, 300, mteb_name="SciFact"),
        _beir("nfcorpus", 3633, 323, mteb_name="NFCorpus"),
        _beir("arguana", 8674, 1406, mteb_name="ArguAna", remove_self_hits=True),
        _beir("fiqa", 57638, 648, mteb_name="FiQA2018"),
        _beir("scidocs", 25657, 1000, mteb_name="SCIDOCS"),
        _beir("trec-covid", 171332, 50, mteb_name="TRECCOVID"),
        _beir("quora", 522931, 10000, mteb_name="QuoraRetrieval", remove_self_hits=True),
        _beir("nq", 2681468, 3452, mteb_name="NQ"),
        _beir("hotpotqa", 5233329, 7405, mteb_name="HotpotQA"),
        _beir("dbpedia-entity", 4635922, 400, mteb_name="DBPedia"),
        _beir("fever", 5416568, 6666, mteb_name="FEVER"),
        _beir("climate-fever", 5416593, 1535, mteb_name="ClimateFEVER"),
        _beir("webis-touche2020", 382545, 49, mteb_name="Touche2020"),
        *[
            _beir(f"cqadupstack-{forum}", docs, queries, source=BEIR_URL.format("cqadupstack"), zip_subfolder=forum,
                  mteb_name=f"CQADupstack{forum.capitalize()}Retrieval")
            for forum, (docs, queries) in _CQA.items()
        ],
        _beir("msmarco", 8841823, 6980, mteb_name="MSMARCO", split="dev"),
        _beir("msmarco-passage-dev-small", 8841823, 6980, split="dev", source=BEIR_URL.format("msmarco"), mteb_name="MSMARCO"),
        _beir("trec-dl-2019-passage", 8841823, 43, source=BEIR_URL.format("msmarco")),
        _beir("trec-dl-2020-passage", 8841823, 54, source=BEIR_URL.format("msmarco")),
        *[_beir(name, docs, q, source=_LICENSED.format(name)) for name, docs, q in [
            ("bioasq", 14914603, 500), ("signal1m", 2866316, 97), ("trec-news", 594977, 57),
            ("robust04", 528155, 249)]],
        _beir("cranfield", 1400, 225, source="ir_datasets:cranfield (convert to BEIR layout)"),
    ]
}  # fmt: skip


# a dataset name: a catalog entry or one folder name under <data root>/beir/ or sts/, never a path
_NAME = re.compile(r"[^\W_][\w.+@()\[\] -]*", re.UNICODE)


def _name_problem(name) -> str | None:
    """Why `name` cannot be a dataset name (None: it can)."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name or Path(name).is_absolute():
        return "it contains a path separator"
    if name in (".", "..") or name.startswith("."):
        return "it is '.' or '..' or starts with '.'"
    if name.startswith("~"):
        return "it starts with '~' (a home folder)"
    if len(name) > 200:
        return "it is longer than 200 characters"
    if not _NAME.fullmatch(name) or name != name.strip():
        return ("it has characters other than letters, digits and . _ - + @ ( ) [ ] and inner spaces, or does "
                "not start with a letter or digit")
    return None


def check_dataset_name(name, flag: str = "dataset", root: str | Path | None = None, fix: str | None = None) -> str:
    """`name` if it is a dataset name (a catalog entry or one folder name under the data root), else an error
    naming `flag` and the fix. Every name that comes from a flag, a YAML config or a leaderboard passes here
    before it is joined into any path, so a dataset can neither be read from nor written to outside the data
    root and the run directory."""
    problem = _name_problem(name)
    if problem is None:
        return name
    shown = str(data_root(root))
    base = Path(str(name).replace("\\", "/").rstrip("/")).name if isinstance(name, str) else ""
    suggest = base if base and _name_problem(base) is None else "<name>"
    fix = fix or (f"put the folder under {shown}/beir/{suggest}/ (retrieval) or {shown}/sts/{suggest}/ (STS) "
                  f"and give the name {suggest}")
    raise ElasticIRError(f"{flag} {name!r}: a dataset is a name from the catalog or a folder name under the data "
                         f"root, not a path ({problem}). Fix: {fix}")


def data_root(override: str | Path | None = None) -> Path:
    """The --data-root flag, else $ELASTICIR_DATA, else ~/.cache/elasticir/data."""
    chosen = override or os.environ.get("ELASTICIR_DATA") or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def _root_origin(override: str | Path | None) -> str:
    if override:
        return "--data-root"
    return "$ELASTICIR_DATA" if os.environ.get("ELASTICIR_DATA") else f"the default ({DEFAULT_DATA_ROOT})"


def sts_path(root: Path, name: str, split: str = "test") -> Path | None:
    for suffix in (".jsonl.gz", ".jsonl"):
        path = root / "sts" / name / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def beir_path(root: Path, name: str) -> Path | None:
    folder = root / "beir" / name
    return folder if (folder / "corpus.jsonl").is_file() or (folder / "corpus.jsonl.gz").is_file() else None


def find_local(spec: str, root: Path) -> Path | None:
    """A user's data path: as given, else relative to the data root, else a BEIR folder name under <root>/beir/."""
    for candidate in (Path(spec).expanduser(), root / spec):
        if candidate.exists():
            return candidate
    return beir_path(root, spec)


def _incomplete_folder(name: str, root: Path, split: str = "test") -> None:
    """A dataset folder that exists but lacks its main file is named as such, not as an unknown dataset."""
    beir, sts = root / "beir" / name, root / "sts" / name
    if beir.is_dir() and not beir_path(root, name):
        raise DataNotFoundError(
            f"{beir}/ exists but has no corpus.jsonl (or corpus.jsonl.gz); a BEIR folder needs corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
    if sts.is_dir() and not sts_path(root, name, split):
        raise DataNotFoundError(f"{sts}/ exists but has no {split}.jsonl.gz (or {split}.jsonl) with STS pairs")


def spec_for(name: str, root: Path) -> DatasetSpec:
    """The catalog entry, or an ad-hoc one for a user's own folder in either layout."""
    check_dataset_name(name, root=root)
    if name in CATALOG:
        return CATALOG[name]
    if not sts_path(root, name) and not beir_path(root, name):
        _incomplete_folder(name, root)
    if sts_path(root, name):
        return DatasetSpec(name, "sts")
    if beir_path(root, name):
        return DatasetSpec(name, "retrieval")
    local = sorted(p.parent.name for p in root.glob("sts/*/test.jsonl*")) + sorted(
        p.parent.name for p in root.glob("beir/*/corpus.jsonl*")
    )
    close = difflib.get_close_matches(name, set(CATALOG) | set(local), n=1, cutoff=0.6)
    raise DataNotFoundError(
        f"unknown dataset {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}: "
        f"not in the catalog and no folder {root}/sts/{name}/ or {root}/beir/{name}/. "
        f"Local datasets under {root}: {', '.join(local) or 'none'}. Catalogued: {', '.join(sorted(CATALOG))}"
    )


def locate(name: str, root: Path, *, download: bool = True, override: str | Path | None = None) -> Path:
    """Path of the dataset's files (STS file or BEIR folder), downloading a catalogued one if allowed."""
    check_dataset_name(name, root=root)
    spec = spec_for(name, root)
    found = sts_path(root, name, spec.split) if spec.task == "sts" else beir_path(root, name)
    if found:
        return found
    _incomplete_folder(name, root, spec.split)
    wanted = root / "sts" / name / f"{spec.split}.jsonl.gz" if spec.task == "sts" else root / "beir" / name
    source = spec.source or "no official source"
    downloadable = spec.source and (spec.source.startswith("hf:") or spec.source.startswith("https://"))
    if not downloadable:
        raise DataNotFoundError(f"dataset {name!r} not found at {wanted} (data root from {_root_origin(override)}); {source}")
    host = "huggingface.co" if spec.source.startswith("hf:") else spec.source.split("/")[2]
    if not download or not network_allowed(host):
        partial = root / "qrels" / name
        if spec.task == "retrieval" and partial.is_dir():
            source += f" (only topics and qrels are at {partial}; the corpus is what is missing)"
        raise DataNotFoundError(
            f"dataset {name!r} not found at {wanted} (data root from {_root_origin(override)}), and the network "
            f"is unavailable or disabled, so it cannot be downloaded from {source}. Fix: set ELASTICIR_DATA or "
            f"--data-root to a folder that has it in the layout of {'sts/<name>/test.jsonl.gz' if spec.task == 'sts' else 'beir/<name>/corpus.jsonl'}, "
            "or run once with network access."
        )
    return _download(spec, root)


def _download(spec: DatasetSpec, root: Path) -> Path:
    """Fetch a catalogued dataset into the data-root layout (needs network)."""
    if spec.task == "sts":
        try:
            from datasets import load_dataset
        except ImportError:
            raise ElasticIRError("downloading STS data needs `datasets`: pip install 'elasticir[mteb]'") from None
        rows = load_dataset(spec.source.removeprefix("hf:"), split=spec.split)
        target = root / "sts" / spec.name / f"{spec.split}.jsonl.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({k: row[k] for k in ("sentence1", "sentence2", "score")}) + "\n")
        tmp.replace(target)
        return target
    from beir import util

    zip_name = spec.source.rsplit("/", 1)[-1].removesuffix(".zip")
    unpacked = Path(util.download_and_unzip(spec.source, str(root / "beir" / "_downloads")))
    folder = unpacked / spec.zip_subfolder if spec.zip_subfolder else unpacked
    target = root / "beir" / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        if zip_name == spec.name or spec.zip_subfolder:
            folder.rename(target)
        else:  # several names share one zip (msmarco): link instead of moving
            target.symlink_to(folder)
    return target


