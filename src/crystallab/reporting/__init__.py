"""The HTML report of an analysis (SCIENCE.md v2).

``write_report(DIR)`` reads ``DIR/analysis.json`` (:func:`crystallab.analysis.load_analysis`)
and the distribution table, and writes ``DIR/report.html`` (one self-contained file, figures
embedded as PNG) and ``DIR/figures/`` (PNG, and SVG except the heatmaps, which are rasters).
``write_report((analysis, DIR))`` renders an :class:`~crystallab.analysis.Analysis` already in
hand. Modules: ``data`` (what the figures draw), ``plots`` (matplotlib), ``figures`` (draw and
save), ``html`` and ``reading`` (the page).

matplotlib loads only when a report is written, never when crystallab is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow.compute as pc

from crystallab.analysis import analyze, load_analysis
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Analysis
from crystallab.errors import UserError, require
from crystallab.results import Results
from crystallab.store import atomic_write_bytes, read_table

Source = str | Path | Analysis | Results | tuple[Analysis, str | Path | Results]

__all__ = ["report", "write_report"]


def report(source: Source, out: str | Path | None = None, *, svg: bool = True) -> Path:
    """Write the HTML report of ``source`` and return its path (the notebook's ``cl.report``).

    ``source``: an Analysis (its table comes along when ``analyze`` was given a ``Results``), a
    ``Results`` (analysed first), a results folder, or ``(analysis, folder or Results)``. ``out``:
    an ``.html`` path or a folder (default: the results folder).
    """
    return write_report(source, out, svg=svg)


def _resolve(source: Source, out: str | Path | None) -> tuple[Analysis, Path | None, Path]:
    """(analysis, results folder or None, output html path)."""
    if isinstance(source, Results):
        source = analyze(source)
    if isinstance(source, tuple) and isinstance(source[1], Results):
        source = source[0].with_table(source[1].to_arrow())
    if isinstance(source, tuple):
        assert not isinstance(source[1], Results)
        an, results = source[0], Path(source[1])
    elif isinstance(source, Analysis):
        if out is None:
            raise UserError("report(analysis) needs out= (an .html path or a folder)")
        an, results = source, None
    else:
        results = Path(source)
        if not results.is_dir():
            raise UserError(
                f"no results folder at {results}; run `crystallab measure --out {results}` and "
                f"`crystallab analyze {results}` first"
            )
        an = load_analysis(results)
    target = Path(out) if out is not None else results
    assert target is not None
    html = target if target.suffix == ".html" else target / "report.html"
    return an, results, html


def _table(results: Path | None, method: str) -> Any:
    """The analysed method's rows of the folder's table, or None when it holds none."""

    if results is None:
        return None
    try:
        t = read_table(results)
    except UserError:
        return None
    return t.filter(pc.equal(t.column("method"), method)) if "method" in t.column_names else t


def _melting(results: Path | None, th: Thresholds, method: str) -> list[Any] | None:
    """Melting curves when the folder holds rows at two or more temperatures (else None)."""
    from crystallab.analysis import decodings_in
    from crystallab.analysis.melting import melt

    t = _table(results, method)
    if t is None or len({d.temperature for d in decodings_in(t)}) < 2:
        return None
    return melt(t, th, method) or None


def write_report(source: Source, out: str | Path | None = None, *, svg: bool = True, notes: Sequence[str] = ()) -> Path:
    """Write ``report.html`` and ``figures/`` into ``out`` (default: the results folder); return
    the HTML path. ``source``: a results folder, ``(analysis, results_folder)``, or an Analysis
    alone (then ``out`` is required and the heatmaps are left out unless ``out`` holds the table).
    ``notes``: paragraphs about the run, shown above the verdicts."""
    from crystallab.reporting import figures
    from crystallab.reporting.html import render

    an, results, html = _resolve(source, out)
    require("matplotlib")
    th = Thresholds(**{k: v for k, v in an.thresholds.items() if k in Thresholds.names()})
    table = an.table if an.table is not None else _table(results if results is not None else html.parent, an.method)
    figs = figures.make(an, table, html.parent / "figures", th.v_min, svg=svg, melting=_melting(results, th, an.method))
    if table is None:
        figs.notes.append("no distribution table beside the analysis: the heatmaps are left out")
    if results is not None:
        from crystallab.semantic.folder import read_clusters

        figs.clusters = {t: c for t in an.tasks if (c := read_clusters(results, t))}
    title = (results or html.parent).resolve().name
    html.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(html, render(an, figs, th, title=title, notes=notes).encode("utf-8"))
    return html
