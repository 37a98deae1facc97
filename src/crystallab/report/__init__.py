"""The HTML report: ``write_report(DIR)`` reads ``DIR/analysis.json`` and
``DIR/distributions.parquet`` and writes ``DIR/report.html`` (one self-contained file, figures
embedded as PNG) and the figures under ``DIR/figures/`` (PNG; also SVG except the heatmaps,
which are rasters either way).

matplotlib loads only when a report is written, never when crystallab is imported.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["write_report", "load_analysis", "preferred_set"]

OTHER = "⊥"
SET_ORDER = ("chat", "all", "raw")


def load_analysis(d: Path) -> dict[str, Any]:
    """``DIR/analysis.json`` as a dict; a missing or unreadable file is a UserError."""
    from crystallab.errors import UserError

    f = d / "analysis.json"
    if not f.is_file():
        raise UserError(f"no analysis at {f}; run `crystallab analyze {d}` first")
    try:
        analysis = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {f} ({exc}); rerun `crystallab analyze {d}`") from exc
    if not isinstance(analysis, dict) or "states" not in analysis:
        raise UserError(f"{f} is not a crystallab analysis (no 'states'); rerun `crystallab analyze {d}`")
    return analysis


def preferred_set(sets: dict[str, Any] | None) -> str | None:
    """The prompt set a figure uses: chat when it has valid prompts, else all, else raw."""
    sets = sets or {}
    for name in SET_ORDER:
        s = sets.get(name)
        if s and (s.get("n_valid_prompts") or 0) > 0:
            return name
    for name in SET_ORDER:
        if name in sets:
            return name
    return None


def _param(state: dict[str, Any], set_name: str | None, name: str) -> Any:
    if not set_name:
        return None
    return (((state.get("sets") or {}).get(set_name) or {}).get("params") or {}).get(name)


def _num(x: Any, default: float) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "x"


def _table_index(d: Path, method: str | None) -> dict[tuple, dict[str, dict[str, Any]]]:
    """``{(task, checkpoint, step): {prompt_id: {kind, family, text, probs: {option: p}}}}`` for
    the analysed method's rows."""
    import pyarrow.compute as pc

    from crystallab.errors import UserError
    from crystallab.store import read_table

    table = read_table(d)
    cols = ["checkpoint", "step", "task", "prompt_id", "prompt_kind", "prompt_family", "option", "prob", "method"]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise UserError(f"{d / 'distributions.parquet'} lacks column(s) {', '.join(missing)}; is it a crystallab results table?")
    table = table.select(cols)
    if method:
        table = table.filter(pc.equal(table["method"], method))
    data = table.to_pydict()
    index: dict[tuple, dict[str, dict[str, Any]]] = {}
    for ck, step, task, pid, kind, fam, opt, p in zip(
        data["checkpoint"], data["step"], data["task"], data["prompt_id"], data["prompt_kind"],
        data["prompt_family"], data["option"], data["prob"],
    ):
        group = index.setdefault((task, ck, step), {})
        row = group.get(pid)
        if row is None:
            row = group[pid] = {"kind": kind, "family": fam, "probs": {}}
        row["probs"][opt] = row["probs"].get(opt, 0.0) + (p or 0.0)
    return index


def _prompt_key(pid: str, kind: str) -> tuple:
    m = re.search(r"(\d+)$", pid)
    return (0 if kind == "raw" else 1, int(m.group(1)) if m else 0, pid)


def _heatmap_data(task: str, states: list[dict], index: dict) -> tuple[list[dict], list[dict]]:
    import numpy as np

    options = list(states[0].get("options") or [])
    K = len(options)
    groups = []
    for st in states:
        key = (task, st["checkpoint"], st.get("step"))
        g = index.get(key)
        if g is None:  # fall back to the checkpoint's last measured step
            keys = [k for k in index if k[0] == task and k[1] == st["checkpoint"]]
            keys.sort(key=lambda k: (k[2] is not None, k[2] if k[2] is not None else 0))
            g = index[keys[-1]] if keys else {}
        groups.append(g)
    meta: dict[str, dict[str, Any]] = {}
    for g in groups:
        for pid, row in g.items():
            meta.setdefault(pid, {"prompt_id": pid, "kind": row["kind"], "family": row["family"]})
    rows = sorted(meta.values(), key=lambda r: _prompt_key(r["prompt_id"], r["kind"]))
    panels = []
    for st, g in zip(states, groups):
        P = np.full((len(rows), K), np.nan)
        other = np.full(len(rows), np.nan)
        for i, r in enumerate(rows):
            row = g.get(r["prompt_id"])
            if row is None:
                continue
            probs = row["probs"]
            v = np.array([probs.get(o, 0.0) for o in options], dtype=float)
            other[i] = probs.get(OTHER, max(0.0, 1.0 - float(v.sum())))
            if v.sum() > 1e-12:
                P[i] = v / v.sum()
        panels.append({"label": st["checkpoint"], "index": st.get("checkpoint_index", 0), "probs": P, "other": other})
    return rows, panels


def _seeds(task: str, states: list[dict], transitions: list[dict]) -> list[dict]:
    """The seed prompts to box in the heatmaps. The seed is always a base prompt, so it is boxed
    in the base (first) checkpoint. Nucleations first; with none, the closest base prompt of the
    first transition out of the base, marked unconfirmed."""
    base = states[0]["checkpoint"]
    mine = [t for t in transitions if t.get("task") == task and (t.get("seed") or {}).get("prompt_id")]
    nuc = [t for t in mine if t.get("kind") == "nucleation"]
    if not nuc:
        first = [t for t in mine if t.get("from") == base][:1]
        return [{"prompt_id": t["seed"]["prompt_id"], "from": base, "to": t.get("to"), "confirmed": False} for t in first]
    return [{"prompt_id": t["seed"]["prompt_id"], "from": base, "to": t.get("to"), "confirmed": bool(t["seed"].get("confirmed", True))} for t in nuc]


def make_figures(analysis: dict[str, Any], index: dict, fig_dir: Path, svg: bool = True) -> dict[str, Any]:
    """Draw and save every figure; return ``{"phase": png, "heatmap": {task: png},
    "aggregate": {task: png}, "dynamics": [png | None, ...]}``."""
    from crystallab.report import plots

    th = analysis.get("thresholds") or {}
    crystal = float(th.get("crystal_diversity", 0.1))
    liquid = float(th.get("liquid_diversity", 0.25))
    out: dict[str, Any] = {"phase": None, "heatmap": {}, "aggregate": {}, "dynamics": []}
    by_task = states_by_task(analysis)
    panels = []
    for task, states in by_task.items():
        pref = next((preferred_set(s.get("sets")) for s in states if preferred_set(s.get("sets"))), None)
        points = []
        for st in states:
            has_raw = pref != "raw" and "raw" in (st.get("sets") or {})
            points.append({
                "label": st["checkpoint"], "index": st.get("checkpoint_index", 0), "state": st.get("state"),
                "x": _param(st, pref, "entropy_norm"), "y": _param(st, pref, "diversity"),
                "x_raw": _param(st, "raw", "entropy_norm") if has_raw else None,
                "y_raw": _param(st, "raw", "diversity") if has_raw else None,
            })
        panels.append({"task": task, "set": pref or "chat", "points": points})
        rows, hpanels = _heatmap_data(task, states, index)
        seeds = _seeds(task, states, analysis.get("transitions") or [])
        if rows and states[0].get("options"):
            fig = plots.prompt_heatmaps(task, states[0]["options"], rows, hpanels, seeds)
            # imshow is a raster inside an SVG too: PNG only
            out["heatmap"][task] = plots.save(fig, fig_dir / f"heatmap_{_safe(task)}", svg=False)
            series = []
            for st in states:
                s = (st.get("sets") or {}).get(pref or "") or {}
                series.append({"label": st["checkpoint"], "index": st.get("checkpoint_index", 0),
                               "aggregate": s.get("aggregate"), "other_mass": s.get("other_mass")})
            fig = plots.aggregate_bars(task, states[0]["options"], series, pref or "chat")
            out["aggregate"][task] = plots.save(fig, fig_dir / f"aggregate_{_safe(task)}", svg)
    if panels:
        out["phase"] = plots.save(plots.phase_diagram(panels, crystal, liquid), fig_dir / "phase_diagram", svg)
    for i, entry in enumerate(analysis.get("dynamics") or []):
        if not entry.get("steps"):
            out["dynamics"].append(None)
            continue
        stem = fig_dir / f"dynamics_{i:02d}_{_safe(entry.get('checkpoint', ''))}_{_safe(entry.get('task', ''))}"
        out["dynamics"].append(plots.save(plots.dynamics(entry, crystal, liquid), stem, svg))
    return out


def states_by_task(analysis: dict[str, Any]) -> dict[str, list[dict]]:
    """States grouped per task (tasks in the analysis' order), each list in ladder order."""
    order = list(analysis.get("tasks") or [])
    out: dict[str, list[dict]] = {t: [] for t in order}
    for st in analysis.get("states") or []:
        out.setdefault(st["task"], []).append(st)
    for t in out:
        out[t].sort(key=lambda s: (s.get("checkpoint_index", 0), _num(s.get("step"), -1.0)))
    return {t: s for t, s in out.items() if s}


def write_report(dir: str | Path, *, svg: bool = True) -> Path:
    """Write ``DIR/report.html`` and ``DIR/figures/*.png|svg``; return the HTML path."""
    from crystallab.errors import UserError, require
    from crystallab.report.html import render
    from crystallab.store import atomic_write_bytes

    d = Path(dir)
    if not d.is_dir():
        raise UserError(f"no results folder at {d}; run `crystallab measure --out {d}` and `crystallab analyze {d}` first")
    analysis = load_analysis(d)
    require("matplotlib")
    index = _table_index(d, analysis.get("method"))
    figures = make_figures(analysis, index, d / "figures", svg=svg)
    page = render(analysis, figures, title=d.resolve().name)
    out = d / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
