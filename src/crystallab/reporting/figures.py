"""Draw and save every figure of one analysis; the page embeds what this returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallab.analysis.types import Analysis, Dynamics, Sweep
from crystallab.reporting import data as D


@dataclass
class DynFigure:
    dyn: Dynamics
    k_star: str | None
    png: Path


@dataclass
class TaskFigures:
    phase: Path | None = None
    left_out: list[str] = field(default_factory=list)  # ensembles not placed in the phase diagram
    heatmaps: list[tuple[str, Path, list[D.Panel]]] = field(default_factory=list)  # (ensemble, png, panels)
    dynamics: list[DynFigure] = field(default_factory=list)


@dataclass
class Figures:
    tasks: dict[str, TaskFigures]
    sweeps: list[tuple[Sweep, Path]]
    notes: list[str]  # what could not be drawn, for the warnings list
    melting: tuple[list[Any], Path] | None = None  # melting curves (analysis/melting.py) and their figure
    widths: Path | None = None  # the sweeps' transition width against model size (two sizes or more)
    clusters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # open tasks: semantic options


def safe(name: str) -> str:
    """A file-name-safe stem.

    >>> safe("a b/c")
    'a_b_c'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "x"


def make(
    an: Analysis, table: Any, fig_dir: Path, v_min: float, svg: bool = True, melting: list[Any] | None = None
) -> Figures:
    from crystallab.reporting import plots

    out: dict[str, TaskFigures] = {}
    notes: list[str] = []
    for task in an.tasks:
        tf = out[task] = TaskFigures()
        points, edges, tf.left_out = D.phase_points(an, task)
        if points:
            tf.phase = plots.save(plots.phase_diagram(task, points, edges), fig_dir / f"phase_{safe(task)}", svg)
        for ens in ("raw", "chat"):
            panels = D.heatmap_panels(an, table, task, ens) if table is not None else []
            if panels:  # imshow is a raster in an SVG too: PNG only
                fig = plots.heatmaps(task, ens, an.options[task], panels, v_min)
                tf.heatmaps.append((ens, plots.save(fig, fig_dir / f"heatmap_{safe(task)}_{ens}", svg=False), panels))
            elif any(s.ensemble == ens for s in D.final_states(an, task)):
                notes.append(
                    f"{task}/{ens}: the distribution table has no rows for the analysed states; heatmap left out"
                )
    for i, d in enumerate(an.dynamics):
        if d.task not in out or not d.steps:
            continue
        k = d.k_star
        fams = [key[2:-1] for key in d.series if key.startswith("d[") and key.endswith("]")]
        stem = fig_dir / f"dynamics_{i:02d}_{safe(d.checkpoint)}_{safe(d.task)}"
        png = plots.save(plots.dynamics(d, k, fams), stem, svg)
        out[d.task].dynamics.append(DynFigure(d, k, png))
    sweeps = [
        (s, plots.save(plots.sweep(s), fig_dir / f"sweep_{i:02d}_{safe(s.name)}", svg)) for i, s in enumerate(an.sweeps)
    ]
    melt = (melting, plots.melting_figure(melting, fig_dir / "melting.png")) if melting else None
    sized = [s for s in an.sweeps if s.numbers.get("size") is not None and s.numbers.get("width")]
    widths = plots.save(plots.width_vs_size(sized), fig_dir / "sweep_width_vs_size", svg) if len(sized) > 1 else None
    return Figures(out, sweeps, notes, melt, widths)
