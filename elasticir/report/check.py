"""`elasticir check`: a run's cells against the numbers published for its model, and the report's section."""

from __future__ import annotations

from pathlib import Path

from elasticir.errors import ElasticIRError
from elasticir.report.rundir import load_run
from elasticir.results.references import (
    DEFAULT_REFERENCES,
    ROW_HEADER,
    CheckResult,
    check_board,
    load_references,
    result_rows,
    summary_line,
)


def check_results(target: str | Path, references: str | Path | None = None) -> list[CheckResult]:
    """Every reference that applies to the run directory or leaderboard JSON `target`, with its status."""
    target = Path(target)
    if not target.exists():
        raise ElasticIRError(f"{target}: no such run directory or leaderboard file")
    return check_board(load_run(target).board, load_references(references))


def format_check(results: list[CheckResult]) -> str:
    """A plain-text table (one line per reference) and the count of each status per source."""
    rows = [ROW_HEADER, *result_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(ROW_HEADER) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    return "\n".join(lines + ["", "summary: " + summary_line(results)]) + "\n"


def markdown_section(results: list[CheckResult]) -> str:
    """report.md's section: the summary, then the compared references (not-run ones only counted)."""
    lines = ["## Published references", "", (f"Against references/*.yaml: {summary_line(results)}. "
             "`elasticir check RUN_DIR` lists every reference, run or not."), ""]
    compared = [row for row in result_rows(results) if row[0] not in ("not run",)]
    if compared:
        lines += ["| " + " | ".join(ROW_HEADER) + " |", "|" + "---|" * len(ROW_HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in compared]
    return "\n".join(lines)


def write_check_section(run, writer) -> None:
    """Add the references section to a report (nothing when no reference folder is there)."""
    if DEFAULT_REFERENCES.is_dir():
        writer.text(markdown_section(check_board(run.board, load_references())))
