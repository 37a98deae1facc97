"""The report's figures: each function takes what :mod:`crystallab.reporting.data` gathered (or an
analysis dataclass) and returns a matplotlib Figure; :func:`save` writes PNG (and SVG).

matplotlib is imported inside the functions (Agg backend), never when crystallab is imported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crystallab.analysis.types import Dynamics, Estimate, Sweep
from crystallab.reporting.data import STATE_COLORS, Panel, PhasePoint

DPI = 110
KSTAR = "#d62728"
BASIN_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8c6d31", "#000000")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 8.5,
            "axes.titlesize": 9.5,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "svg.fonttype": "none",
        }
    )
    return plt


def save(fig: Any, stem: Path, svg: bool = True) -> Path:
    """Write ``stem.png`` (and ``stem.svg``), close the figure, return the PNG path."""
    plt = _plt()
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=DPI, bbox_inches="tight", facecolor="white")
    if svg:
        fig.savefig(stem.with_suffix(".svg"), bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return png


def _bar(e: Estimate) -> list[list[float]]:
    """Error-bar half widths (0 where an end is missing)."""
    v = e.value or 0.0
    return [[max(v - e.lo, 0.0) if e.lo is not None else 0.0], [max(e.hi - v, 0.0) if e.hi is not None else 0.0]]


def basin_color(b: int | None) -> str:
    return "0.4" if b is None else BASIN_COLORS[b % len(BASIN_COLORS)]


# ---------------------------------------------------------------------------------------------
# phase diagram


def phase_diagram(task: str, points: Sequence[PhasePoint], edges: Sequence[tuple[PhasePoint, PhasePoint]]):
    """Two panels, ``phi`` and ``spread`` against ``h``: raw hollow, chat filled, coloured by
    state, interval bars, arrows along parent → child edges."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.9))
    for ax, y in zip(axes, ("phi", "spread")):
        for a, b in edges:
            ya, yb = getattr(a, y).value, getattr(b, y).value
            if None in (ya, yb, a.h.value, b.h.value):
                continue
            ax.annotate(
                "",
                xy=(b.h.value, yb),
                xytext=(a.h.value, ya),
                zorder=2,
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "0.35",
                    "lw": 1.0,
                    "shrinkA": 5,
                    "shrinkB": 5,
                    "ls": "--" if a.ensemble == "raw" else "-",
                    "mutation_scale": 10,
                },
            )
        placed = [p for p in points if getattr(p, y).value is not None]
        for p in placed:
            e = getattr(p, y)
            c = STATE_COLORS.get(p.state, "0.5")
            ax.errorbar(
                p.h.value,
                e.value,
                xerr=_bar(p.h),
                yerr=_bar(e),
                fmt="o",
                ms=7,
                mec=c,
                mew=1.5,
                mfc=c if p.ensemble == "chat" else "white",
                ecolor=c,
                elinewidth=0.9,
                capsize=2,
                zorder=3,
            )
        top = max([abs(getattr(p, y).value) for p in placed] + [1e-9])
        for ens, group in _label_groups(placed, y, top):
            p0 = group[0]
            ax.annotate(
                ", ".join(p.checkpoint for p in group) + f" ({ens})",
                (p0.h.value, getattr(p0, y).value),
                textcoords="offset points",
                zorder=4,
                fontsize=7,
                color="0.2",
                xytext=(7, 5) if ens == "chat" else (7, -11),
            )
        ax.axhline(0, color="0.8", lw=0.8, zorder=1)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("h (mean normalised entropy per prompt)")
        ax.set_ylabel({"phi": "phi (between − within family JSD)", "spread": "spread (mean pairwise JSD)"}[y])
        ax.set_title(f"{task}: {y} against h")
    handles = [
        Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", label="raw"),
        Line2D([], [], ls="", marker="o", color="0.3", label="chat"),
    ]
    handles += [Line2D([], [], ls="", marker="s", color=c, label=s) for s, c in STATE_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _label_groups(points: Sequence[PhasePoint], y: str, top: float) -> list[tuple[str, list[PhasePoint]]]:
    """Points of one ensemble that sit on (nearly) one spot share one label."""
    groups: list[tuple[str, list[PhasePoint]]] = []

    def xy(p: PhasePoint) -> tuple[float, float]:
        return float(p.h.value or 0.0), float(getattr(p, y).value or 0.0)

    for p in points:
        for ens, g in groups:
            (x0, y0), (x1, y1) = xy(g[0]), xy(p)
            if ens == p.ensemble and abs(x0 - x1) < 0.04 and abs(y0 - y1) < 0.06 * top:
                g.append(p)
                break
        else:
            groups.append((p.ensemble, [p]))
    return groups


# ---------------------------------------------------------------------------------------------
# heatmaps with basins


def heatmaps(task: str, ensemble: str, options: Sequence[str], panels: Sequence[Panel], v_min: float):
    """One p̃ heatmap per checkpoint (and its valid-mass column): families boxed in their basin's
    colour and labelled, k* families of the root marked red, invalid prompts greyed."""
    plt = _plt()
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    K = len(options)
    n_rows = max(len(p.rows) for p in panels)
    same_rows = all([r.prompt for r in p.rows] == [r.prompt for r in panels[0].rows] for p in panels)
    ratios: list[float] = []
    for _ in panels:
        ratios += [K, 0.7, 3.2]
    fig = plt.figure(figsize=(sum(ratios) * 0.27 + 1.4, n_rows * 0.17 + 1.5))
    gs = fig.add_gridspec(1, len(ratios), width_ratios=ratios, wspace=0.05)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e3e3e3")
    norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)
    im = None
    for j, p in enumerate(panels):
        ax, axv = fig.add_subplot(gs[0, 3 * j]), fig.add_subplot(gs[0, 3 * j + 1])
        M = np.array([r.p if r.p is not None else [np.nan] * K for r in p.rows], dtype=float).reshape(len(p.rows), K)
        im = ax.imshow(np.ma.masked_invalid(M), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        v = np.array([[r.valid_mass] for r in p.rows])
        axv.imshow(v, aspect="auto", cmap="Greys", vmin=0, vmax=1.15, interpolation="nearest")
        for i, r in enumerate(p.rows):
            if r.p is None:
                ax.add_patch(Rectangle((-0.5, i - 0.5), K, 1, fill=False, hatch="////", ec="#a0a0a0", lw=0))
                axv.text(0, i, "×", ha="center", va="center", color=KSTAR, fontsize=7)
        step = max(1, K // 12)
        ax.set_xticks(range(0, K, step), [str(o)[:8] for o in options][::step], rotation=90 if K > 12 else 0)
        axv.set_xticks([0], ["v"])
        axv.set_yticks([])
        if j == 0 or not same_rows:
            ax.set_yticks(
                range(len(p.rows)),
                [r.prompt + ("*" if r.split == "heldout" else "") for r in p.rows],
                fontsize=6 if len(p.rows) > 30 else 7,
            )
        else:
            ax.set_yticks([])
        for sp in (*ax.spines.values(), *axv.spines.values()):
            sp.set_visible(False)
        reps = f", mean of {p.replicas} replicas" if p.replicas > 1 else ""
        one = ""
        if p.read_by == "prompts":
            one = f"; one family '{p.groups[0].family}', read by prompts" if len(p.groups) == 1 else "; read by prompts"
        ax.set_title(f"{p.checkpoint} · {p.ensemble} ({p.state}{reps}{one})", loc="left", fontsize=8.5)
        _boxes(ax, axv, p, K)
        ax.set_ylim(n_rows - 0.5, -0.5)
        axv.set_ylim(n_rows - 0.5, -0.5)
    cax = fig.add_axes((0.92, 0.25, 0.008, 0.5))
    fig.colorbar(im, cax=cax, label="p̃(option | prompt)")
    fig.suptitle(
        f"{task}: {ensemble} prompts × options (grey hatched: valid mass < {v_min}, left out)",
        x=0.01,
        ha="left",
        fontsize=9.5,
        fontweight="bold",
    )
    fig.subplots_adjust(left=0.07, right=0.9, top=1 - 0.55 / (n_rows * 0.17 + 1.5), bottom=0.9 / (n_rows * 0.17 + 1.5))
    return fig


def _boxes(ax: Any, axv: Any, p: Panel, K: int) -> None:
    """Family boxes and labels; read prompt by prompt, a basin label per row (prefixed with the
    family on its first row when there are several)."""
    from matplotlib.patches import Rectangle

    by_prompt = p.read_by == "prompts"
    for g in p.groups:
        col = KSTAR if g.k_star_of else "0.4" if by_prompt else basin_color(g.basin)
        ax.add_patch(
            Rectangle(
                (-0.5, g.start - 0.5),
                K,
                g.stop - g.start,
                fill=False,
                ec=col,
                lw=2.4 if g.k_star_of else 1.3,
                ls="--" if g.k_star_of else "-",
                clip_on=False,
            )
        )
        if by_prompt:
            continue
        label = g.family + (f" · B{g.basin + 1}" if g.basin is not None else "")
        if g.k_star_of:
            label += f"\n★ k* of {', '.join(g.k_star_of)}"
        axv.text(
            0.75,
            (g.start + g.stop - 1) / 2,
            label,
            ha="left",
            va="center",
            fontsize=7,
            color=col,
            fontweight="bold" if g.k_star_of else "normal",
            clip_on=False,
        )
    if not by_prompt:
        return
    firsts = {g.start: g.family for g in p.groups} if len(p.groups) > 1 else {}
    for i, r in enumerate(p.rows):
        kids = p.k_star_rows.get(r.prompt)
        if kids:
            ax.add_patch(Rectangle((-0.5, i - 0.5), K, 1, fill=False, ec=KSTAR, lw=2.2, ls="--"))
        text = (f"{firsts[i]}: " if i in firsts else "") + (f"B{r.basin + 1}" if r.basin is not None else "")
        text += f" ★ k* of {', '.join(kids)}" if kids else ""
        axv.text(
            0.75,
            i,
            text,
            ha="left",
            va="center",
            fontsize=6,
            clip_on=False,
            color=KSTAR if kids else basin_color(r.basin),
        )


# ---------------------------------------------------------------------------------------------
# dynamics


def _xs(steps: Sequence[int], ys: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([np.nan if v is None else v for v in ys], dtype=float)
    return np.asarray(steps, dtype=float), y


def _finite(ys: Sequence[float | None]) -> bool:
    return any(v is not None and math.isfinite(v) for v in ys)


def dynamics(d: Dynamics, k_star: str | None, families: Sequence[str]):
    """``d_k(t)`` per root family (k* highlighted, ``d_data`` dashed), ``q(S)(t)`` for runs that
    follow it, replica lines of the coordinate, the transition's t0 band, and ``χ(t)``."""
    plt = _plt()
    use_q = d.coordinate.startswith("q(S)") and _finite(d.series.get("q(S)", []))
    has_chi = _finite(d.chi)
    n = 1 + int(use_q) + int(has_chi)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.6), squeeze=False)
    ax_d, rest = axes[0][0], list(axes[0][1:])
    ax_q = rest.pop(0) if use_q else None
    ax_chi = rest.pop(0) if has_chi else None
    t = np.asarray(d.steps, dtype=float)
    for fam in families:
        ys = d.series.get(f"d[{fam}]")
        if ys is None:
            continue
        star = fam == k_star
        col = KSTAR if star else BASIN_COLORS[families.index(fam) % len(BASIN_COLORS)]
        ax_d.plot(
            *_xs(d.steps, ys),
            marker="o" if star else None,
            ms=3,
            lw=2.2 if star else 0.9,
            alpha=1 if star else 0.55,
            color=col,
            label=f"d[{fam}]" + (" (k*)" if star else ""),
            zorder=3 if star else 2,
        )
    if _finite(d.series.get("d_data", [])):
        ax_d.plot(*_xs(d.steps, d.series["d_data"]), ls="--", color="k", lw=1.3, label="d_data")
    ax_d.set_ylabel("JS distance of the chat aggregate")
    ax_d.set_title("nucleation coordinate d_k(t)")
    coord_ax = ax_q if ax_q is not None else ax_d
    for i, rep in enumerate(d.replica_series if len(d.replica_series) > 1 else []):
        coord_ax.plot(
            *_xs(d.steps, rep),
            color=KSTAR if not use_q else "#0072B2",
            lw=0.6,
            alpha=0.45,
            label="replicas" if i == 0 else None,
        )
    if ax_q is not None:
        ax_q.plot(*_xs(d.steps, d.series["q(S)"]), marker="o", ms=3, lw=2.0, color="#0072B2", label="q(S) (median)")
        ax_q.set_ylabel("mass on the parent's support S")
        ax_q.set_title("settling coordinate q(S)(t)")
    test = d.test
    t0, lo_hi = test.get("t0"), test.get("t0_interval") or [None, None]
    if test.get("t0_inside") and t0 is not None:
        coord_ax.axvline(t0, color="0.25", lw=0.9, ls=":", label=f"t0 ({test.get('verdict')})")
        if lo_hi[0] is not None and lo_hi[1] is not None:
            coord_ax.axvspan(lo_hi[0], lo_hi[1], color="0.5", alpha=0.15, lw=0)
    if ax_chi is not None:
        ax_chi.plot(*_xs(d.steps, d.chi), marker="o", ms=3, color="#009E73", label="χ(t) across replicas")
        if _finite(d.prompt_variance):
            ax_chi.plot(*_xs(d.steps, d.prompt_variance), ls="--", color="0.5", lw=1.0, label="prompt variance")
        if all(v is None or v > 0 for v in [*d.chi, *d.prompt_variance]):
            ax_chi.set_yscale("log")
        ax_chi.set_title("susceptibility χ(t)")
    for ax in axes[0]:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=float(t.min()) if t.size else 0.0)
        ax.set_xlabel("training step (symlog)")
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.27), ncol=3)
    fig.suptitle(f"{d.checkpoint} · {d.task}: {d.coordinate}", x=0.01, ha="left", fontsize=9.5, fontweight="bold")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# sweeps


def sweep(s: Sweep):
    """Three panels: ``m(λ)`` (replica points, their median, the fitting null ``m_lin(λ)``, λ_c);
    the histogram of ``m`` across replicas at the dip test's λ; the hysteresis pair (end states
    of training continued at λ_c from the A-trained and from the B-trained checkpoints)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, (ax, hx, yx) = plt.subplots(1, 3, figsize=(10.5, 3.3), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    grid = np.asarray(s.grid, dtype=float)
    M = np.array([[np.nan if v is None else v for v in row] for row in s.m], dtype=float).reshape(len(s.m), grid.size)
    jitter = (np.diff(grid).min() if grid.size > 1 else 1.0) * 0.08
    for i, row in enumerate(M):
        x = grid + jitter * (i - (len(M) - 1) / 2) / max(len(M), 1)
        ax.plot(x, row, "o", color="#0072B2", ms=3, alpha=0.45, label="replicas" if i == 0 else None)
    if M.size:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(grid, np.nanmedian(M, axis=0), color="#0072B2", lw=2, label="m median")
    mixture = s.numbers.get("control", "mixture") == "mixture"
    null = "m_lin(λ): fitting null" if mixture else "relaxation null (base → data)"
    ax.plot(grid, s.m_lin, color="k", ls="--", lw=1.2, label=null)
    if s.lambda_c.value is not None:
        ax.axvline(s.lambda_c.value, color="0.3", ls=":", lw=0.9, label="λ_c")
    ax.set_xlabel(s.control or "λ")
    ax.set_ylabel("m")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"sweep {s.name}: {s.verdict}", fontsize=9.5)
    ax.legend(fontsize=7)
    at = s.numbers.get("dip_at")
    bins = np.linspace(-1, 1, 21)
    if at is not None and at in s.grid and M.size:
        vals = M[:, s.grid.index(at)]
        hx.hist(vals[np.isfinite(vals)], bins=bins, color="#0072B2", alpha=0.8)
        where = f"λ = {at:g}" if mixture else f"{s.numbers['values'][s.grid.index(at)]:g}"
        hx.set_title(f"m at {where} (dip p {'n/a' if s.dip_p is None else f'{s.dip_p:.2g}'})", fontsize=9)
    else:
        hx.set_title("m at λ_c: not measured", fontsize=9)
    hx.set_xlabel("m")
    hx.set_ylabel("replicas")
    hx.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of replicas: no 1.25
    ends_A, ends_B = s.numbers.get("ends_from_A") or [], s.numbers.get("ends_from_B") or []
    for k, (ends, color) in enumerate(((ends_A, "#D55E00"), (ends_B, "#009E73"))):
        v = [x for x in ends if x is not None and math.isfinite(x)]
        yx.plot(np.full(len(v), k) + np.linspace(-0.08, 0.08, len(v)) if v else [], v, "o", color=color, ms=4)
    yx.set_xticks([0, 1], ["from A", "from B"])
    yx.set_xlim(-0.5, 1.5)
    yx.set_ylim(-1.05, 1.05)
    hp = s.hysteresis_p
    at_h = s.numbers.get("hysteresis_lambda")
    if mixture:
        yx.set_title(f"hysteresis at λ = {at_h} (p {'n/a' if hp is None else f'{hp:.2g}'})", fontsize=9)
    else:
        yx.set_title(f"no hysteresis arm ({s.numbers.get('control')} sweep)", fontsize=9)
    yx.set_ylabel("end state m")
    fig.tight_layout()
    return fig


def width_vs_size(sweeps: Sequence[Sweep]):
    """The transition width (in λ, with its replica interval) against model size: a true
    transition narrows as the system grows, a crossover keeps its width."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.1))
    pts = sorted((s.numbers["size"], s.numbers["width"]) for s in sweeps if s.numbers.get("size") is not None)
    x = [p[0] for p in pts]
    y = [np.nan if p[1][0] is None else p[1][0] for p in pts]
    lo = [np.nan if p[1][1] is None else p[1][1] for p in pts]
    hi = [np.nan if p[1][2] is None else p[1][2] for p in pts]
    yerr = np.array([np.subtract(y, lo), np.subtract(hi, y)])
    ax.errorbar(x, y, yerr=np.nan_to_num(yerr), fmt="o-", color="#0072B2", capsize=3)
    if len(sweeps) and len(sweeps[0].grid) > 1:
        ax.axhline(np.diff(sweeps[0].grid).min(), color="0.5", ls=":", lw=0.9, label="grid spacing (resolution)")
        ax.legend(fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.minorticks_off()
    ax.set_xlabel("toy hidden size")
    ax.set_ylabel("transition width (λ)")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


STATE_MARKERS = {"crystal": "s", "liquid": "o", "undefined": "x"}


def melting_figure(curves: Sequence[Any], png: Path) -> Path:
    """Melting curves: one column per task × ensemble (× truncation), rows spread, n_basins, h and
    valid mass against T (log axis), every checkpoint on the same axes with its interval band;
    markers' shapes give the state (square crystal, circle liquid, cross undefined), a dotted
    line marks each T_m."""
    plt = _plt()
    panels = list(dict.fromkeys((c.task, c.ensemble, c.truncation) for c in curves))
    rows = ("spread", "n_basins", "h", "valid_mass")
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.2 * len(panels), 2.0 * len(rows)), squeeze=False)
    checkpoints = list(dict.fromkeys(c.checkpoint for c in curves))
    for j, key in enumerate(panels):
        for c in (c for c in curves if (c.task, c.ensemble, c.truncation) == key):
            color = BASIN_COLORS[checkpoints.index(c.checkpoint) % len(BASIN_COLORS)]
            for i, name in enumerate(rows):
                ax = axes[i][j]
                est = c.params[name]
                y = [np.nan if e is None or e.value is None else e.value for e in est]
                lo = [np.nan if e is None or e.lo is None else e.lo for e in est]
                hi = [np.nan if e is None or e.hi is None else e.hi for e in est]
                ax.plot(c.temperatures, y, "-", color=color, lw=1.2, label=c.checkpoint)
                ax.fill_between(c.temperatures, lo, hi, color=color, alpha=0.15, lw=0)
                for st in set(c.states):  # the state by marker shape (colour names the checkpoint)
                    at = [k for k, x in enumerate(c.states) if x == st]
                    ax.scatter(
                        [c.temperatures[k] for k in at],
                        [y[k] for k in at],
                        s=18,
                        zorder=3,
                        color=color,
                        marker=STATE_MARKERS.get(st, "x"),
                    )
                if c.t_m is not None:
                    ax.axvline(c.t_m, color=color, ls=":", lw=1)
                ax.set_xscale("log")
                ax.set_xlim(min(c.temperatures) / 1.15, max(c.temperatures) * 1.15)  # set even when all undefined
                ax.set_xticks(c.temperatures, [f"{t:g}" for t in c.temperatures])
                ax.minorticks_off()
                ax.set_ylabel(name if j == 0 else "")
                if i == 0:
                    ax.set_title(f"{key[0]} / {key[1]}" + ("" if key[2] == "none" else f" ({key[2]})"))
                if i == len(rows) - 1:
                    ax.set_xlabel("temperature T")
    # one legend for the figure: a checkpoint absent from the first panel is still named
    from matplotlib.lines import Line2D

    states = list(dict.fromkeys(s for c in curves for s in c.states))
    handles = [Line2D([], [], color=BASIN_COLORS[k % len(BASIN_COLORS)], lw=1.5) for k in range(len(checkpoints))]
    handles += [Line2D([], [], ls="", marker=STATE_MARKERS.get(s, "x"), ms=5, color="0.3") for s in states]
    fig.legend(handles, checkpoints + [f"state: {s}" for s in states], loc="lower center", ncol=min(6, len(handles)))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, png.with_suffix(""), svg=False)
