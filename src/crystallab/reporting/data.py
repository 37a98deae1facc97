"""What the figures draw, gathered from an :class:`~crystallab.analysis.Analysis` (and, for the
heatmaps, the distribution table): plain dataclasses, no matplotlib.

>>> fmt_num(0.123456), fmt_num(5.0), fmt_num(None), fmt_num(3628799), fmt_num(True)
('0.1235', '5', 'n/a', '3628799', 'yes')
>>> fmt_est(Estimate(0.5, 0.25, 0.75))
'0.5 [0.25, 0.75]'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystallab.analysis.types import Analysis, EnsembleState, Estimate, Transition

STATE_COLORS = {"liquid": "#E69F00", "crystal": "#0072B2", "undefined": "#9a9a9a"}


# ---------------------------------------------------------------------------------------------
# numbers as the page prints them (4 significant digits; the tests parse them back)


def fmt_num(x: Any) -> str:
    """A number for the page: whole numbers as such, else 4 significant digits; ``n/a`` if missing."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "n/a"
        if x == int(x) and abs(x) < 1e9:
            return str(int(x))
        return format(x, ".4g")
    return str(x)


def fmt_est(e: Estimate | None) -> str:
    """``value [lo, hi]`` (the interval only where both ends exist)."""
    if e is None or e.value is None:
        return "n/a"
    s = fmt_num(e.value)
    if e.lo is not None and e.hi is not None:
        s += f" [{fmt_num(e.lo)}, {fmt_num(e.hi)}]"
    return s


def fmt_any(x: Any) -> str:
    """A value of ``Verdict.numbers``: ``[v, lo, hi]`` lists as intervals, groups and counts readably."""
    if isinstance(x, (list, tuple)) and len(x) == 3 and all(v is None or _is_number(v) for v in x):
        return fmt_est(Estimate(*x))
    if isinstance(x, dict):
        return ", ".join(f"{k}: {fmt_any(v)}" for k, v in x.items()) or "none"
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(v, (list, tuple)) for v in x):
            return " | ".join(", ".join(map(str, v)) for v in x)
        return "{" + ", ".join(fmt_any(v) for v in x) + "}"
    return fmt_num(x)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------------------
# the phase diagram


@dataclass(frozen=True)
class PhasePoint:
    checkpoint: str
    ensemble: str  # raw | chat
    state: str
    h: Estimate
    phi: Estimate
    spread: Estimate


def final_states(an: Analysis, task: str) -> list[EnsembleState]:
    """Each checkpoint's whole-ensemble states (split None) of one task, in checkpoint order."""
    out = []
    for c in an.checkpoints:
        for ens in ("raw", "chat"):
            s = an.state(c.label, task, ens)
            if s is not None:
                out.append(s)
    return out


def phase_points(an: Analysis, task: str) -> tuple[list[PhasePoint], list[tuple[PhasePoint, PhasePoint]], list[str]]:
    """Placed points, parent → child edges (per ensemble) and the ensembles left out (undefined)."""
    points: dict[tuple[str, str], PhasePoint] = {}
    left_out = []
    for s in final_states(an, task):
        h, phi = s.params.get("h"), s.params.get("phi")
        if s.state == "undefined" or h is None or phi is None or h.value is None or phi.value is None:
            left_out.append(f"{s.checkpoint}/{s.ensemble}")
            continue
        points[(s.checkpoint, s.ensemble)] = PhasePoint(
            s.checkpoint, s.ensemble, s.state, h, phi, s.params.get("spread", Estimate(None))
        )
    edges = [
        (points[(c.parent, e)], points[(c.label, e)])
        for c in an.checkpoints
        for e in ("raw", "chat")
        if c.parent is not None and (c.parent, e) in points and (c.label, e) in points
    ]
    return list(points.values()), edges, left_out


# ---------------------------------------------------------------------------------------------
# the prompt × option heatmaps


@dataclass(frozen=True)
class Row:
    prompt: str
    family: str
    split: str | None
    valid_mass: float
    p: list[float] | None  # p̃ over the options (mean over replicas); None: invalid or no valid mass
    basin: int | None  # the basin of its family (or, read prompt by prompt, its own)


@dataclass(frozen=True)
class Group:
    family: str
    start: int
    stop: int  # rows[start:stop]
    basin: int | None
    k_star_of: list[str] = field(default_factory=list)  # children whose k* is this root family


@dataclass(frozen=True)
class Panel:
    checkpoint: str
    ensemble: str
    state: str
    read_by: str  # as the state was read (an undefined state: families, to box the table's families)
    rows: list[Row]
    groups: list[Group]
    invalid: list[str]
    k_star_rows: dict[str, list[str]] = field(default_factory=dict)  # read by prompts: prompt -> children
    replicas: int = 1


def k_star_marks(an: Analysis, task: str) -> dict[str, list[str]]:
    """Root family (or prompt) → the children whose chat aggregate lies nearest its basin (k*)."""
    out: dict[str, list[str]] = {}
    for t in transitions_of(an, task):
        if t.k_star is not None and t.root == an.root:
            out.setdefault(t.k_star, []).append(t.child)
    return out


def transitions_of(an: Analysis, task: str) -> list[Transition]:
    return [t for t in an.transitions if t.task == task]


def heatmap_panels(an: Analysis, table: Any, task: str, ensemble: str) -> list[Panel]:
    """One panel per checkpoint holding ``ensemble`` for ``task``: rows grouped by family (in
    the state's family order), each row's p̃ from the table (mean over replicas)."""
    from crystallab.analysis import table as T

    tab = T.read(table) if table is not None else None
    index = {c.label: c.index for c in an.checkpoints}
    marks = k_star_marks(an, task)
    panels = []
    for c in an.checkpoints:
        s = an.state(c.label, task, ensemble)
        ens = tab.get(index[c.label], s.step, task, ensemble) if (tab is not None and s is not None) else None
        if s is None or ens is None:
            continue
        root = c.label == an.root and ensemble == "raw"
        panels.append(_panel(s, ens, marks if root else {}))
    return panels


def _panel(s: EnsembleState, ens: Any, marks: dict[str, list[str]]) -> Panel:
    by_prompt: dict[str, list[int]] = {}
    for i, pid in enumerate(ens.ids):
        by_prompt.setdefault(pid, []).append(i)
    invalid = set(s.invalid_prompts)
    fam_of = {pid: ens.families[rows[0]] for pid, rows in by_prompt.items()}
    basin_of = {f.name: f.basin for f in s.families}
    prompt_basin = {f.name: f.basin for f in s.families} if s.read_by == "prompts" else {}
    order = [f.name for f in s.families] if s.read_by == "families" else []
    order += [f for f in dict.fromkeys(fam_of.values()) if f not in order]
    rows: list[Row] = []
    groups: list[Group] = []
    for fam in order:
        start = len(rows)
        for pid in (p for p in by_prompt if fam_of[p] == fam):
            idx = by_prompt[pid]
            probs = ens.probs[idx].mean(axis=0)
            v = float(np.clip(1.0 - probs[-1], 0.0, 1.0))
            opts = probs[:-1]
            ok = pid not in invalid and opts.sum() > 0
            rows.append(
                Row(
                    pid,
                    fam,
                    ens.splits[idx[0]],
                    v,
                    [float(x) for x in opts / opts.sum()] if ok else None,
                    prompt_basin.get(pid) if s.read_by == "prompts" else basin_of.get(fam),
                )
            )
        if len(rows) > start:
            groups.append(
                Group(
                    fam,
                    start,
                    len(rows),
                    basin_of.get(fam) if s.read_by == "families" else None,
                    marks.get(fam, []) if s.read_by == "families" else [],
                )
            )
    read_by = s.read_by if s.state != "undefined" else "families"  # nothing was read: box the table's families
    k_rows = {pid: kids for pid, kids in marks.items() if read_by == "prompts"}
    return Panel(s.checkpoint, s.ensemble, s.state, read_by, rows, groups, sorted(invalid), k_rows, s.replicas)
