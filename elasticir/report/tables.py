"""Tables for papers: LaTeX (booktabs) and Markdown, best value per column in bold, significance marks.

Marks (when a baseline comparison is given): an up arrow = significantly better than the baseline at the same
cell, a down arrow = significantly worse (test and correction as in significance.py; the caption line under each
table names them). Values are fractions with 4 digits, leading zero dropped (.8203), as in the Starbucks tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from elasticir.cells import Cell, dim_label, layer_label
from elasticir.report.figures import fmt_value

UP, DOWN = "\u2191", "\u2193"
LATEX_MARK = {UP: r"$^{\uparrow}$", DOWN: r"$^{\downarrow}$"}


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 UP: r"$\uparrow$", DOWN: r"$\downarrow$", "\u2212": "$-$", "<": "$<$", ">": "$>$",
                 "\u0394": r"$\Delta$", "\u00d7": r"$\times$"}  # pdflatex-safe: no raw Unicode symbols


def _latex_escape(text: str) -> str:
    return re.sub("|".join(re.escape(c) for c in LATEX_SPECIAL), lambda m: LATEX_SPECIAL[m.group(0)], text)


def _best_mask(values: pd.DataFrame, higher_is_better: bool = True) -> pd.DataFrame:
    """True where a value is the best of its column (ties all bold); NaN never."""
    best = values.max(axis=0) if higher_is_better else values.min(axis=0)
    return values.eq(best, axis=1) & values.notna()


def _marks_from(comparison: pd.DataFrame | None, dataset: str) -> dict[tuple[int, int], str]:
    """{(L, d): arrow} for the significant cells of one dataset in a significance table."""
    if comparison is None or comparison.empty:
        return {}
    rows = comparison[(comparison.dataset == dataset) & comparison.significant]
    return {(int(r.layer), int(r.dim)): UP if r["diff"] > 0 else DOWN for _, r in rows.iterrows()}


def render(values: pd.DataFrame, *, row_header: str, marks: pd.DataFrame | None = None, bold: pd.DataFrame | None = None,
           caption: str = "", label: str = "", digits: int = 4, column_format: str | None = None) -> tuple[str, str]:
    """(LaTeX booktabs, Markdown) of a numeric table; row labels from the index, column labels from columns."""
    bold = _best_mask(values) if bold is None else bold
    marks = marks if marks is not None else pd.DataFrame("", index=values.index, columns=values.columns)
    columns = [str(c) for c in values.columns]
    tex_rows, md_rows = [], []
    for index, row in values.iterrows():
        tex_cells, md_cells = [_latex_escape(str(index))], [str(index)]
        for column in values.columns:
            value = row[column]
            text = fmt_value(value, digits) if pd.notna(value) else "--"
            mark = marks.at[index, column] if column in marks.columns and index in marks.index else ""
            mark = mark if isinstance(mark, str) else ""
            strong = bool(bold.at[index, column]) if pd.notna(value) else False
            tex = (rf"\textbf{{{text}}}" if strong else text).replace("\u2212", "$-$") + LATEX_MARK.get(mark, "")
            md = (f"**{text}**" if strong else text) + mark
            tex_cells.append(tex)
            md_cells.append(md)
        tex_rows.append(" & ".join(tex_cells) + r" \\")
        md_rows.append("| " + " | ".join(md_cells) + " |")
    column_format = column_format or "l" + "r" * len(columns)
    latex = "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{column_format}}}", r"\toprule",
        " & ".join([_latex_escape(row_header)] + [_latex_escape(c) for c in columns]) + r" \\", r"\midrule",
        *tex_rows, r"\bottomrule", r"\end{tabular}",
        *([rf"\caption{{{_latex_escape(caption)}}}"] if caption else []),
        *([rf"\label{{{label}}}"] if label else []), r"\end{table}", "",
    ])
    markdown = "\n".join([
        "| " + " | ".join([row_header] + columns) + " |",
        "|" + "---|" + "---:|" * len(columns),
        *md_rows, "", *([f"*{caption}*", ""] if caption else []),
    ])
    return latex, markdown


def grid_table(run, dataset: str, comparison: pd.DataFrame | None = None, sig_note: str = "") -> tuple[str, str]:
    """Layer x dim table of one dataset's main metric, best layer per dim column in bold."""
    grid = run.grid(dataset)
    grid.index = [layer_label(layer) for layer in grid.index]
    grid.columns = [dim_label(dim) for dim in grid.columns]
    marks = pd.DataFrame("", index=grid.index, columns=grid.columns)
    for (layer, dim), arrow in _marks_from(comparison, dataset).items():
        if layer_label(layer) in marks.index and dim_label(dim) in marks.columns:
            marks.at[layer_label(layer), dim_label(dim)] = arrow
    caption = (f"{run.label} on {dataset}: {run.metric(dataset)} at every cell (layer L x dim d); "
               f"bold = best layer for each dim.")
    if comparison is not None and not comparison.empty:
        caption += f" {UP}/{DOWN}: significantly better/worse than the baseline at the same cell ({sig_note})."
    return render(grid, row_header="layer", marks=marks, caption=caption,
                  label=f"tab:grid-{dataset}".replace("_", "-"))


def diagonal_table(runs: Sequence, datasets: Sequence[str], comparison: pd.DataFrame | None = None,
                   sig_note: str = "") -> tuple[str, str]:
    """Every run's pair-list cells (rows) x datasets (+ STS mean), BM25 as a row; best per column in bold.

    Marks on the first run's rows compare it with the baseline at the same cell, where the baseline has it.
    """
    rows, marks = {}, {}
    sts = [d for d in datasets if runs[0].tasks.get(d) == "sts"]
    for k, run in enumerate(runs):
        for cell in run.pairs_in_grid():
            name = f"{run.label} ({cell[0]},{cell[1]})"
            rows[name] = {d: run.value(d, cell) if d in run.tasks else np.nan for d in datasets}
            if len(sts) > 1:
                rows[name]["STS mean"] = float(np.mean([rows[name][d] for d in sts]))
            if k == 0:
                marks[name] = {d: _marks_from(comparison, d).get(cell, "") for d in datasets}
    bm25 = {d: (runs[0].bm25(d) or {}).get(runs[0].metric(d), np.nan) for d in datasets}
    if any(np.isfinite(v) for v in bm25.values()):
        rows["BM25 (pyserini, flat)"] = bm25
    values = pd.DataFrame.from_dict(rows, orient="index")
    mark_frame = pd.DataFrame.from_dict(marks, orient="index").reindex(index=values.index, columns=values.columns)
    metrics = ", ".join(f"{d}: {runs[0].metric(d)}" for d in datasets)
    caption = f"Pair-list (diagonal) cells of each run ({metrics}); bold = best in column."
    if comparison is not None and not comparison.empty:
        caption += f" {UP}/{DOWN} on {runs[0].label}: significantly better/worse than the baseline at that cell ({sig_note})."
    return render(values, row_header="model (L,d)", marks=mark_frame.astype(object).fillna(""), caption=caption,
                  label="tab:diagonal")


def comparison_table(comparison: pd.DataFrame, run_label: str, baseline_label: str) -> tuple[str, str]:
    """Long table of the shared cells: run, baseline, difference, 95% CI, p, Holm p (LaTeX + Markdown)."""
    header = ["dataset", "cell", run_label, baseline_label, "diff", "95% CI", "p", "p (Holm)", "test"]
    tex, md = [], []
    for _, r in comparison.iterrows():
        ci = (f"[{fmt_value(r.ci_low, 4, True)}, {fmt_value(r.ci_high, 4, True)}]"
              if pd.notna(r.ci_low) else "--")
        cells = [r.dataset, str(Cell(r.layer, r.dim)), fmt_value(r.value, 4), fmt_value(r.baseline, 4),
                 fmt_value(r["diff"], 4, True) + ("*" if r.significant else ""), ci,
                 f"{r.p:.2g}" if pd.notna(r.p) else "--", f"{r.p_holm:.2g}" if pd.notna(r.p_holm) else "--", r.test]
        md.append("| " + " | ".join(cells) + " |")
        tex.append(" & ".join(_latex_escape(c).replace("\u2212", "$-$") for c in cells) + r" \\")
    latex = "\n".join([r"\begin{tabular}{llrrrlrrl}", r"\toprule", " & ".join(_latex_escape(h) for h in header) + r" \\",
                       r"\midrule", *tex, r"\bottomrule", r"\end{tabular}", ""])
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * 6 + "---|", *md, ""])
    return latex, markdown


def paper_table(blocks: dict[str, pd.DataFrame], marks: dict[str, pd.DataFrame], reference: str,
                caption: str) -> tuple[str, str]:
    """The paper's main table: one row block per method (rows = its pair-list cells, small to large), columns =
    datasets + average; bold = best method at that cell and column; arrows = significantly better / worse than
    `reference` at the same cell (LaTeX booktabs + Markdown)."""
    frames = list(blocks.values())
    columns = list(frames[0].columns)
    best = pd.concat(frames).groupby(level=0).max()
    tex, md = [], ["| method | cell | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for k, (method, values) in enumerate(blocks.items()):
        tag = " (reference)" if method == reference else ""
        header = rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\textit{{{_latex_escape(method + tag)}}}}} \\"
        tex += ([r"\midrule"] if k else []) + [header]
        for cell, row in values.iterrows():
            tex_cells, md_cells = [_latex_escape(str(cell))], []
            for column in columns:
                value, mark = row[column], marks.get(method, pd.DataFrame()).get(column, {}).get(cell, "")
                text = fmt_value(value, 4) if pd.notna(value) else "--"
                strong = pd.notna(value) and np.isclose(value, best.at[cell, column])
                tex_cells.append((rf"\textbf{{{text}}}" if strong else text) + LATEX_MARK.get(mark, ""))
                md_cells.append((f"**{text}**" if strong else text) + mark)
            tex.append(" & ".join(tex_cells) + r" \\")
            md.append(f"| {method}{tag} | {cell} | " + " | ".join(md_cells) + " |")
    latex = "\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{l{'r' * len(columns)}}}",
                       r"\toprule", " & ".join(["cell"] + [_latex_escape(c) for c in columns]) + r" \\", r"\midrule",
                       *tex, r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}",
                       r"\label{tab:paper}", r"\end{table}", ""])
    return latex, "\n".join(md + ["", f"*{caption}*", ""])
